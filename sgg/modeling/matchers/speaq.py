"""SpeaQ's matcher (Kim et al., CVPR 2024): groupwise query specialization + quality-aware multi-assignment.

* **Predicate groups** (:func:`predicate_groups`) are cut from the training set's predicate frequencies, sorted in
  decreasing order, exactly as the SpeaQ code does it: each of the first ``num_groups - 1`` groups takes the most
  frequent remaining predicates while their running sum stays below half of what remains; the last group takes the
  rest. On VG150 with 4 groups this gives {on, has}, {in, of}, {wearing, near, with} and the other 43.
* **Queries per group** (:func:`queries_per_group`) are proportional to the group's share of all relations:
  ``floor(share * num_queries)``, the remainder handed out one by one from the *last* group backwards (upstream's
  ``fill_list``); VG gives 145/58/44/53 of 300, times ``MULTIPLY_QUERY`` relation queries per group.
* **Group mask** (``USE_GROUP_MASK``): a relation query may only match ground truth of its own group.
* **One-to-many** (``ONE2MANY_SCHEME``): ``static`` replicates every GT relation ``k`` times; ``dynamic`` replicates
  it ``max(1, int(sum of its top-k qualities))`` times, quality = ``max(IoU_sub, IoU_obj)`` of a query's predicted
  boxes with the GT's (queries outside the GT's group count 0).

Nothing about Visual Genome is hard-coded: the frequencies come from the dataset metadata
(``predicate_frequencies``, summed over the training datasets by :func:`training_predicate_frequencies`; the model's
relation class weights are computed from the same counts, :func:`sgg.modeling.losses.relation_class_weights`).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from sgg.config import configurable
from sgg.data.build import multi_dataset_enabled
from sgg.data.catalog import MetadataCatalog
from sgg.structures.boxes import box_cxcywh_to_xyxy, pairwise_iou

from ..build import MATCHER_REGISTRY
from ..losses import check_predicate_frequencies
from .hungarian import IterativeHungarianMatcher

__all__ = ["predicate_groups", "queries_per_group", "query_group_ids", "training_predicate_frequencies",
           "one_to_many_counts", "SpeaQMatcher", "ONE2MANY_SCHEMES"]

logger = logging.getLogger(__name__)

ONE2MANY_SCHEMES = ("none", "static", "dynamic")
_QUALITIES = {
    "max": torch.maximum,
    "min": torch.minimum,
    "am": lambda a, b: 0.5 * (a + b),
    "gm": lambda a, b: (a * b).clamp(min=0).sqrt(),
}
# Per-relation target keys that one-to-many replication repeats.
_PER_RELATION_KEYS = ("sub_labels", "obj_labels", "rel_labels", "sub_boxes", "obj_boxes", "rel_boxes", "sub_index",
                      "obj_index")


def predicate_groups(frequencies: Sequence[float], num_groups: int) -> List[List[int]]:
    """Split predicates into ``num_groups`` frequency groups, most frequent first -> lists of predicate indices.

    Predicates are sorted by decreasing count (ties by index). For each of the first ``num_groups - 1`` groups,
    predicates are added while the group's running sum plus the next count stays below half of the remaining total
    (integer half, as upstream); sgg always puts at least one predicate in a group so that no group is empty.
    """
    freq = check_predicate_frequencies(frequencies)
    n = freq.size
    if not 1 <= num_groups <= n:
        raise ValueError(f"MODEL.DETR.NUM_GROUPS must be in [1, number of predicates = {n}], got {num_groups}.")
    order = np.argsort(-freq, kind="stable")
    counts = freq[order]
    groups, start = [], 0
    for g in range(num_groups - 1):
        half = counts[start:].sum() // 2
        end, total = start, 0.0
        while end < n and total + counts[end] < half:
            total += counts[end]
            end += 1
        # At least one predicate per group, and leave at least one for each later group.
        end = min(max(end, start + 1), n - (num_groups - 1 - g))
        groups.append(order[start:end].tolist())
        start = end
    groups.append(order[start:].tolist())
    return groups


def queries_per_group(frequencies: Sequence[float], groups: Sequence[Sequence[int]], num_queries: int) -> List[int]:
    """Queries of each group, proportional to the group's share of all relations, summing to ``num_queries``.

    ``floor(share_g * num_queries)`` per group, then the remainder is added one query at a time starting from the
    last group (upstream's rounding). A group that would get no query is an error (raise ``NUM_QUERIES``).
    """
    freq = check_predicate_frequencies(frequencies)
    sums = np.array([freq[list(g)].sum() for g in groups])
    counts = np.floor(sums * num_queries / sums.sum()).astype(np.int64)
    remainder = int(num_queries - counts.sum())
    base, extra = divmod(remainder, len(counts))
    counts += base
    for i in range(extra):
        counts[-(i + 1)] += 1
    if np.any(counts <= 0):
        raise ValueError(f"Predicate groups {groups} get {counts.tolist()} of {num_queries} queries; every group needs "
                         f"at least one: raise MODEL.DETR.NUM_QUERIES or lower MODEL.DETR.NUM_GROUPS.")
    return counts.tolist()


def query_group_ids(counts: Sequence[int], multiply: int) -> torch.Tensor:
    """Group id of each relation query: group g owns ``counts[g] * multiply`` consecutive queries."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts) * multiply)


def training_predicate_frequencies(cfg) -> np.ndarray:
    """Predicate counts summed over every training dataset (``DATASETS.TRAIN``, plus the real and synthetic lists of
    ``DATASETS.MULTI_DATASET`` when it is enabled), read from each dataset's ``predicate_frequencies`` metadata."""
    names = list(cfg.DATASETS.TRAIN)
    if multi_dataset_enabled(cfg):
        names += list(cfg.DATASETS.MULTI_DATASET.REAL_DATASETS) + list(cfg.DATASETS.MULTI_DATASET.SYNTHETIC_DATASETS)
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("No training dataset is configured, so predicate frequencies are unknown; set DATASETS.TRAIN.")
    total, vocab = None, None
    for name in names:
        meta = MetadataCatalog.get(name)
        freq = getattr(meta, "predicate_frequencies", None)
        if freq is None:
            raise ValueError(f"Dataset '{name}' has no 'predicate_frequencies' metadata; SpeaQ's groups and relation "
                             f"weights are computed from it.")
        freq = np.asarray(freq, dtype=np.float64)
        classes = tuple(getattr(meta, "predicate_classes", ()))
        if vocab is not None and classes and classes != vocab:
            raise ValueError(f"Dataset '{name}' has predicate classes that differ from {names[0]}'s; training "
                             f"datasets must share one predicate vocabulary.")
        vocab = vocab or classes
        total = freq if total is None else total + freq
    return total


def one_to_many_counts(quality: torch.Tensor, topk: int) -> torch.Tensor:
    """Dynamic replication count of each target: ``max(1, int(sum of its top-k qualities over queries))``.

    ``quality``: ``(Q, T)`` in [0, 1] -> ``(T,)`` int64.
    """
    if quality.shape[1] == 0:
        return torch.zeros(0, dtype=torch.int64)
    k = min(topk, quality.shape[0])
    top = quality.topk(k, dim=0).values.sum(0)
    return top.to(torch.int64).clamp(min=1).cpu()


@MATCHER_REGISTRY.register()
class SpeaQMatcher(IterativeHungarianMatcher):
    """:class:`IterativeHungarianMatcher` plus SpeaQ's group mask and one-to-many assignment.

    ``predicate_group``: ``(P,)`` group of each predicate; ``query_group``: ``(Q_rel,)`` group of each relation query.
    """

    @configurable
    def __init__(self, *, predicate_group: torch.Tensor, query_group: torch.Tensor, use_group_mask: bool = True,
                 one2many_scheme: str = "dynamic", one2many_k: int = 4, quality: str = "max", **kwargs):
        super().__init__(**kwargs)
        if one2many_scheme not in ONE2MANY_SCHEMES:
            raise ValueError(f"MODEL.DETR.ONE2MANY_SCHEME must be one of {ONE2MANY_SCHEMES}, got '{one2many_scheme}'.")
        if quality not in _QUALITIES:
            raise ValueError(f"MODEL.DETR.ONE2MANY_QUALITY must be one of {sorted(_QUALITIES)}, got '{quality}'.")
        if one2many_k < 1:
            raise ValueError(f"MODEL.DETR.ONE2MANY_K must be >= 1, got {one2many_k}.")
        self.register_buffer("predicate_group", torch.as_tensor(predicate_group, dtype=torch.int64), persistent=False)
        self.register_buffer("query_group", torch.as_tensor(query_group, dtype=torch.int64), persistent=False)
        self.use_group_mask = use_group_mask
        self.one2many_scheme = one2many_scheme
        self.one2many_k = one2many_k
        self.quality = quality

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        freq = training_predicate_frequencies(cfg)
        groups = predicate_groups(freq, d.NUM_GROUPS)
        counts = queries_per_group(freq, groups, d.NUM_QUERIES)
        predicate_group = torch.empty(len(freq), dtype=torch.int64)
        for g, members in enumerate(groups):
            predicate_group[members] = g
        return {"cost_class": d.COST_CLASS, "cost_bbox": d.COST_BBOX, "cost_giou": d.COST_GIOU,
                "match_independent": d.MATCH_INDEPENDENT, "predicate_group": predicate_group,
                "query_group": query_group_ids(counts, d.MULTIPLY_QUERY), "use_group_mask": d.USE_GROUP_MASK,
                "one2many_scheme": d.ONE2MANY_SCHEME, "one2many_k": d.ONE2MANY_K, "quality": d.ONE2MANY_QUALITY}

    def group_masks(self, targets: Sequence[Dict[str, torch.Tensor]]) -> List[torch.Tensor]:
        """Per image bool ``(Q_rel, T)``: query i may match target j iff they belong to the same predicate group."""
        qg = self.query_group
        return [qg[:, None] == self.predicate_group[t["rel_labels"]].to(qg.device)[None, :] for t in targets]

    def replication_counts(self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]],
                           masks: Optional[List[torch.Tensor]]) -> List[torch.Tensor]:
        """How many copies of each target relation to match (one ``(T,)`` tensor per image)."""
        if self.one2many_scheme == "none":
            return [torch.ones(len(t["rel_labels"]), dtype=torch.int64) for t in targets]
        if self.one2many_scheme == "static":
            return [torch.full((len(t["rel_labels"]),), self.one2many_k, dtype=torch.int64) for t in targets]
        combine = _QUALITIES[self.quality]
        # One IoU matrix for the whole batch (every query x every image's targets), sliced per image: the same
        # values as per-image calls, in 2 calls instead of 2 per image.
        num_images, num_queries = outputs["sub_boxes"].shape[:2]
        ious = {}
        for s in ("sub", "obj"):
            pred = box_cxcywh_to_xyxy(outputs[f"{s}_boxes"].flatten(0, 1).float())
            gt = box_cxcywh_to_xyxy(torch.cat([t[f"{s}_boxes"].float().to(pred.device) for t in targets]))
            ious[s] = pairwise_iou(pred, gt).view(num_images, num_queries, len(gt))
        counts, start = [], 0
        for b, t in enumerate(targets):
            end = start + len(t["rel_labels"])
            q = combine(ious["sub"][b, :, start:end], ious["obj"][b, :, start:end])
            if masks is not None:
                q = q * masks[b].to(q.dtype)
            counts.append(one_to_many_counts(q, self.one2many_k))
            start = end
        return counts

    def prepare_targets(self, outputs, targets):
        if len(self.query_group) != outputs["rel_logits"].shape[1]:
            raise ValueError(f"SpeaQMatcher expects {len(self.query_group)} relation queries (NUM_QUERIES x "
                             f"MULTIPLY_QUERY), the model produced {outputs['rel_logits'].shape[1]}.")
        masks = self.group_masks(targets) if self.use_group_mask else None
        counts = self.replication_counts(outputs, targets, masks)
        replicated = []
        for t, k in zip(targets, counts):
            r = dict(t)
            for key in _PER_RELATION_KEYS:
                if key in t:
                    r[key] = t[key].repeat_interleave(k.to(t[key].device), dim=0)
            r["replication"] = k
            replicated.append(r)
        if masks is not None:
            masks = [m.repeat_interleave(k.to(m.device), dim=1) for m, k in zip(masks, counts)]
        return replicated, masks
