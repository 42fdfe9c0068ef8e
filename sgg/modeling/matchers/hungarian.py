"""Hungarian (optimal one-to-one) matching of DETR-style predictions to ground truth (scipy's solver).

Two matchers, both in ``MATCHER_REGISTRY``:

* :class:`HungarianMatcher` — one stream of boxes (DETR object detection): cost = ``cost_class * (-p[class])
  + cost_bbox * L1 + cost_giou * (-GIoU)``.
* :class:`IterativeHungarianMatcher` — triplets (IterativeSG, Khandelwal & Sigal 2022): a relation query owns a
  subject, an object and a relation box; the cost sums the class, L1 and GIoU terms of the three streams. With
  ``match_independent`` every decoder layer is matched on its own predictions; otherwise the costs of all layers are
  summed and one assignment is shared by every layer (the upstream behaviour when ``MATCH_INDEPENDENT`` is off).

Boxes are normalised ``(cx, cy, w, h)`` in ``[0, 1]`` (fractions of the transformed image's width/height).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from sgg.config import configurable
from sgg.structures.boxes import box_cxcywh_to_xyxy, generalized_box_iou

from ..build import MATCHER_REGISTRY

__all__ = ["linear_assignment", "HungarianMatcher", "IterativeHungarianMatcher", "triplet_cost_matrices",
           "STREAMS", "Match"]

logger = logging.getLogger(__name__)

STREAMS = ("sub", "obj", "rel")  # subject, object and relation boxes / classes of one triplet query
# One layer's assignment: per image (query indices, target indices), and the targets they index (possibly replicated
# by one-to-many assignment).
Match = Tuple[List[Tuple[torch.Tensor, torch.Tensor]], List[Dict[str, torch.Tensor]]]

# Finite stand-in for forbidden pairs: scipy refuses infinite entries when no finite assignment exists.
_FORBIDDEN = 1e8


def linear_assignment(cost: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a ``(Q, T)`` cost matrix -> (rows, cols) int64 tensors of length
    ``min(Q, T)``, sorted by row. Non-finite entries (NaN, inf) are treated as forbidden-but-possible pairs."""
    if cost.dim() != 2:
        raise ValueError(f"cost must be a (Q, T) matrix, got shape {tuple(cost.shape)}.")
    if cost.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty.clone()
    c = cost.detach().to("cpu", torch.float64).numpy()
    c = np.where(np.isfinite(c), c, _FORBIDDEN)
    rows, cols = linear_sum_assignment(c)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def _class_l1_giou(logits: torch.Tensor, boxes: torch.Tensor, tgt_labels: torch.Tensor, tgt_boxes: torch.Tensor):
    """(-p[label], L1, -GIoU) cost matrices ``(Q, T)`` of one stream of one image."""
    prob = logits.float().softmax(-1)
    cost_class = -prob[:, tgt_labels]
    cost_l1 = torch.cdist(boxes.float(), tgt_boxes.float(), p=1)
    cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes.float()), box_cxcywh_to_xyxy(tgt_boxes.float()))
    return cost_class, cost_l1, cost_giou


@MATCHER_REGISTRY.register()
class HungarianMatcher(nn.Module):
    """DETR's matcher: one prediction per target, minimising class + L1 + GIoU costs.

    ``forward(pred_logits (B, Q, C+1), pred_boxes (B, Q, 4), targets)``, each target ``{labels (T,) int64,
    boxes (T, 4) normalised cxcywh}`` -> per image ``(query indices, target indices)``.
    """

    @configurable
    def __init__(self, *, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all matching costs are 0; at least one must be positive.")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        return {"cost_class": d.COST_CLASS, "cost_bbox": d.COST_BBOX, "cost_giou": d.COST_GIOU}

    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, target: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted ``(Q, T)`` cost of one image."""
        c_cls, c_l1, c_giou = _class_l1_giou(logits, boxes, target["labels"], target["boxes"])
        return self.cost_class * c_cls + self.cost_bbox * c_l1 + self.cost_giou * c_giou

    @torch.no_grad()
    def forward(self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor,
                targets: Sequence[Dict[str, torch.Tensor]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {pred_logits.shape[0]} predictions.")
        return [linear_assignment(self.cost_matrix(pred_logits[b], pred_boxes[b], t)) for b, t in enumerate(targets)]


def triplet_cost_matrices(outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]], *,
                          cost_class: float, cost_bbox: float, cost_giou: float) -> List[torch.Tensor]:
    """Per image ``(Q, T)`` triplet costs: ``cost_bbox * ΣL1 + cost_class * Σ(-p) + cost_giou * Σ(-GIoU)`` over the
    subject, object and relation streams.

    ``outputs``: ``{s}_logits (B, Q, C_s)`` and ``{s}_boxes (B, Q, 4)`` for ``s`` in ``sub, obj, rel``; ``targets[b]``:
    ``{s}_labels (T,)`` and ``{s}_boxes (T, 4)``.
    """
    b, q = outputs["rel_logits"].shape[:2]
    if len(targets) != b:
        raise ValueError(f"{len(targets)} targets for a batch of {b} predictions.")
    sizes = [len(t["rel_labels"]) for t in targets]
    # One (B*Q, T_all) matrix per stream for the whole batch (DETR's trick), split per image at the end: far fewer,
    # larger ops than a loop over images; every entry is computed exactly as for the image alone.
    total = None
    for s in STREAMS:
        c_cls, c_l1, c_giou = _class_l1_giou(outputs[f"{s}_logits"].flatten(0, 1), outputs[f"{s}_boxes"].flatten(0, 1),
                                             torch.cat([t[f"{s}_labels"] for t in targets]),
                                             torch.cat([t[f"{s}_boxes"] for t in targets]))
        stream = cost_class * c_cls + cost_bbox * c_l1 + cost_giou * c_giou
        total = stream if total is None else total + stream
    total = total.view(b, q, -1)
    return [chunk[i] for i, chunk in enumerate(total.split(sizes, dim=-1))]


@MATCHER_REGISTRY.register()
class IterativeHungarianMatcher(nn.Module):
    """IterativeSG's triplet matcher over every decoder layer.

    ``forward(layer_outputs, targets)``: ``layer_outputs`` is a list (first layer .. last layer) of dicts as in
    :func:`triplet_cost_matrices`; returns one :data:`Match` per layer.
    """

    @configurable
    def __init__(self, *, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 match_independent: bool = True):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("IterativeHungarianMatcher: all matching costs are 0; at least one must be positive.")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.match_independent = match_independent

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        return {"cost_class": d.COST_CLASS, "cost_bbox": d.COST_BBOX, "cost_giou": d.COST_GIOU,
                "match_independent": d.MATCH_INDEPENDENT}

    def costs(self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]],
              query_mask: Optional[List[torch.Tensor]] = None) -> List[torch.Tensor]:
        """Triplet cost matrices of one layer (``query_mask``: per image bool ``(Q, T)``, False = forbidden)."""
        costs = triplet_cost_matrices(outputs, targets, cost_class=self.cost_class, cost_bbox=self.cost_bbox,
                                      cost_giou=self.cost_giou)
        if query_mask is not None:
            costs = [torch.where(m, c, torch.full_like(c, float("inf"))) for c, m in zip(costs, query_mask)]
        return costs

    def prepare_targets(self, outputs: Dict[str, torch.Tensor],
                        targets: Sequence[Dict[str, torch.Tensor]]) -> Tuple[List[Dict[str, torch.Tensor]],
                                                                             Optional[List[torch.Tensor]]]:
        """Hook for subclasses: targets to match (e.g. replicated) and an optional allowed-pair mask."""
        return list(targets), None

    @staticmethod
    def _assign(costs: List[torch.Tensor], masks: Optional[List[torch.Tensor]]):
        indices = []
        for b, c in enumerate(costs):
            rows, cols = linear_assignment(c)
            if masks is not None and len(rows):  # drop forced cross-group pairs (more targets than allowed queries)
                ok = masks[b][rows, cols].cpu()
                rows, cols = rows[ok], cols[ok]
            indices.append((rows, cols))
        return indices

    @torch.no_grad()
    def forward(self, layer_outputs: Sequence[Dict[str, torch.Tensor]],
                targets: Sequence[Dict[str, torch.Tensor]]) -> List[Match]:
        if not layer_outputs:
            raise ValueError("IterativeHungarianMatcher needs the outputs of at least one decoder layer.")
        if self.match_independent:
            matches = []
            for out in layer_outputs:
                tgts, masks = self.prepare_targets(out, targets)
                matches.append((self._assign(self.costs(out, tgts, masks), masks), tgts))
            return matches
        # One assignment for all layers, from the summed costs; replication is decided on the last layer.
        tgts, masks = self.prepare_targets(layer_outputs[-1], targets)
        total = None
        for out in layer_outputs:
            c = self.costs(out, tgts, masks)
            total = c if total is None else [a + b for a, b in zip(total, c)]
        match = (self._assign(total, masks), tgts)
        return [match] * len(layer_outputs)
