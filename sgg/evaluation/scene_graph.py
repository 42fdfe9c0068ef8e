"""Image scene-graph evaluation with the numbers of Scene-Graph-Benchmark's ``sgg_eval.py`` (DESIGN.md §5).

Metrics (all fractions in [0, 1], exactly as Scene-Graph-Benchmark logs them):

* ``R@K``   graph-constrained recall: each candidate pair keeps its best predicate (argmax over the predicates, no
  background column), triplets are ranked by ``p(pred) * s_sub * s_obj``; per image, the fraction of GT relations hit by
  the top K; averaged over images.
* ``ngR@K`` no graph constraint: every (pair, predicate) combination is a triplet scored ``s_sub * s_obj * p(pred)``.
* ``mR@K`` / ``ngmR@K`` mean recall: per image, recall of every predicate present in its GT; per predicate, the mean
  over the images containing it; then the mean over **all** ``num_predicates`` (a predicate absent from the GT
  counts 0).
* ``zR@K`` / ``ngzR@K`` zero-shot recall: only GT relations whose (subject label, object label, predicate) is in the
  zero-shot list count; images without such a relation are skipped.
* ``A@K``   pair accuracy (PredCls / SGCls only): the top K of the predictions whose pair is a GT pair; the total hits
  over the total GT relations (``mean(hits) / mean(counts)`` as in the reference).

A predicted triplet hits a GT relation when subject label, object label and predicate are equal and both boxes have
IoU >= ``iou_threshold`` in the +1-pixel convention (``sgg.structures.boxes``, ``plus_one=True``, float32). Images
without GT relations or without candidate pairs are skipped by every metric. Ties in scores are broken
deterministically (graph-constrained: lower pair index; no graph constraint: the pair's graph-constrained rank, then
the lower predicate); the reference's unstable sorts leave them unspecified.

The evaluation runs in two stages so memory stays bounded: :func:`rank_scene_graph_prediction` turns one image's
``(P, num_predicates)`` scores into three short ranked triplet lists (the *ranked record*; this is also what
``predictions.pth`` stores), and :class:`SceneGraphRecallAccumulator` matches ranked records against the GT in
batches of images, keeping only the rank of the first hit of every GT relation. Every metric for every K is computed
from those ranks.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from sgg.config import configurable
from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.structures.boxes import paired_iou
from sgg.utils import comm

from .build import EVALUATOR_REGISTRY
from .evaluator import DatasetEvaluator

__all__ = [
    "MODES", "RANKED_FORMAT", "evaluate_scene_graphs", "rank_scene_graph_prediction", "SceneGraphRecallAccumulator",
    "SceneGraphEvaluator", "load_zeroshot_triplets", "compute_zeroshot_triplets", "save_predictions_file",
    "load_predictions_file",
]

logger = logging.getLogger(__name__)

MODES = ("predcls", "sgcls", "sgdet")
RANKED_FORMAT = "sgg.scene_graph.ranked/v1"
_NOT_HIT = np.iinfo(np.int64).max  # rank of a GT relation that no listed triplet hits
_RANKED_KEYS = ("rel_pairs", "rel_labels", "triplet_scores", "ng_rel_pairs", "ng_rel_labels", "ng_triplet_scores")


# ---------------------------------------------------------------------------- input checking
def _to_numpy(value, key: str, where: str) -> np.ndarray:
    """Tensor / array / list -> numpy without copying CPU data; half precision is widened to float32."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.float()
        return value.cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as e:  # ragged lists etc.
        raise ValueError(f"{where}: '{key}' cannot be converted to an array ({e}).") from e


def _field(d: Mapping, key: str, where: str, hint: str) -> np.ndarray:
    if key not in d:
        raise KeyError(f"{where}: missing key '{key}' ({hint}). Keys present: {sorted(d)}.")
    return _to_numpy(d[key], key, where)


def _check_shape(arr: np.ndarray, key: str, where: str, shape: Tuple, expected: str) -> None:
    ok = arr.ndim == len(shape) and all(s is None or a == s for a, s in zip(arr.shape, shape))
    if not ok:
        raise ValueError(f"{where}: '{key}' must have shape {expected}; got {tuple(arr.shape)}.")


def _check_indices(idx: np.ndarray, key: str, where: str, upper: int, what: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= upper):
        raise ValueError(f"{where}: '{key}' holds {what} in [{idx.min()}, {idx.max()}] but only {upper} exist "
                         f"(indices are 0-based).")


def _as_groundtruth(gt: Mapping, where: str) -> Dict[str, np.ndarray]:
    """Validate one GT dict ``{boxes (N,4) xyxy, labels (N,), relations (R,3) [sub, obj, pred]}``."""
    boxes = _field(gt, "boxes", where, "GT boxes (N, 4) xyxy in pixels")
    labels = _field(gt, "labels", where, "GT object labels (N,), 0-based").astype(np.int64, copy=False)
    rels = _field(gt, "relations", where, "GT relations (R, 3) [subject index, object index, predicate]")
    if rels.size == 0:
        rels = rels.reshape(0, 3)
    rels = rels.astype(np.int64, copy=False)
    boxes = boxes.reshape(-1, 4) if boxes.size == 0 else boxes
    _check_shape(boxes, "boxes", where, (None, 4), "(N, 4) xyxy")
    _check_shape(labels, "labels", where, (boxes.shape[0],), f"(N,) = ({boxes.shape[0]},) like 'boxes'")
    _check_shape(rels, "relations", where, (None, 3), "(R, 3) [subject index, object index, predicate]")
    _check_indices(rels[:, :2], "relations", where, boxes.shape[0], "object indices")
    if labels.size and labels.min() < 0 or rels.size and rels[:, 2].min() < 0:
        raise ValueError(f"{where}: GT 'labels' and relation predicates must be 0-based indices (>= 0).")
    return {"boxes": boxes, "labels": labels, "relations": rels}


def _as_prediction(pred: Mapping, num_predicates: int, where: str) -> Dict[str, np.ndarray]:
    """Validate one raw prediction dict (the model's eval output)."""
    boxes = _field(pred, "boxes", where, "predicted boxes (N, 4) xyxy in original-image pixels")
    labels = _field(pred, "labels", where, "predicted object labels (N,)").astype(np.int64, copy=False)
    scores = _field(pred, "scores", where, "object scores (N,)")
    pairs = _field(pred, "rel_pairs", where, "candidate pairs (P, 2) [subject index, object index]")
    rel_scores = _field(pred, "rel_scores", where, f"predicate scores (P, num_predicates={num_predicates})")
    boxes = boxes.reshape(-1, 4) if boxes.size == 0 else boxes
    pairs = (pairs.reshape(0, 2) if pairs.size == 0 else pairs).astype(np.int64, copy=False)
    if rel_scores.size == 0:
        rel_scores = rel_scores.reshape(0, num_predicates)
    n = boxes.shape[0]
    _check_shape(boxes, "boxes", where, (None, 4), "(N, 4) xyxy")
    _check_shape(labels, "labels", where, (n,), f"(N,) = ({n},) like 'boxes'")
    _check_shape(scores, "scores", where, (n,), f"(N,) = ({n},) like 'boxes'")
    _check_shape(pairs, "rel_pairs", where, (None, 2), "(P, 2)")
    if rel_scores.ndim != 2 or rel_scores.shape != (pairs.shape[0], num_predicates):
        extra = (" It looks like it has a background column: drop column 0." if rel_scores.ndim == 2
                 and rel_scores.shape[1] == num_predicates + 1 else "")
        raise ValueError(f"{where}: 'rel_scores' must have shape (P, num_predicates) = ({pairs.shape[0]}, "
                         f"{num_predicates}) with one score per predicate and no background column; got "
                         f"{tuple(rel_scores.shape)}.{extra}")
    _check_indices(pairs, "rel_pairs", where, n, "object indices")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{where}: predicted 'labels' must be 0-based class indices; got {labels.min()}.")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{where}: object 'scores' contains NaN or inf.")
    if scores.size and scores.min() < 0:
        # triplet scores are products of probabilities; the no-graph-constraint pruning relies on it too
        raise ValueError(f"{where}: object 'scores' must be probabilities (>= 0); got {scores.min()}.")
    return {"boxes": boxes, "labels": labels, "scores": scores, "rel_pairs": pairs, "rel_scores": rel_scores}


def _check_mode(mode: Optional[str]) -> Optional[str]:
    if mode is not None and mode not in MODES:
        raise ValueError(f"Unknown scene-graph mode '{mode}'; expected one of {', '.join(MODES)} (or None).")
    return mode


# ---------------------------------------------------------------------------- stage 1: ranking
def _top_k_desc(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``values`` (all if ``k <= 0``), descending, ties by lower index.

    Equal to the first ``k`` entries of a full stable descending sort, in O(n + c log c) for c candidates.
    """
    n = values.shape[0]
    if k <= 0 or k >= n:
        return np.argsort(-values, kind="stable")
    kth = np.partition(values, n - k)[n - k]
    candidates = np.flatnonzero(values >= kth)  # all ties with the k-th value, ascending index
    return candidates[np.argsort(-values[candidates], kind="stable")[:k]]


def _no_graph_constraint_top(pair_mult: np.ndarray, best: np.ndarray, rel_scores: np.ndarray, triplet: np.ndarray,
                             k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` (pair, predicate) combinations by ``(s_sub * s_obj) * p`` -> (pair index, predicate, score).

    Ties go to the pair ranked first by the graph-constrained ``triplet`` score, then the lower predicate: the
    reference ranks the combinations of its post-processor's sorted pair list. Only pairs whose best combination
    reaches the k-th best pair's best can contribute (multiplying by a positive float is monotone, so a pair's
    combinations never beat its best one), which bounds the work by ~k pairs.
    """
    num_pairs, num_predicates = rel_scores.shape
    if k >= num_pairs:
        candidates = np.argsort(-triplet, kind="stable")  # every pair, in graph-constrained order
        combos = (pair_mult[candidates, None] * rel_scores[candidates]).ravel()
        top = _top_k_desc(combos, k)
    else:
        pair_best = pair_mult * best  # == each pair's best combination, bit for bit
        kth = np.partition(pair_best, num_pairs - k)[num_pairs - k]
        candidates = np.flatnonzero(pair_best >= kth)
        candidates = candidates[np.argsort(-triplet[candidates], kind="stable")]
        combos = (pair_mult[candidates, None] * rel_scores[candidates]).ravel()
        # >= k combinations (the candidates' bests) reach kth, so the top k are among those >= kth; a stable sort of
        # these few (ascending flat index) gives the exact order
        kept = np.flatnonzero(combos >= kth)
        top = kept[np.argsort(-combos[kept], kind="stable")[:k]]
    return candidates[top // num_predicates], top % num_predicates, combos[top]


def rank_scene_graph_prediction(prediction: Mapping, *, num_predicates: int, max_k: int = 100, ng_k: int = 100,
                                mode: Optional[str] = None, groundtruth: Optional[Mapping] = None,
                                where: str = "prediction") -> Dict[str, np.ndarray]:
    """Turn one raw prediction into its *ranked record* (what the metrics and ``predictions.pth`` need).

    Args:
        prediction: ``{boxes (N,4), labels (N,), scores (N,), rel_pairs (P,2), rel_scores (P,num_predicates)}``;
            numpy or tensors, 0-based, any pair order.
        max_k: length of the graph-constrained list (``<= 0``: all P pairs).
        ng_k: length of the no-graph-constraint list (the reference uses 100).
        mode: ``"predcls"`` replaces boxes / labels / scores by the GT's (scores 1) as the reference does;
            ``"predcls"`` / ``"sgcls"`` also build the GT-pair list for ``A@K``. ``None`` uses the prediction as is.
        groundtruth: the image's GT dict; required for ``predcls`` / ``sgcls``.

    Returns:
        dict with ``boxes``, ``labels``, ``scores`` (the objects used), ``num_pairs`` (P), ``max_k``, ``ng_k``,
        ``rel_pairs`` (L,2) / ``rel_labels`` (L,) / ``triplet_scores`` (L,) (graph-constrained, best first),
        ``ng_rel_pairs`` / ``ng_rel_labels`` / ``ng_triplet_scores`` and, for PredCls / SGCls, ``gtpair_*``.
    """
    mode = _check_mode(mode)
    pred = _as_prediction(prediction, num_predicates, where)
    boxes, labels, scores = pred["boxes"], pred["labels"], pred["scores"]
    pairs, rel_scores = pred["rel_pairs"], pred["rel_scores"]
    gt = None
    if mode in ("predcls", "sgcls"):
        if groundtruth is None:
            raise ValueError(f"{where}: mode '{mode}' needs the image's ground truth (GT pairs / GT boxes).")
        gt = _as_groundtruth(groundtruth, where)
        if gt["boxes"].shape[0] != boxes.shape[0]:
            raise ValueError(f"{where}: in {mode} the prediction must hold the GT boxes in GT order; it has "
                             f"{boxes.shape[0]} boxes, the GT {gt['boxes'].shape[0]}. Check TEST.RELATION.MODE.")
    if mode == "predcls":
        # The reference evaluates PredCls on the GT boxes and labels with object scores 1.
        boxes, labels = gt["boxes"], gt["labels"]
        scores = np.ones(labels.shape[0], dtype=np.float32)

    # Row maxima are cheap; the argmax (first maximum, as numpy's) is only needed for the few listed pairs.
    best = rel_scores.max(1) if pairs.shape[0] else np.zeros(0, rel_scores.dtype)
    if not np.all(np.isfinite(best)):
        raise ValueError(f"{where}: 'rel_scores' contains NaN or inf.")
    s_sub, s_obj = scores[pairs[:, 0]], scores[pairs[:, 1]]
    triplet = best * s_sub * s_obj  # the reference's post-processor: rel * s_sub * s_obj, in this order
    order = _top_k_desc(triplet, max_k)
    ng_idx, ng_label, ng_score = _no_graph_constraint_top(s_sub * s_obj, best, rel_scores, triplet, ng_k)
    record = {
        "boxes": boxes, "labels": labels, "scores": scores, "num_pairs": int(pairs.shape[0]),
        "max_k": int(max_k), "ng_k": int(ng_k),
        # int32 indices: these records are kept for every image (box AP, predictions.pth)
        "rel_pairs": pairs[order].astype(np.int32), "rel_labels": _argmax_rows(rel_scores, order),
        "triplet_scores": triplet[order],
        "ng_rel_pairs": pairs[ng_idx].astype(np.int32), "ng_rel_labels": ng_label.astype(np.int32),
        "ng_triplet_scores": ng_score,
    }
    if gt is not None:
        record.update(_gt_pair_list(pairs, rel_scores, triplet, gt["relations"], max_k))
    return record


def _argmax_rows(rel_scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Best predicate (first maximum) of the selected rows, int32."""
    if rows.shape[0] == 0:
        return np.zeros(0, np.int32)
    return rel_scores[rows].argmax(1).astype(np.int32)


def _gt_pair_list(pairs: np.ndarray, rel_scores: np.ndarray, triplet: np.ndarray, gt_rels: np.ndarray,
                  max_k: int) -> Dict[str, np.ndarray]:
    """The graph-constrained ranking restricted to pairs that are GT pairs (for ``A@K``)."""
    width = int(max(pairs.max(initial=0), gt_rels[:, :2].max(initial=0))) + 1
    in_gt = np.isin(pairs[:, 0] * width + pairs[:, 1], gt_rels[:, 0] * width + gt_rels[:, 1])
    idx = np.flatnonzero(in_gt)
    idx = idx[_top_k_desc(triplet[idx], max_k)]
    return {"gtpair_rel_pairs": pairs[idx].astype(np.int32), "gtpair_rel_labels": _argmax_rows(rel_scores, idx),
            "gtpair_triplet_scores": triplet[idx]}


# ---------------------------------------------------------------------------- stage 2: matching
_LISTS = (("gc_rank", ""), ("ng_rank", "ng_"), ("acc_rank", "gtpair_"))  # stat name, ranked-record key prefix


def _concat(arrays: List[np.ndarray], dtype, width: Optional[int] = None) -> np.ndarray:
    """Concatenate validated per-image arrays (1-D, or (n, width)) as ``dtype``."""
    if not arrays:
        return np.zeros((0,) if width is None else (0, width), dtype)
    out = np.concatenate(arrays)
    return (out if width is None else out.reshape(-1, width)).astype(dtype, copy=False)


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _first_hits(gt_key: np.ndarray, gt_sub_box: np.ndarray, gt_obj_box: np.ndarray, list_key: np.ndarray,
                list_sub_box: np.ndarray, list_obj_box: np.ndarray, list_rank: np.ndarray,
                iou_threshold: float) -> np.ndarray:
    """For every GT relation (of any image), the rank of the first listed triplet of its image that hits it.

    Keys encode (image, subject label, object label, predicate), so one sort + ``searchsorted`` joins every GT
    relation with the listed triplets of equal labels in its image; the +1-convention IoU (the shared
    ``paired_iou``, float32 like the reference) is computed only for those candidates.
    """
    first = np.full(gt_key.shape[0], _NOT_HIT, dtype=np.int64)
    if gt_key.size == 0 or list_key.size == 0:
        return first
    order = np.argsort(list_key, kind="stable")  # equal keys keep list order: ascending rank within an image
    sorted_keys = list_key[order]
    lo = np.searchsorted(sorted_keys, gt_key, side="left")
    counts = np.searchsorted(sorted_keys, gt_key, side="right") - lo
    total = int(counts.sum())
    if total == 0:
        return first
    gt_of = np.repeat(np.arange(gt_key.shape[0]), counts)
    cand = order[np.arange(total) + np.repeat(lo - _exclusive_cumsum(counts), counts)]
    threshold = np.float32(iou_threshold)  # float32 comparison, like the reference's numpy code
    ok = paired_iou(gt_sub_box[gt_of], list_sub_box[cand], plus_one=True) >= threshold
    ok &= paired_iou(gt_obj_box[gt_of], list_obj_box[cand], plus_one=True) >= threshold
    gt_of, rank = gt_of[ok], list_rank[cand[ok]]
    if gt_of.size:
        lead = np.ones(gt_of.size, dtype=bool)  # candidates of one GT are contiguous and rank-ascending
        lead[1:] = gt_of[1:] != gt_of[:-1]
        first[gt_of[lead]] = rank[lead]
    return first


def _match_batch(items: List[Tuple[Dict[str, np.ndarray], Mapping]],
                 iou_threshold: float) -> List[Dict[str, np.ndarray]]:
    """Per-GT-relation statistics of many images at once: triplet labels and first-hit ranks in each list.

    ``items`` are (validated GT, ranked record) pairs of images with GT relations and candidate pairs. Everything is
    concatenated with per-image offsets so the cost is a few dozen numpy calls for the whole batch.
    """
    if not items:
        return []
    gts = [g for g, _ in items]
    records = [r for _, r in items]
    n = len(items)
    gt_boxes = _concat([g["boxes"] for g in gts], np.float32, 4)
    gt_labels = _concat([g["labels"] for g in gts], np.int64)
    gt_offset = _exclusive_cumsum(np.array([g["labels"].shape[0] for g in gts]))
    num_rels = np.array([g["relations"].shape[0] for g in gts])
    rels = _concat([g["relations"] for g in gts], np.int64, 3)
    rel_image = np.repeat(np.arange(n), num_rels)
    rel_sub, rel_obj = rels[:, 0] + gt_offset[rel_image], rels[:, 1] + gt_offset[rel_image]
    triplets = np.stack([gt_labels[rel_sub], gt_labels[rel_obj], rels[:, 2]], 1)

    boxes = _concat([r["boxes"] for r in records], np.float32, 4)
    labels = _concat([r["labels"] for r in records], np.int64)
    offset = _exclusive_cumsum(np.array([len(r["labels"]) for r in records]))
    lists = {name: prefix for name, prefix in _LISTS if all(f"{prefix}rel_pairs" in r for r in records)}
    list_labels = {name: _concat([r[f"{p}rel_labels"] for r in records], np.int64) for name, p in lists.items()}
    base_obj = int(max(gt_labels.max(initial=0), labels.max(initial=0))) + 1
    base_pred = int(max([rels[:, 2].max(initial=0)] + [v.max(initial=0) for v in list_labels.values()])) + 1
    encode = lambda image, sub, obj, pred: ((image * base_obj + sub) * base_obj + obj) * base_pred + pred  # noqa: E731
    gt_key = encode(rel_image, triplets[:, 0], triplets[:, 1], triplets[:, 2])

    stats = {"gt_triplets": triplets}
    for name, prefix in lists.items():
        sizes = np.array([len(r[f"{prefix}rel_labels"]) for r in records])
        image = np.repeat(np.arange(n), sizes)
        pairs = _concat([r[f"{prefix}rel_pairs"] for r in records], np.int64, 2) + offset[image][:, None]
        rank = np.arange(image.shape[0]) - np.repeat(_exclusive_cumsum(sizes), sizes)
        key = encode(image, labels[pairs[:, 0]], labels[pairs[:, 1]], list_labels[name])
        stats[name] = _first_hits(gt_key, gt_boxes[rel_sub], gt_boxes[rel_obj], key, boxes[pairs[:, 0]],
                                  boxes[pairs[:, 1]], rank, iou_threshold)
    ends = np.cumsum(num_rels).tolist()
    starts = [0] + ends[:-1]
    # plain slices: np.split costs ~20 us per piece
    return [{k: v[a:b] for k, v in stats.items()} for a, b in zip(starts, ends)]


# ---------------------------------------------------------------------------- accumulation
class SceneGraphRecallAccumulator:
    """Collects per-image first-hit ranks and turns them into every metric of the module docstring.

    Images are identified by an integer ``key`` that also fixes the averaging order (use the dataset index: the
    reference averages in dataset order, and floating-point sums depend on order). Adding the same key twice keeps the
    last record. Memory is O(number of GT relations) plus at most ``_BATCH`` ranked records waiting to be matched.
    """

    def __init__(self, *, num_predicates: int, ks: Sequence[int] = (20, 50, 100), iou_threshold: float = 0.5,
                 mode: Optional[str] = None):
        if num_predicates <= 0:
            raise ValueError(f"num_predicates must be positive, got {num_predicates}.")
        ks = tuple(int(k) for k in ks)
        if not ks or min(ks) <= 0:
            raise ValueError(f"ks must be positive integers, got {ks}.")
        self.num_predicates = int(num_predicates)
        self.ks = ks
        self.iou_threshold = float(iou_threshold)
        self.mode = _check_mode(mode)
        self._records: Dict[int, Optional[Dict[str, np.ndarray]]] = {}
        self._pending: List[Tuple[int, Dict[str, np.ndarray], Mapping]] = []

    # images are matched in batches: per-image numpy calls would dominate the cost
    _BATCH = 512

    @property
    def records(self) -> Dict[int, Optional[Dict[str, np.ndarray]]]:
        """key -> per-GT-relation statistics (``None`` for skipped images), after matching pending images."""
        self._flush()
        return self._records

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        stats = iter(_match_batch([(gt, ranked) for _, gt, ranked in pending if gt is not None], self.iou_threshold))
        for key, gt, _ in pending:  # in order, so the last add of a key wins
            self._records[key] = None if gt is None else next(stats)

    @property
    def max_k(self) -> int:
        """The largest K evaluated."""
        return max(self.ks)

    def add(self, groundtruth: Mapping, prediction: Mapping, key: Optional[int] = None, where: str = "") -> None:
        """Rank a raw prediction (see :func:`rank_scene_graph_prediction`) and add it."""
        key = self._next_key() if key is None else int(key)
        where = where or f"image {key}"
        gt = _as_groundtruth(groundtruth, where)
        ranked = rank_scene_graph_prediction(prediction, num_predicates=self.num_predicates, max_k=self.max_k,
                                             ng_k=self.max_k, mode=self.mode, groundtruth=gt, where=where)
        self._add_checked(key, gt, ranked)

    def add_ranked(self, groundtruth: Mapping, ranked: Mapping, key: Optional[int] = None, where: str = "") -> None:
        """Add a ranked record (e.g. read from ``predictions.pth``) after checking it against its GT."""
        key = self._next_key() if key is None else int(key)
        where = where or f"image {key}"
        gt = _as_groundtruth(groundtruth, where)
        self._check_ranked(ranked, where)
        self._add_checked(key, gt, ranked)

    def _add_checked(self, key: int, gt: Dict[str, np.ndarray], ranked: Mapping) -> None:
        """Queue an image for batched matching (``None`` record for skipped images)."""
        if gt["relations"].shape[0] == 0 or int(ranked["num_pairs"]) == 0:
            # the reference skips images without GT relations or without predictions
            self._pending.append((key, None, None))
        else:
            self._pending.append((key, gt, ranked))
        if len(self._pending) >= self._BATCH:
            self._flush()

    def _next_key(self) -> int:
        return len(self._records) + len(self._pending)

    def _check_ranked(self, ranked: Mapping, where: str) -> None:
        missing = [k for k in ("boxes", "labels", "num_pairs", "max_k", "ng_k") + _RANKED_KEYS if k not in ranked]
        if missing:
            raise KeyError(f"{where}: ranked record lacks {missing}; build it with rank_scene_graph_prediction().")
        for key, name in (("max_k", "graph-constrained"), ("ng_k", "no-graph-constraint")):
            limit = int(ranked[key])
            if 0 < limit < self.max_k:
                raise ValueError(f"{where}: the {name} list was truncated at {limit} triplets (TEST.RELATION.TOPK "
                                 f"when it was saved) but K={self.max_k} was requested; evaluate with K <= {limit} "
                                 "or re-run inference with a larger TEST.RELATION.TOPK.")
        labels = np.asarray(ranked["labels"])
        if labels.size and labels.min() < 0:
            raise ValueError(f"{where}: predicted 'labels' must be 0-based class indices; got {labels.min()}.")
        for prefix in ("", "ng_", "gtpair_"):
            if f"{prefix}rel_pairs" in ranked:
                _check_indices(np.asarray(ranked[f"{prefix}rel_pairs"]), f"{prefix}rel_pairs", where, labels.shape[0],
                               "object indices")
        if self.mode in ("predcls", "sgcls") and "gtpair_rel_pairs" not in ranked:
            raise ValueError(f"{where}: mode '{self.mode}' needs the GT-pair list (A@K) but the record was ranked "
                             "in sgdet mode; evaluate with the mode the predictions were made in.")

    def merge(self, records: Mapping[int, Optional[Dict[str, np.ndarray]]]) -> None:
        """Add records gathered from another process."""
        self._flush()
        self._records.update(records)

    # ------------------------------------------------------------------ summaries
    def _stacked(self):
        kept = [self.records[k] for k in sorted(self.records) if self.records[k] is not None]
        if not kept:
            return None
        sizes = np.array([r["gc_rank"].shape[0] for r in kept])
        out = {"image": np.repeat(np.arange(len(kept)), sizes), "num_images": len(kept),
               "gt_triplets": np.concatenate([r["gt_triplets"] for r in kept]).reshape(-1, 3)}
        for name in ("gc_rank", "ng_rank"):
            out[name] = np.concatenate([r[name] for r in kept])
        if all("acc_rank" in r for r in kept):
            out["acc_rank"] = np.concatenate([r["acc_rank"] for r in kept])
        return out

    def num_evaluated_images(self) -> int:
        """Images that count (with GT relations and candidate pairs)."""
        return sum(r is not None for r in self.records.values())

    def summarize(self, zeroshot_triplets: Optional[np.ndarray] = None) -> Dict[str, float]:
        """All metrics as ``{"R@20": ..., "ngR@20": ..., "mR@20": ..., ...}`` (fractions; NaN when undefined)."""
        data = self._stacked()
        metrics: Dict[str, float] = OrderedDict()
        names = [("R", "gc_rank", "recall"), ("ngR", "ng_rank", "recall"), ("mR", "gc_rank", "mean"),
                 ("ngmR", "ng_rank", "mean")]
        if zeroshot_triplets is not None:
            names += [("zR", "gc_rank", "zeroshot"), ("ngzR", "ng_rank", "zeroshot")]
        if self.mode in ("predcls", "sgcls"):
            names.append(("A", "acc_rank", "accuracy"))
        if data is None:
            logger.warning("No image with both GT relations and predictions: every scene-graph metric is NaN.")
        zs_mask = None
        if data is not None and zeroshot_triplets is not None:
            zs_mask = _rows_in(data["gt_triplets"], np.asarray(zeroshot_triplets).reshape(-1, 3))
        for prefix, rank_key, kind in names:
            for k in self.ks:
                metrics[f"{prefix}@{k}"] = math.nan if data is None else self._metric(data, rank_key, kind, k, zs_mask)
        return metrics

    def _metric(self, data, rank_key: str, kind: str, k: int, zs_mask) -> float:
        image, n = data["image"], data["num_images"]
        hit = (data[rank_key] < k).astype(np.float64)
        counts = np.bincount(image, minlength=n).astype(np.float64)
        hits = np.bincount(image, weights=hit, minlength=n)
        if kind == "recall":
            return float(np.mean(hits / counts))
        if kind == "accuracy":
            return float(np.mean(hits) / np.mean(counts))
        if kind == "zeroshot":
            z_counts = np.bincount(image, weights=zs_mask.astype(np.float64), minlength=n)
            z_hits = np.bincount(image, weights=hit * zs_mask, minlength=n)
            has = z_counts > 0
            if not has.any():
                logger.warning("No evaluated image has a zero-shot GT relation: zR@%d is NaN.", k)
                return math.nan
            return float(np.mean(z_hits[has] / z_counts[has]))
        per_predicate = self._per_predicate_from(data, rank_key, k)
        total = 0.0
        for value in per_predicate:  # sequential sum, as the reference does
            total += value
        return total / float(self.num_predicates)

    def _per_predicate_from(self, data, rank_key: str, k: int) -> List[float]:
        c = self.num_predicates
        predicates = data["gt_triplets"][:, 2]
        if predicates.size and (predicates.min() < 0 or predicates.max() >= c):
            raise ValueError(f"GT predicates span [{predicates.min()}, {predicates.max()}] but num_predicates={c}.")
        cell = data["image"] * c + predicates
        size = data["num_images"] * c
        counts = np.bincount(cell, minlength=size)
        hits = np.bincount(cell, weights=(data[rank_key] < k).astype(np.float64), minlength=size)
        present = np.flatnonzero(counts)  # image-major: per predicate, the values stay in image order
        values = hits[present] / counts[present]
        predicate_of = present % c
        order = np.argsort(predicate_of, kind="stable")
        bounds = np.searchsorted(predicate_of[order], np.arange(c + 1))
        grouped = values[order]
        return [float(np.mean(grouped[bounds[p]:bounds[p + 1]])) if bounds[p + 1] > bounds[p] else 0.0
                for p in range(c)]

    def per_predicate_recall(self, k: int, no_graph_constraint: bool = False) -> np.ndarray:
        """``(num_predicates,)`` per-predicate recall at K (the terms averaged by mR@K / ngmR@K; absent: 0)."""
        data = self._stacked()
        if data is None:
            return np.zeros(self.num_predicates)
        return np.array(self._per_predicate_from(data, "ng_rank" if no_graph_constraint else "gc_rank", k))

    def predicate_gt_counts(self) -> np.ndarray:
        """``(num_predicates,)`` number of evaluated GT relations per predicate."""
        data = self._stacked()
        if data is None:
            return np.zeros(self.num_predicates, dtype=np.int64)
        return np.bincount(data["gt_triplets"][:, 2], minlength=self.num_predicates)


def _rows_in(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``rows`` (n, 3) that appear in ``table`` (t, 3)."""
    if table.size == 0 or rows.size == 0:
        return np.zeros(rows.shape[0], dtype=bool)
    rows, table = rows.astype(np.int64), table.astype(np.int64)
    base = int(max(rows.max(), table.max())) + 1
    encode = lambda a: (a[:, 0] * base + a[:, 1]) * base + a[:, 2]  # noqa: E731
    return np.isin(encode(rows), encode(table))


# ---------------------------------------------------------------------------- functional API
def evaluate_scene_graphs(groundtruths: Sequence[Mapping], predictions: Sequence[Mapping], *, num_predicates: int,
                          ks: Sequence[int] = (20, 50, 100), iou_threshold: float = 0.5,
                          zeroshot_triplets=None, mode: Optional[str] = None) -> Dict[str, float]:
    """Scene-Graph-Benchmark's image SGG metrics on parallel lists of per-image dicts.

    Args:
        groundtruths: ``{boxes (N,4) xyxy, labels (N,), relations (R,3) [sub, obj, pred]}`` per image, 0-based.
        predictions: ``{boxes, labels, scores, rel_pairs (P,2), rel_scores (P, num_predicates)}`` per image (no
            background column, any order), or ranked records from :func:`rank_scene_graph_prediction`.
        zeroshot_triplets: ``(T,3)`` [subject label, object label, predicate] or None (no zR keys).
        mode: ``"predcls"`` / ``"sgcls"`` add ``A@K`` (predictions carry the GT boxes, in GT order); ``"predcls"``
            evaluates on GT boxes / labels with object scores 1. ``None`` / ``"sgdet"`` use predictions as given.

    Returns:
        ``{"R@K", "ngR@K", "mR@K", "ngmR@K"[, "zR@K", "ngzR@K"][, "A@K"]}`` as fractions in [0, 1].
    """
    if len(groundtruths) != len(predictions):
        raise ValueError(f"Got {len(groundtruths)} ground truths but {len(predictions)} predictions; "
                         "they must be parallel lists (one entry per image).")
    acc = SceneGraphRecallAccumulator(num_predicates=num_predicates, ks=ks, iou_threshold=iou_threshold, mode=mode)
    for i, (gt, pred) in enumerate(zip(groundtruths, predictions)):
        if "ng_rel_pairs" in pred:
            acc.add_ranked(gt, pred, key=i, where=f"image {i}")
        else:
            acc.add(gt, pred, key=i, where=f"image {i}")
    zs = None if zeroshot_triplets is None else _to_numpy(zeroshot_triplets, "zeroshot_triplets", "zeroshot_triplets")
    if zs is not None and (zs.ndim != 2 or zs.shape[1] != 3) and zs.size:
        raise ValueError(f"zeroshot_triplets must have shape (T, 3) [subject label, object label, predicate]; "
                         f"got {tuple(zs.shape)}.")
    return acc.summarize(zs)


# ---------------------------------------------------------------------------- zero-shot triplets
def compute_zeroshot_triplets(train_dicts: Iterable[Mapping], test_dicts: Iterable[Mapping]) -> np.ndarray:
    """``(T, 3)`` int64 [subject label, object label, predicate] occurring in the test GT but never in train, sorted."""

    def triplets_of(dicts, split):
        out = []
        for i, d in enumerate(dicts):
            gt = _as_groundtruth(d, f"{split} image {d.get('image_id', i)}")
            rels = gt["relations"]
            out.append(np.stack([gt["labels"][rels[:, 0]], gt["labels"][rels[:, 1]], rels[:, 2]], 1))
        return np.unique(np.concatenate(out).reshape(-1, 3), axis=0) if out else np.zeros((0, 3), np.int64)

    train, test = triplets_of(train_dicts, "train"), triplets_of(test_dicts, "test")
    return test[~_rows_in(test, train)].astype(np.int64)


def load_zeroshot_triplets(path: str) -> np.ndarray:
    """Read a ``(T, 3)`` [subject label, object label, predicate] file (.npy, .pth/.pt or whitespace .txt), 0-based."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Zero-shot triplet file '{path}' does not exist. Create it with "
                                "tools/compute_zeroshot_triplets.py or fix TEST.RELATION.ZEROSHOT_FILE.")
    try:
        if path.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        elif path.endswith((".pth", ".pt", ".pytorch")):
            arr = _to_numpy(torch.load(path, map_location="cpu", weights_only=True), "triplets", path)
        elif path.endswith((".txt", ".csv")):
            arr = np.loadtxt(path, dtype=np.int64, delimiter="," if path.endswith(".csv") else None, ndmin=2)
        else:
            raise ValueError("unknown extension; use .npy, .pth or .txt")
    except Exception as e:
        raise ValueError(f"Cannot read zero-shot triplet file '{path}': {e}") from e
    arr = np.asarray(arr)
    if arr.size == 0:
        return np.zeros((0, 3), np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"Zero-shot triplet file '{path}' must hold a (T, 3) array [subject label, object label, "
                         f"predicate]; got shape {tuple(arr.shape)}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        raise ValueError(f"Zero-shot triplet file '{path}' must hold integer labels.")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"Zero-shot triplet file '{path}' holds negative labels; labels are 0-based.")
    return arr


# ---------------------------------------------------------------------------- predictions file
_NUMPY_SAFE_GLOBALS = None


def _numpy_safe_globals() -> list:
    global _NUMPY_SAFE_GLOBALS
    if _NUMPY_SAFE_GLOBALS is None:
        dtypes = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.uint8, np.int8, np.int16]
        # bytes: protocol-2 pickles of empty arrays call bytes(); harmless to allow
        _NUMPY_SAFE_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, bytes] + \
            [type(np.dtype(t)) for t in dtypes]
    return _NUMPY_SAFE_GLOBALS


def save_predictions_file(path: str, records: List[dict], *, mode: Optional[str], dataset_name: str,
                          ks: Sequence[int] = (20, 50, 100)) -> None:
    """Write ranked records (each with ``image_id``) to ``path`` atomically (temp file + rename).

    ``ks`` records the K the evaluation used (the default of ``tools/evaluate_predictions.py``).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {"format": RANKED_FORMAT, "mode": mode, "dataset": dataset_name, "ks": [int(k) for k in ks],
               "predictions": records}
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_predictions_file(path: str) -> dict:
    """Read a predictions file: ``{"format", "mode", "dataset", "ks", "predictions": [...]}``.

    Accepts files written by :class:`SceneGraphEvaluator` (ranked records) and, for hand-made files, a plain list of
    raw prediction dicts (each with ``image_id``), returned with ``format`` ``"raw"``. Loads with ``weights_only``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Predictions file '{path}' does not exist (written as inference/<dataset>/"
                                "predictions.pth when TEST.SAVE_PREDICTIONS is True).")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"Cannot read predictions file '{path}' (corrupt, or not written by sgg): {e}") from e
    if isinstance(data, list):
        data = {"format": "raw", "mode": None, "dataset": None, "ks": None, "predictions": data}
    if not isinstance(data, dict) or "predictions" not in data:
        raise ValueError(f"Predictions file '{path}' must hold a dict with key 'predictions' or a list of per-image "
                         f"dicts; got {type(data).__name__}.")
    for i, rec in enumerate(data["predictions"]):
        if not isinstance(rec, Mapping) or "image_id" not in rec:
            raise ValueError(f"Predictions file '{path}': entry {i} is not a dict with 'image_id'.")
    return data


# ---------------------------------------------------------------------------- DatasetEvaluator
@EVALUATOR_REGISTRY.register("scene_graph")  # the name datasets give as metadata evaluator_type
class SceneGraphEvaluator(DatasetEvaluator):
    """Image SGG evaluator (PredCls / SGCls / SGDet) with Scene-Graph-Benchmark's numbers.

    ``process`` ranks each output (bounded per image) and matches it against the dataset's GT, read by ``image_id``
    from ``DatasetCatalog``; ``evaluate`` gathers every rank's records on the main process, orders them by dataset
    index (so any number of processes gives bit-identical numbers) and returns ``{"sgg": {...}}`` plus
    ``{"bbox": {...}}`` (pycocotools box AP) in SGCls / SGDet. It also logs a per-predicate recall table and writes
    ``per_predicate_recall.{csv,png}`` and, if asked, ``predictions.pth`` to ``output_dir``.
    """

    @configurable
    def __init__(self, *, dataset_name: str, output_dir: Optional[str] = None, mode: str = "sgdet",
                 ks: Sequence[int] = (20, 50, 100), iou_threshold: float = 0.5, topk: int = 100,
                 zeroshot_file: str = "", save_predictions: bool = False, box_ap: bool = True,
                 num_predicates: Optional[int] = None, distributed: bool = True):
        """
        Args:
            dataset_name: a DatasetCatalog name whose dicts hold ``image_id``, ``boxes``, ``labels``, ``relations``.
            output_dir: where tables, plot and ``predictions.pth`` go (None: nothing is written).
            mode: ``predcls``, ``sgcls`` or ``sgdet``.
            ks: the K of every @K metric.
            topk: graph-constrained triplets kept per image (``<= 0``: all); saved files re-evaluate exactly for
                any K <= max(topk, max(ks)).
            zeroshot_file: a (T,3) triplet file for zR@K ("" = none).
            box_ap: report pycocotools box AP (SGCls / SGDet only).
            num_predicates: default: the metadata's ``predicate_classes`` length.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._mode = _check_mode(mode)
        if self._mode is None:
            raise ValueError("SceneGraphEvaluator needs TEST.RELATION.MODE in predcls/sgcls/sgdet.")
        self._ks = tuple(int(k) for k in ks)
        self._iou_threshold = float(iou_threshold)
        self._max_k = max(int(topk), max(self._ks)) if topk > 0 else 0
        self._ng_k = max(int(topk), max(self._ks))
        self._zeroshot = load_zeroshot_triplets(zeroshot_file) if zeroshot_file else None
        self._save_predictions = bool(save_predictions)
        self._box_ap = bool(box_ap) and self._mode != "predcls"
        self._distributed = distributed
        meta = MetadataCatalog.get(dataset_name)
        self._predicate_names = list(meta.get("predicate_classes", []) or [])
        if num_predicates is None:
            if not self._predicate_names:
                raise ValueError(f"Dataset '{dataset_name}' has no metadata 'predicate_classes'; pass num_predicates "
                                 "or register the predicate names.")
            num_predicates = len(self._predicate_names)
        self._num_predicates = int(num_predicates)
        if len(self._predicate_names) != self._num_predicates:
            self._predicate_names = [f"predicate_{i}" for i in range(self._num_predicates)]
        self._predicate_frequencies = meta.get("predicate_frequencies", None)
        self._thing_classes = list(meta.get("thing_classes", []) or [])
        self._gt_index: Optional[Dict] = None
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None):
        """Keys: ``TEST.RELATION.{MODE, RECALL_KS, IOU_THRESHOLD, TOPK, ZEROSHOT_FILE, BOX_AP}``,
        ``TEST.SAVE_PREDICTIONS``."""
        return {
            "dataset_name": dataset_name, "output_dir": output_dir, "mode": cfg.TEST.RELATION.MODE,
            "ks": tuple(cfg.TEST.RELATION.RECALL_KS), "iou_threshold": cfg.TEST.RELATION.IOU_THRESHOLD,
            "topk": cfg.TEST.RELATION.TOPK, "zeroshot_file": cfg.TEST.RELATION.ZEROSHOT_FILE,
            "save_predictions": cfg.TEST.SAVE_PREDICTIONS, "box_ap": cfg.TEST.RELATION.BOX_AP,
        }

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        """Forget everything processed so far."""
        self._accumulator = SceneGraphRecallAccumulator(num_predicates=self._num_predicates, ks=self._ks,
                                                        iou_threshold=self._iou_threshold, mode=self._mode)
        self._objects: Dict[int, dict] = {}  # dataset index -> ranked record (+ image_id), kept for AP / saving

    def _groundtruth(self, image_id) -> Tuple[int, Mapping]:
        if self._gt_index is None:
            dicts = DatasetCatalog.get(self._dataset_name)
            self._gt_index = {}
            for i, d in enumerate(dicts):
                if "image_id" not in d or "relations" not in d:
                    raise KeyError(f"Dataset '{self._dataset_name}' entry {i} lacks 'image_id' or 'relations': the "
                                   "scene-graph evaluator needs image-SGG dataset dicts (DESIGN.md §3).")
                self._gt_index[d["image_id"]] = (i, d)
        try:
            return self._gt_index[image_id]
        except KeyError:
            raise KeyError(f"image_id {image_id!r} is not in dataset '{self._dataset_name}'; the evaluator reads "
                           "GT by image_id from DatasetCatalog.") from None

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Rank and match each (input, output) pair; inputs need ``image_id``."""
        for inp, out in zip(inputs, outputs):
            if "image_id" not in inp:
                raise KeyError(f"Scene-graph evaluation needs 'image_id' in every input; got keys {sorted(inp)}.")
            self.add_prediction(inp["image_id"], out)

    def add_prediction(self, image_id, prediction: Mapping) -> None:
        """Evaluate one raw prediction of ``image_id`` (what ``process`` does per image)."""
        index, gt = self._groundtruth(image_id)
        where = f"dataset '{self._dataset_name}' image_id {image_id}"
        gt = _as_groundtruth(gt, where)
        ranked = rank_scene_graph_prediction(prediction, num_predicates=self._num_predicates, max_k=self._max_k,
                                             ng_k=self._ng_k, mode=self._mode, groundtruth=gt, where=where)
        self._accumulator._add_checked(index, gt, ranked)  # validated above: skip add_ranked's checks
        self._keep(image_id, index, ranked)

    def add_ranked_prediction(self, image_id, ranked: Mapping) -> None:
        """Evaluate one ranked record (e.g. from a saved ``predictions.pth``)."""
        index, gt = self._groundtruth(image_id)
        where = f"dataset '{self._dataset_name}' image_id {image_id}"
        self._accumulator.add_ranked(gt, ranked, key=index, where=where)
        self._keep(image_id, index, ranked)

    def _keep(self, image_id, index: int, ranked: Mapping) -> None:
        """Keep the (small) ranked record for box AP and predictions.pth."""
        if self._save_predictions or self._box_ap:
            record = {"image_id": image_id}
            record.update({k: v for k, v in ranked.items() if k != "image_id"})
            self._objects[index] = record

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        """Gather, compute, report. Returns ``{}`` on non-main processes."""
        if self._distributed and comm.get_world_size() > 1:
            comm.synchronize()
            parts = comm.gather((self._accumulator.records, self._objects), dst=0)
            if not comm.is_main_process():
                return {}
            for records, objects in parts:
                self._accumulator.merge(records)
                self._objects.update(objects)
        if not self._accumulator.records:
            logger.warning("SceneGraphEvaluator on '%s' received no predictions.", self._dataset_name)
            return {}
        num_dataset = len(self._gt_index) if self._gt_index is not None else 0
        if num_dataset and len(self._accumulator.records) != num_dataset:
            logger.warning("Evaluated %d of the %d images of '%s'.", len(self._accumulator.records), num_dataset,
                           self._dataset_name)
        metrics = self._accumulator.summarize(self._zeroshot)
        logger.info("Scene-graph evaluation (%s) on %d images with relations and predictions (of %d received).",
                    self._mode, self._accumulator.num_evaluated_images(), len(self._accumulator.records))
        results = OrderedDict(sgg=metrics)
        if self._box_ap:
            results["bbox"] = self._box_ap_results()
        self._report_per_predicate()
        if self._save_predictions and self._output_dir:
            path = os.path.join(self._output_dir, "predictions.pth")
            save_predictions_file(path, [self._objects[k] for k in sorted(self._objects)], mode=self._mode,
                                  dataset_name=self._dataset_name, ks=self._ks)
            logger.info("Saved %d ranked predictions to %s", len(self._objects), path)
        return results

    # ------------------------------------------------------------------ reports
    def _box_ap_results(self) -> Dict[str, float]:
        from .box_ap import evaluate_box_ap

        gts, dets = [], []
        for index in sorted(self._objects):
            record = self._objects[index]
            gts.append(self._groundtruth(record["image_id"])[1])
            dets.append({k: record[k] for k in ("boxes", "labels", "scores")})
        return evaluate_box_ap(gts, dets, class_names=self._thing_classes or None)

    def per_predicate_table(self) -> List[dict]:
        """One row per predicate: name, train count (if known), evaluated GT count, R@K and ngR@K per predicate."""
        acc = self._accumulator
        counts = acc.predicate_gt_counts()
        columns = {f"R@{k}": acc.per_predicate_recall(k) for k in self._ks}
        columns.update({f"ngR@{k}": acc.per_predicate_recall(k, no_graph_constraint=True) for k in self._ks})
        rows = []
        for p, name in enumerate(self._predicate_names):
            row = {"predicate": name, "gt_count": int(counts[p])}
            if self._predicate_frequencies is not None and len(self._predicate_frequencies) == self._num_predicates:
                row["train_count"] = int(self._predicate_frequencies[p])
            row.update({k: float(v[p]) for k, v in columns.items()})
            rows.append(row)
        return rows

    def _report_per_predicate(self) -> None:
        rows = self.per_predicate_table()
        keys = list(rows[0]) if rows else []
        lines = ["Per-predicate recall (" + self._mode + "):", " | ".join(keys)]
        lines += [" | ".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys) for r in rows]
        logger.info("\n".join(lines))
        if not self._output_dir or not comm.is_main_process():
            return
        os.makedirs(self._output_dir, exist_ok=True)
        with open(os.path.join(self._output_dir, "per_predicate_recall.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        _plot_per_predicate(rows, self._ks, os.path.join(self._output_dir, "per_predicate_recall.png"),
                            title=f"Per-predicate recall, {self._dataset_name} ({self._mode})")


def _plot_per_predicate(rows: List[dict], ks: Sequence[int], path: str, title: str) -> None:
    """Grouped bar chart of per-predicate R@K, predicates ordered by training frequency when known."""
    from matplotlib.figure import Figure  # object API: no pyplot global state, no display needed

    if rows and "train_count" in rows[0]:
        rows = sorted(rows, key=lambda r: -r["train_count"])
    n = len(rows)
    width = 0.8 / max(len(ks), 1)
    fig = Figure(figsize=(max(6.0, 0.28 * n + 2), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n)
    for i, k in enumerate(ks):
        values = [r[f"R@{k}"] for r in rows]
        mean = float(np.mean(values)) if values else 0.0  # = mR@K (absent predicates are rows with 0)
        ax.bar(x + (i - (len(ks) - 1) / 2) * width, values, width, label=f"R@{k} (mR@{k} {mean:.3f})")
    ax.set_xticks(x)
    ax.set_xticklabels([r["predicate"] for r in rows], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
