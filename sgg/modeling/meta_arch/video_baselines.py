"""Trivial video SGG baselines, evaluated by the same ``video_scene_graph`` evaluator as the real models.

``VideoFrequencyBaseline`` looks at no pixel. From the training set it counts, for every object class ``c``, how
often a (person, object of class ``c``) pair carries each of the 26 predicates, and scores the pairs of a test frame
with those frequencies:

* attention ``(P, 3)``: ``n(c, p) / sum over the 3 attention predicates of n(c, .)`` (a distribution, like a softmax);
* spatial ``(P, 6)`` / contacting ``(P, 17)``: ``n(c, p) / n(c)``, the fraction of training pairs of class ``c`` that
  carry ``p`` (an independent probability per predicate, like a sigmoid).

Classes never seen in training fall back to the frequencies over all pairs. Boxes and labels per mode:

* **predcls**: the GT boxes and labels (scores 1), pairs = (person row 0, every object);
* **sgcls**: the GT boxes; row 0 is taken as the person (label 0, score 1; AG's person box is an input in every mode),
  every other box gets the most frequent training object class, scored by that class's share of training objects;
* **sgdet**: no boxes are given, so each frame predicts the training set's mean person box (in frame-relative
  coordinates) and the mean boxes of the ``SGDET_NUM_OBJECTS`` most frequent object classes, scored by class share.

It has no trainable parameter: ``tools/train.py -model frequency_baseline`` (or ``--eval-only`` on a checkpoint of it)
only evaluates it. The statistics are buffers, so they are saved with the model.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from sgg.config import configurable
from sgg.data.catalog import DatasetCatalog

from ..build import META_ARCH_REGISTRY

__all__ = ["VideoFrequencyBaseline", "predicate_statistics"]

logger = logging.getLogger(__name__)


def predicate_statistics(videos: Sequence[dict], num_classes: int = 36, num_predicates: int = 26,
                         spatial_range: Sequence[int] = (3, 9)) -> Dict[str, np.ndarray]:
    """Count the training statistics of :class:`VideoFrequencyBaseline` from AG video dicts.

    Returns ``pair_counts`` ``(C,)`` (person-object pairs per object class), ``predicate_counts`` ``(C, R)``,
    ``object_counts`` ``(C,)``, ``mean_boxes`` ``(C, 4)`` (xyxy divided by the frame size; the person is class 0).
    Spatial predicates (``spatial_range``) are counted on the relation's subject (the object, AG's convention), the
    others on its object.
    """
    pair_counts = np.zeros(num_classes, np.float64)
    predicate_counts = np.zeros((num_classes, num_predicates), np.float64)
    box_sums = np.zeros((num_classes, 4), np.float64)
    object_counts = np.zeros(num_classes, np.float64)
    lo, hi = spatial_range
    for video in videos:
        for frame in video["frames"]:
            labels = np.asarray(frame["labels"], np.int64)
            if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(f"Frame '{frame.get('frame_key')}': labels outside 0..{num_classes - 1}.")
            boxes = np.asarray(frame["boxes"], np.float64).reshape(-1, 4)
            size = np.array([frame["width"], frame["height"], frame["width"], frame["height"]], np.float64)
            np.add.at(box_sums, labels, boxes / size)
            np.add.at(object_counts, labels, 1.0)
            np.add.at(pair_counts, labels[1:], 1.0)
            for sub, obj, pred in np.asarray(frame["relations"], np.int64).reshape(-1, 3):
                other = sub if lo <= pred < hi else obj
                predicate_counts[labels[other], pred] += 1.0
    mean_boxes = box_sums / np.maximum(object_counts, 1.0)[:, None]
    return {"pair_counts": pair_counts, "predicate_counts": predicate_counts, "object_counts": object_counts,
            "mean_boxes": mean_boxes}


@META_ARCH_REGISTRY.register()
class VideoFrequencyBaseline(nn.Module):
    """Predicate frequencies given the object class (see the module docstring); eval-mode output as STTran's."""

    # The statistics are counted from the training set at build time, so evaluation needs no MODEL.WEIGHTS.
    requires_weights = False

    @configurable
    def __init__(self, *, mode: str, statistics: Dict[str, np.ndarray], predicate_groups: Sequence[int] = (3, 6, 17),
                 sgdet_num_objects: int = 3):
        """
        Args:
            mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"``.
            statistics: output of :func:`predicate_statistics` on the training set.
            predicate_groups: attention / spatial / contacting group sizes (AG: 3, 6, 17).
            sgdet_num_objects: SGDet only, object boxes predicted per frame.
        """
        super().__init__()
        if mode not in ("predcls", "sgcls", "sgdet"):
            raise ValueError(f"VideoFrequencyBaseline: mode must be predcls, sgcls or sgdet, got {mode!r}.")
        self.mode = mode
        self.groups = tuple(int(g) for g in predicate_groups)
        self.sgdet_num_objects = int(sgdet_num_objects)
        pairs = np.asarray(statistics["pair_counts"], np.float64)
        counts = np.asarray(statistics["predicate_counts"], np.float64)
        if counts.shape[1] != sum(self.groups) or pairs.sum() <= 0:
            raise ValueError(f"VideoFrequencyBaseline: statistics need {sum(self.groups)} predicates and at least "
                             f"one training pair; got predicate_counts {counts.shape} and {pairs.sum():.0f} pairs.")
        # Unseen classes use the frequencies over all pairs.
        unseen = pairs == 0
        counts[unseen] = counts.sum(0)
        pairs[unseen] = pairs.sum()
        freq = counts / pairs[:, None]
        a = self.groups[0]
        att = counts[:, :a] / np.maximum(counts[:, :a].sum(1, keepdims=True), 1e-12)
        objects = np.asarray(statistics["object_counts"], np.float64)
        share = objects.copy()
        share[0] = 0.0  # the person is not an object class
        share = share / max(share.sum(), 1e-12)
        self.register_buffer("attention_freq", torch.tensor(att, dtype=torch.float32))
        self.register_buffer("spatial_freq", torch.tensor(freq[:, a:a + self.groups[1]], dtype=torch.float32))
        self.register_buffer("contacting_freq", torch.tensor(freq[:, a + self.groups[1]:], dtype=torch.float32))
        self.register_buffer("object_share", torch.tensor(share, dtype=torch.float32))
        self.register_buffer("mean_boxes", torch.tensor(np.asarray(statistics["mean_boxes"]), dtype=torch.float32))

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Counts the statistics on ``MODEL.VIDEO_BASELINE.TRAIN_DATASET`` (default ``DATASETS.TRAIN[0]``)."""
        name = cfg.MODEL.VIDEO_BASELINE.TRAIN_DATASET or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else "")
        if not name:
            raise ValueError("VideoFrequencyBaseline needs a training set: set DATASETS.TRAIN or "
                             "MODEL.VIDEO_BASELINE.TRAIN_DATASET.")
        DatasetCatalog.check_configured(cfg, [name])  # the statistics must come from the dicts the trainer will see
        groups = tuple(cfg.MODEL.STTRAN.PREDICATE_GROUPS)
        stats = predicate_statistics(DatasetCatalog.get(name), cfg.MODEL.STTRAN.NUM_CLASSES, sum(groups),
                                     (groups[0], groups[0] + groups[1]))
        logger.info("VideoFrequencyBaseline: statistics of %s (%d person-object pairs).", name,
                    int(stats["pair_counts"].sum()))
        return {"mode": cfg.TEST.RELATION.MODE, "statistics": stats, "predicate_groups": groups,
                "sgdet_num_objects": cfg.MODEL.VIDEO_BASELINE.SGDET_NUM_OBJECTS}

    @property
    def needs_gt_boxes(self) -> bool:
        """True when inference scores given boxes (PredCls / SGCls), so an unannotated input cannot be predicted."""
        return self.mode != "sgdet"

    def forward(self, batched_inputs: List[dict]) -> List[dict]:
        """Per video ``{"frames": [prediction dict per frame]}`` (STTran's eval format); refuses training."""
        if self.training:
            raise RuntimeError("VideoFrequencyBaseline has nothing to train; evaluate it (tools/train.py "
                               "-model frequency_baseline, or tools/train_net.py --eval-only).")
        return [{"frames": [self._frame(f) for f in video["frames"]]} for video in batched_inputs]

    def _frame(self, frame: dict) -> dict:
        if self.mode == "sgdet":
            top = torch.argsort(self.object_share, descending=True)[: self.sgdet_num_objects]
            labels = torch.cat([torch.zeros(1, dtype=torch.long), top.cpu()])
            size = torch.tensor([frame["width"], frame["height"], frame["width"], frame["height"]],
                                dtype=torch.float32)
            boxes = self.mean_boxes.cpu()[labels] * size
            scores = torch.cat([torch.ones(1), self.object_share.cpu()[top]])
        else:
            boxes = torch.as_tensor(np.asarray(frame["boxes"], np.float32)).reshape(-1, 4)
            labels = torch.as_tensor(np.asarray(frame["labels"], np.int64)).reshape(-1)
            scores = torch.ones(len(boxes))
            if self.mode == "sgcls":
                best = int(torch.argmax(self.object_share))
                labels = torch.full_like(labels, best)
                labels[0] = 0
                scores[1:] = float(self.object_share[best])
        objects = torch.arange(1, len(boxes))
        cls = labels[objects]
        return {"boxes": boxes, "labels": labels, "scores": scores,
                "pairs": torch.stack([torch.zeros_like(objects), objects], 1),
                "attention": self.attention_freq.cpu()[cls], "spatial": self.spatial_freq.cpu()[cls],
                "contacting": self.contacting_freq.cpu()[cls]}
