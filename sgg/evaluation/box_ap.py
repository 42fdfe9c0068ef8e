"""COCO-style box AP of in-memory detections with pycocotools, in Scene-Graph-Benchmark's ``vg_eval.py`` convention.

That code builds a fake COCO ground truth from the dataset's boxes with the +1-pixel convention (a box x1..x2 has
width ``x2 - x1 + 1``; the annotation area is ``(w + 1) * (h + 1)``) and converts detections the same way, then runs
``COCOeval`` for ``bbox`` (its reported "mAp" is ``AP50``). Values are fractions in [0, 1]; pycocotools' ``-1``
(no GT in that size range) is reported as NaN.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

__all__ = ["evaluate_box_ap", "COCO_STAT_NAMES"]

logger = logging.getLogger(__name__)

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _array(d: Mapping, key: str, where: str) -> np.ndarray:
    if key not in d:
        raise KeyError(f"{where}: missing key '{key}'. Keys present: {sorted(d)}.")
    value = d[key]
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def _xyxy_to_xywh(boxes: np.ndarray, plus_one: bool) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    off = 1.0 if plus_one else 0.0
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0] + off, boxes[:, 3] - boxes[:, 1] + off], 1)


def _coco_groundtruth(groundtruths: Sequence[Mapping], plus_one: bool, class_names: Optional[Sequence[str]]):
    annotations, max_label = [], -1
    for image_index, gt in enumerate(groundtruths):
        where = f"ground truth of image {image_index}"
        xywh = _xyxy_to_xywh(_array(gt, "boxes", where), plus_one)
        labels = _array(gt, "labels", where).astype(np.int64).reshape(-1)
        if labels.shape[0] != xywh.shape[0]:
            raise ValueError(f"{where}: {xywh.shape[0]} boxes but {labels.shape[0]} labels.")
        for box, label in zip(xywh.tolist(), labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_index, "bbox": box,
                                "area": box[2] * box[3], "category_id": label + 1, "iscrowd": 0})
            max_label = max(max_label, label)
    num_classes = len(class_names) if class_names else max_label + 1
    # category ids are label + 1: pycocotools treats id 0 like any other, but 1-based ids match the reference's files
    categories = [{"id": c + 1, "name": class_names[c] if class_names else str(c)} for c in range(num_classes)]
    return {"info": {"description": "sgg box AP"}, "images": [{"id": i} for i in range(len(groundtruths))],
            "categories": categories, "annotations": annotations}


def _coco_detections(predictions: Sequence[Mapping], plus_one: bool) -> list:
    detections = []
    for image_index, pred in enumerate(predictions):
        where = f"prediction of image {image_index}"
        xywh = _xyxy_to_xywh(_array(pred, "boxes", where), plus_one)
        labels = _array(pred, "labels", where).astype(np.int64).reshape(-1)
        scores = _array(pred, "scores", where).astype(np.float64).reshape(-1)
        if not (labels.shape[0] == scores.shape[0] == xywh.shape[0]):
            raise ValueError(f"{where}: boxes/labels/scores lengths differ: {xywh.shape[0]}/{labels.shape[0]}/"
                             f"{scores.shape[0]}.")
        for box, label, score in zip(xywh.tolist(), labels.tolist(), scores.tolist()):
            detections.append({"image_id": image_index, "bbox": box, "score": score, "category_id": label + 1})
    return detections


def evaluate_box_ap(groundtruths: Sequence[Mapping], predictions: Sequence[Mapping], *,
                    class_names: Optional[Sequence[str]] = None, plus_one: bool = True) -> Dict[str, float]:
    """Box AP of detections against GT boxes, per COCO's protocol (IoU 0.50:0.95, 100 detections per image).

    Args:
        groundtruths: per image ``{boxes (N,4) xyxy, labels (N,)}`` (0-based labels; numpy or tensors).
        predictions: per image ``{boxes (M,4) xyxy, labels (M,), scores (M,)}``, parallel to ``groundtruths``.
        class_names: names of all classes (fixes the category list; default: 0..max GT label).
        plus_one: the +1-pixel width convention of the reference (``False``: continuous coordinates).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` as fractions; all 0 when there are no detections.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(groundtruths) != len(predictions):
        raise ValueError(f"Got {len(groundtruths)} ground truths but {len(predictions)} predictions; they must be "
                         "parallel lists.")
    gt_dataset = _coco_groundtruth(groundtruths, plus_one, class_names)
    detections = _coco_detections(predictions, plus_one)
    if not gt_dataset["annotations"]:
        logger.warning("Box AP: no GT boxes at all; every AP is NaN.")
        return OrderedDict((k, math.nan) for k in COCO_STAT_NAMES)
    if not detections:
        logger.warning("Box AP: no detections; every AP is 0.")
        return OrderedDict((k, 0.0) for k in COCO_STAT_NAMES)
    chatter = io.StringIO()  # pycocotools prints progress and the summary to stdout
    with contextlib.redirect_stdout(chatter):
        coco_gt = COCO()
        coco_gt.dataset = gt_dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.params.imgIds = list(range(len(groundtruths)))
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.debug("pycocotools output:\n%s", chatter.getvalue())
    return OrderedDict((name, float(v) if v >= 0 else math.nan)
                       for name, v in zip(COCO_STAT_NAMES, coco_eval.stats[:6]))
