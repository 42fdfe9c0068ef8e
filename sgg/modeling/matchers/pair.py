"""Hungarian matching of (subject, object, predicates) pair queries to ground-truth pairs: the one-stage video SGG
matcher of OED (Wang et al., CVPR 2024; CDN-style).

Every query predicts one pair: object class logits (``C + 1``, last = no object), a subject and an object box
(normalised ``cxcywh``) and predicate logits per group (attention: softmax over ``A + 1`` with a background column;
spatial / contacting: sigmoid). The cost of query ``q`` for target pair ``t`` is::

    cost_obj_class * (-p_obj[q, label_t])
  + cost_relation  * (group_cost(attention) + group_cost(spatial) + group_cost(contacting))
  + cost_bbox      * max(L1(sub_q, sub_t), L1(obj_q, obj_t))
  + cost_giou      * max(-GIoU(sub_q, sub_t), -GIoU(obj_q, obj_t))

with :func:`group_cost` ``= -1/2 [ (p . y) / (sum y + eps) + ((1 - p) . (1 - y)) / (sum (1 - y) + eps) ]``
(``eps = 1e-4``; the attention probabilities are the softmax over all ``A + 1`` columns, truncated to the ``A`` real
ones, as upstream).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from sgg.config import configurable
from sgg.structures.boxes import box_cxcywh_to_xyxy, generalized_box_iou

from ..build import MATCHER_REGISTRY
from .hungarian import linear_assignment

__all__ = ["group_cost", "pair_cost_matrix", "PairHungarianMatcher", "GROUP_COST_EPS"]

logger = logging.getLogger(__name__)

GROUP_COST_EPS = 1e-4  # upstream's guard against a target row without positives / negatives


def group_cost(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label cost ``(Q, T)`` of probabilities ``probs (Q, G)`` against multi-hot ``targets (T, G)``: minus
    the mean of the recall of the positives and the recall of the negatives (soft, see the module docstring)."""
    y = targets.to(probs.dtype).t()  # (G, T)
    pos = probs @ y / (y.sum(0, keepdim=True) + GROUP_COST_EPS)
    neg = (1 - probs) @ (1 - y) / ((1 - y).sum(0, keepdim=True) + GROUP_COST_EPS)
    return -(pos + neg) / 2


def pair_cost_matrix(outputs: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor], *, cost_obj_class: float,
                     cost_relation: float, cost_bbox: float, cost_giou: float) -> torch.Tensor:
    """The ``(Q, T)`` matching cost of one frame (module docstring).

    ``outputs``: ``obj_logits (Q, C + 1)``, ``sub_boxes`` / ``obj_boxes (Q, 4)``, ``attention (Q, A + 1)``,
    ``spatial (Q, S)``, ``contacting (Q, K)`` logits. ``target``: ``labels (T,)``, ``sub_boxes`` / ``obj_boxes
    (T, 4)``, ``attention (T, A)``, ``spatial (T, S)``, ``contacting (T, K)`` multi-hot.
    """
    obj_prob = outputs["obj_logits"].float().softmax(-1)
    att_prob = outputs["attention"].float().softmax(-1)[:, : target["attention"].shape[1]]
    cost = cost_obj_class * -obj_prob[:, target["labels"]]
    rel = (group_cost(att_prob, target["attention"])
           + group_cost(outputs["spatial"].float().sigmoid(), target["spatial"])
           + group_cost(outputs["contacting"].float().sigmoid(), target["contacting"]))
    l1 = torch.maximum(torch.cdist(outputs["sub_boxes"].float(), target["sub_boxes"].float(), p=1),
                       torch.cdist(outputs["obj_boxes"].float(), target["obj_boxes"].float(), p=1))
    giou = torch.maximum(
        -generalized_box_iou(box_cxcywh_to_xyxy(outputs["sub_boxes"].float()),
                             box_cxcywh_to_xyxy(target["sub_boxes"].float())),
        -generalized_box_iou(box_cxcywh_to_xyxy(outputs["obj_boxes"].float()),
                             box_cxcywh_to_xyxy(target["obj_boxes"].float())))
    return cost + cost_relation * rel + cost_bbox * l1 + cost_giou * giou


@MATCHER_REGISTRY.register()
class PairHungarianMatcher(nn.Module):
    """OED's matcher: one query per GT pair minimising :func:`pair_cost_matrix` (scipy's Hungarian solver).

    ``forward(outputs, targets)``: ``outputs`` = the :func:`pair_cost_matrix` keys with a leading frame dimension
    ``(B, Q, ...)``, ``targets`` = one dict per frame -> per frame ``(query indices, target indices)`` int64.
    """

    @configurable
    def __init__(self, *, cost_obj_class: float = 1.0, cost_relation: float = 1.0, cost_bbox: float = 2.5,
                 cost_giou: float = 1.0):
        super().__init__()
        if min(cost_obj_class, cost_relation, cost_bbox, cost_giou) < 0:
            raise ValueError("MODEL.OED matching costs must be >= 0.")
        self.costs = {"cost_obj_class": cost_obj_class, "cost_relation": cost_relation, "cost_bbox": cost_bbox,
                      "cost_giou": cost_giou}

    @classmethod
    def from_config(cls, cfg):
        o = cfg.MODEL.OED
        return {"cost_obj_class": o.COST_OBJ_CLASS, "cost_relation": o.COST_RELATION, "cost_bbox": o.COST_BBOX,
                "cost_giou": o.COST_GIOU}

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor],
                targets: Sequence[Dict[str, torch.Tensor]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per frame ``(query indices, target indices)`` sorted by query."""
        # One cost matrix over all frames' queries and targets (fewer, larger ops), then one block per frame.
        sizes = [len(t["labels"]) for t in targets]
        q = outputs["obj_logits"].shape[1]
        empty = torch.zeros(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty.clone()) for _ in targets]
        flat = {k: v.flatten(0, 1) for k, v in outputs.items()}
        joined = {k: torch.cat([t[k] for t in targets]) for k in targets[0]}
        cost = pair_cost_matrix(flat, joined, **self.costs).view(len(targets), q, -1).cpu()
        out = []
        for b, block in enumerate(cost.split(sizes, -1)):
            out.append(linear_assignment(block[b]) if sizes[b] else (empty, empty.clone()))
        return out
