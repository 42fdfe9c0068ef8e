"""A trivial reference for scene-graph evaluation: the most frequent predicates of each (subject class, object class).

``FrequencyBaseline`` learns nothing from pixels. It is handed the ground-truth boxes and labels of the test image
(an *oracle* detector, so it is stronger than a trivial SGDet model) and scores every ordered pair of GT objects with
the training set's predicate distribution for that pair of classes (``counts + 1e-3`` smoothing; pairs never seen in
training get the global predicate distribution). Box scores are 1. Evaluated by the same ``scene_graph`` evaluator as
the real models, it tells how much of a model's recall comes from class co-occurrence statistics alone.

With ``MODEL.DETR.DETECTOR_WEIGHTS`` (a checkpoint of sgg's :class:`~.detr.DETR`) it is instead the classic SGDet
"FREQ" baseline (Zellers et al., CVPR 2018): the detector's boxes, labels and scores after class-wise NMS
(``MODEL.DETR.NMS_THRESH``) replace the GT, and every ordered pair of detections gets the prior of its class pair.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
from torch import nn
from torchvision.ops import batched_nms

from sgg.checkpoint.checkpointer import CheckpointError, load_checkpoint_file
from sgg.config import ConfigError, configurable
from sgg.data.build import get_dataset_dicts

from ..build import META_ARCH_REGISTRY

__all__ = ["FrequencyBaseline", "predicate_frequency_table"]

logger = logging.getLogger(__name__)


def predicate_frequency_table(dataset_dicts: Sequence[dict], num_classes: int, num_predicates: int) -> torch.Tensor:
    """``(C, C, P)`` counts of predicate p between a subject of class s and an object of class o, from dataset dicts
    with ``labels (N,)`` and ``relations (R, 3)`` (0-based)."""
    table = torch.zeros(num_classes, num_classes, num_predicates, dtype=torch.float64)
    for d in dataset_dicts:
        labels = torch.as_tensor(d["labels"], dtype=torch.int64).reshape(-1)
        rels = torch.as_tensor(d["relations"], dtype=torch.int64).reshape(-1, 3)
        if len(rels):
            table.index_put_((labels[rels[:, 0]], labels[rels[:, 1]], rels[:, 2]),
                             torch.ones(len(rels), dtype=torch.float64), accumulate=True)
    return table


@META_ARCH_REGISTRY.register()
class FrequencyBaseline(nn.Module):
    """Oracle-box frequency prior. ``forward(batched_inputs)`` -> prediction dicts in original pixels (eval mode) or
    a constant zero loss (training mode: there is nothing to train)."""

    # Everything is counted from DATASETS.TRAIN (and the detector comes from DETECTOR_WEIGHTS) at build time, so
    # --eval-only needs no MODEL.WEIGHTS.
    requires_weights = False

    @configurable
    def __init__(self, *, table: torch.Tensor, smoothing: float = 1e-3, detector: Optional[nn.Module] = None,
                 nms_thresh: float = 0.5):
        super().__init__()
        self.detector, self.nms_thresh = detector, nms_thresh
        if table.dim() != 3 or table.shape[0] != table.shape[1]:
            raise ValueError(f"table must be (C, C, P), got {tuple(table.shape)}.")
        prior = table.sum((0, 1))
        prob = table + smoothing
        unseen = table.sum(-1) == 0
        prob[unseen] = prior + smoothing
        self.register_buffer("pair_predicate_prob", (prob / prob.sum(-1, keepdim=True)).float())
        self._dummy = nn.Parameter(torch.zeros(()))  # so that the engine's optimizer has a parameter

    @classmethod
    def from_config(cls, cfg):
        if not cfg.DATASETS.TRAIN:
            raise ValueError("FrequencyBaseline counts predicates on DATASETS.TRAIN, which is empty.")
        has_detector = bool(cfg.MODEL.DETR.DETECTOR_WEIGHTS)
        mode = cfg.TEST.RELATION.MODE
        # The evaluator scores in TEST.RELATION.MODE: GT boxes and labels evaluated as "sgdet" would be reported as
        # detection results (box AP 1.0), a detector's boxes as "predcls" would be matched as if they were the GT.
        if mode == "sgdet" and not has_detector:
            raise ConfigError("FrequencyBaseline without MODEL.DETR.DETECTOR_WEIGHTS scores the ground-truth boxes and "
                              "labels, i.e. PredCls, but TEST.RELATION.MODE is sgdet. Set TEST.RELATION.MODE predcls "
                              "(the oracle-box reference), or give MODEL.DETR.DETECTOR_WEIGHTS (the SGDet FREQ).")
        if mode != "sgdet" and has_detector:
            raise ConfigError(f"FrequencyBaseline with MODEL.DETR.DETECTOR_WEIGHTS scores the detector's boxes, i.e. "
                              f"SGDet, but TEST.RELATION.MODE is {mode}. Set TEST.RELATION.MODE sgdet, or drop the "
                              "detector weights for the oracle-box (PredCls) reference.")
        logger.info("FrequencyBaseline: %s", "SGDet FREQ on the detector's boxes" if has_detector else
                    "PredCls oracle: ground-truth boxes and labels, class-pair predicate prior")
        dicts = get_dataset_dicts(cfg.DATASETS.TRAIN)
        return {"table": predicate_frequency_table(dicts, cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                                                   cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES),
                "detector": load_detector(cfg) if cfg.MODEL.DETR.DETECTOR_WEIGHTS else None,
                "nms_thresh": cfg.MODEL.DETR.NMS_THRESH}

    @property
    def needs_gt_boxes(self) -> bool:
        """True without a detector: the pairs scored are those of the ground-truth boxes."""
        return self.detector is None

    def forward(self, batched_inputs):
        if self.training:
            # Nothing to learn (the table is counted at construction); a constant zero loss lets the engine "train"
            # it for one iteration, which writes the checkpoint that --eval-only loads.
            return {"loss_none": self._dummy * 0.0}
        results = []
        detections = self.detect(batched_inputs) if self.detector is not None else None
        for i, x in enumerate(batched_inputs):
            if detections is None:
                h, w = x["image"].shape[-2:]
                scale = torch.tensor([x["width"] / w, x["height"] / h] * 2, dtype=torch.float32)
                boxes = torch.as_tensor(x["gt_boxes"], dtype=torch.float32).reshape(-1, 4) * scale
                labels = torch.as_tensor(x["gt_classes"], dtype=torch.int64).reshape(-1)
                scores = torch.ones(len(labels))
            else:
                boxes, labels, scores = detections[i]
            n = len(labels)
            sub, obj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            keep = sub != obj
            pairs = torch.stack([sub[keep], obj[keep]], dim=1)
            prob = self.pair_predicate_prob.cpu()[labels[pairs[:, 0]], labels[pairs[:, 1]]]
            results.append({"boxes": boxes, "labels": labels, "scores": scores, "rel_pairs": pairs,
                            "rel_scores": prob.reshape(-1, self.pair_predicate_prob.shape[-1])})
        return results

    @torch.no_grad()
    def detect(self, batched_inputs):
        """Per image ``(boxes (N, 4) original pixels, labels (N,), scores (N,))`` of the detector after class-wise
        NMS, on the CPU."""
        self.detector.eval()
        out = []
        for pred in self.detector(batched_inputs):
            boxes, labels, scores = pred["boxes"].float().cpu(), pred["labels"].cpu(), pred["scores"].float().cpu()
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)
            out.append((boxes[keep], labels[keep], scores[keep]))
        return out


def load_detector(cfg) -> nn.Module:
    """sgg's DETR built from ``cfg``'s model keys, with ``MODEL.DETR.DETECTOR_WEIGHTS`` loaded (its optional auxiliary
    encoder head may be absent on either side); frozen."""
    det_cfg = cfg.clone()
    det_cfg.defrost()
    det_cfg.MODEL.META_ARCHITECTURE = "DETR"
    path = det_cfg.MODEL.DETR.DETECTOR_WEIGHTS
    detector = META_ARCH_REGISTRY.get("DETR")(det_cfg)
    state = load_checkpoint_file(path, "MODEL.DETR.DETECTOR_WEIGHTS")["model"]
    try:
        missing, unexpected = detector.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"MODEL.DETR.DETECTOR_WEIGHTS='{path}' does not fit a DETR built from this config "
                              f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}); use the "
                              f"detector's own model keys.") from e
    bad = [k for k in missing + unexpected if not k.startswith("encoder_class.")]
    if bad:
        raise CheckpointError(f"MODEL.DETR.DETECTOR_WEIGHTS='{path}' does not fit a DETR built from this config "
                              f"(mismatched keys: {bad[:5]}); use the detector's own model keys.")
    logger.info("FrequencyBaseline: boxes from the DETR detector %s.", path)
    return detector.requires_grad_(False)
