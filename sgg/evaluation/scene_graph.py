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
without GT relations are skipped by every metric; an image with GT relations but no candidate pair counts, with every
GT relation missed (the reference has no defined behaviour there; skipping it would let a model raise its recall by
predicting nothing on hard images). Ties in scores are broken deterministically (graph-constrained: lower pair index;
no graph constraint: the pair's graph-constrained rank, then the lower predicate); the reference's unstable sorts
leave them unspecified.

The evaluation runs in two stages on *chunks* of images (``scene_graph_ops``: a fixed number of numpy calls per chunk,
so small images do not pay numpy's per-call overhead) and keeps memory bounded: ranking turns each image's
``(P, num_predicates)`` scores into three short ranked triplet lists (the *ranked record*, also what
``predictions.pth`` stores; :func:`rank_scene_graph_prediction` for one image), and matching keeps only the rank of
the first hit of every GT relation (:class:`SceneGraphRecallAccumulator`). Every metric for every K is computed from
those ranks.
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
from sgg.utils import comm

from . import scene_graph_ops
from .box_ap import evaluate_box_ap
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
_RANKED_KEYS = ("rel_pairs", "rel_labels", "triplet_scores", "ng_rel_pairs", "ng_rel_labels", "ng_triplet_scores")


# ---------------------------------------------------------------------------- input checking
# Per image only what is cheap in Python happens at ``add`` time (keys present, conversion, shapes, copies); the value
# checks (index ranges, signs, finiteness) run once per chunk of images, vectorised, and only when one fails are the
# images re-checked one by one to name the first culprit with the per-image message.
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
    value = d[key]
    return value if type(value) is np.ndarray else _to_numpy(value, key, where)  # (runs for every image and key)


def _shape_error(arr: np.ndarray, key: str, where: str, expected: str) -> ValueError:
    return ValueError(f"{where}: '{key}' must have shape {expected}; got {tuple(arr.shape)}.")


def _check_indices(idx: np.ndarray, key: str, where: str, upper: int, what: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= upper):
        raise ValueError(f"{where}: '{key}' holds {what} in [{idx.min()}, {idx.max()}] but only {upper} exist "
                         f"(indices are 0-based).")


_GroundTruth = Tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N,4), labels (N,) int64, relations (R,3) int64
_EMPTY_GT: _GroundTruth = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, 3), np.int64))


def _groundtruth_arrays(gt: Mapping, where: str) -> _GroundTruth:
    """Keys and shapes of one GT dict ``{boxes (N,4) xyxy, labels (N,), relations (R,3)}`` -> private copies."""
    boxes = _field(gt, "boxes", where, "GT boxes (N, 4) xyxy in pixels")
    labels = _field(gt, "labels", where, "GT object labels (N,), 0-based").astype(np.int64)
    rels = _field(gt, "relations", where, "GT relations (R, 3) [subject index, object index, predicate]")
    rels = (rels.reshape(0, 3) if rels.size == 0 else rels).astype(np.int64)
    boxes = boxes.reshape(-1, 4) if boxes.size == 0 else boxes.copy()
    # plain comparisons: these run for every image
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise _shape_error(boxes, "boxes", where, "(N, 4) xyxy")
    if labels.shape != (boxes.shape[0],):
        raise _shape_error(labels, "labels", where, f"(N,) = ({boxes.shape[0]},) like 'boxes'")
    if rels.ndim != 2 or rels.shape[1] != 3:
        raise _shape_error(rels, "relations", where, "(R, 3) [subject index, object index, predicate]")
    return boxes, labels, rels


def _check_groundtruth_values(boxes: np.ndarray, labels: np.ndarray, rels: np.ndarray, where: str) -> None:
    _check_indices(rels[:, :2], "relations", where, boxes.shape[0], "object indices")
    if labels.size and labels.min() < 0 or rels.size and rels[:, 2].min() < 0:
        raise ValueError(f"{where}: GT 'labels' and relation predicates must be 0-based indices (>= 0).")


def _as_groundtruth(gt: Mapping, where: str) -> Dict[str, np.ndarray]:
    """Validate one GT dict ``{boxes (N,4) xyxy, labels (N,), relations (R,3) [sub, obj, pred]}``."""
    boxes, labels, rels = _groundtruth_arrays(gt, where)
    _check_groundtruth_values(boxes, labels, rels, where)
    return {"boxes": boxes, "labels": labels, "relations": rels}


# boxes (N,4), labels (N,) int64, scores (N,), rel_pairs (P,2) int64, rel_scores (P, num_predicates)
_Prediction = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _prediction_arrays(pred: Mapping, num_predicates: int, where: str) -> _Prediction:
    """Keys and shapes of one raw prediction dict (the model's eval output); all but ``rel_scores`` are copies."""
    boxes = _field(pred, "boxes", where, "predicted boxes (N, 4) xyxy in original-image pixels")
    labels = _field(pred, "labels", where, "predicted object labels (N,)").astype(np.int64)
    scores = _field(pred, "scores", where, "object scores (N,)").copy()
    pairs = _field(pred, "rel_pairs", where, "candidate pairs (P, 2) [subject index, object index]")
    rel_scores = _field(pred, "rel_scores", where, f"predicate scores (P, num_predicates={num_predicates})")
    boxes = boxes.reshape(-1, 4) if boxes.size == 0 else boxes.copy()
    pairs = (pairs.reshape(0, 2) if pairs.size == 0 else pairs).astype(np.int64)
    if rel_scores.size == 0:
        rel_scores = rel_scores.reshape(0, num_predicates)
    n = boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise _shape_error(boxes, "boxes", where, "(N, 4) xyxy")
    for arr, key in ((labels, "labels"), (scores, "scores")):
        if arr.shape != (n,):
            raise _shape_error(arr, key, where, f"(N,) = ({n},) like 'boxes'")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise _shape_error(pairs, "rel_pairs", where, "(P, 2)")
    if rel_scores.ndim != 2 or rel_scores.shape != (pairs.shape[0], num_predicates):
        extra = (" It looks like it has a background column: drop column 0." if rel_scores.ndim == 2
                 and rel_scores.shape[1] == num_predicates + 1 else "")
        raise ValueError(f"{where}: 'rel_scores' must have shape (P, num_predicates) = ({pairs.shape[0]}, "
                         f"{num_predicates}) with one score per predicate and no background column; got "
                         f"{tuple(rel_scores.shape)}.{extra}")
    return boxes, labels, scores, pairs, rel_scores


def _check_prediction_values(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, pairs: np.ndarray,
                             rel_scores: np.ndarray, where: str) -> None:
    _check_indices(pairs, "rel_pairs", where, boxes.shape[0], "object indices")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{where}: predicted 'labels' must be 0-based class indices; got {labels.min()}.")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{where}: object 'scores' contains NaN or inf.")
    if scores.size and scores.min() < 0:
        # triplet scores are products of probabilities; the no-graph-constraint pruning relies on it too
        raise ValueError(f"{where}: object 'scores' must be probabilities (>= 0); got {scores.min()}.")
    if pairs.shape[0] and not np.all(np.isfinite(rel_scores.max(1))):
        raise ValueError(f"{where}: 'rel_scores' contains NaN or inf.")


def _prepare_prediction(prediction: Mapping, gt: _GroundTruth, num_predicates: int, mode: Optional[str],
                        where: str) -> _Prediction:
    """Shape-checked prediction arrays with the mode's substitutions (PredCls: GT boxes / labels, scores 1)."""
    boxes, labels, scores, pairs, rel_scores = _prediction_arrays(prediction, num_predicates, where)
    if mode in ("predcls", "sgcls") and gt[0].shape[0] != boxes.shape[0]:
        raise ValueError(f"{where}: in {mode} the prediction must hold the GT boxes in GT order; it has "
                         f"{boxes.shape[0]} boxes, the GT {gt[0].shape[0]}. Check TEST.RELATION.MODE.")
    if mode == "predcls":
        # The reference evaluates PredCls on the GT boxes and labels with object scores 1.
        boxes, labels, scores = gt[0], gt[1], np.ones(gt[1].shape[0], dtype=np.float32)
    return boxes, labels, scores, pairs, rel_scores


def _check_mode(mode: Optional[str]) -> Optional[str]:
    if mode is not None and mode not in MODES:
        raise ValueError(f"Unknown scene-graph mode '{mode}'; expected one of {', '.join(MODES)} (or None).")
    return mode


# ---------------------------------------------------------------------------- chunks of images
def _concat(arrays: List[np.ndarray], dtype, width: Optional[int] = None) -> np.ndarray:
    """Concatenate per-image arrays (1-D, or (n, width)) as ``dtype``."""
    if not arrays:
        return np.zeros((0,) if width is None else (0, width), dtype)
    out = np.concatenate(arrays)
    return (out if width is None else out.reshape(-1, width)).astype(dtype, copy=False)


class _GroundTruthChunk:
    """The GT of ``n`` images concatenated: ``N`` objects, ``R`` relations (global object indices).

    Attributes: ``boxes`` (N,4) float32, ``labels`` (N,), ``num_objects`` / ``num_relations`` (n,),
    ``relations`` (R,3) as given (local object indices), ``image`` (R,), and after :meth:`resolve` (which needs
    valid indices) ``sub`` / ``obj`` (R,) global object indices and ``triplets`` (R,3) [sub label, obj label, pred].
    """

    def __init__(self, items: Sequence[_GroundTruth]):
        n = len(items)
        self.num_objects = np.fromiter((g[1].shape[0] for g in items), np.int64, n)
        self.num_relations = np.fromiter((g[2].shape[0] for g in items), np.int64, n)
        self.boxes = _concat([g[0] for g in items], np.float32, 4)
        self.labels = _concat([g[1] for g in items], np.int64)
        self.relations = _concat([g[2] for g in items], np.int64, 3)
        self.image = np.repeat(np.arange(n), self.num_relations)

    def values_ok(self) -> bool:
        """Every relation index in range and every label / predicate >= 0 (chunk-wide test)."""
        rels = self.relations
        return not (rels.size and (rels.min() < 0 or (rels[:, :2] >= self.num_objects[self.image][:, None]).any())
                    or self.labels.size and self.labels.min() < 0)

    def resolve(self) -> None:
        offset = scene_graph_ops.exclusive_cumsum(self.num_objects)[self.image]
        self.sub, self.obj = self.relations[:, 0] + offset, self.relations[:, 1] + offset
        self.triplets = np.stack([self.labels[self.sub], self.labels[self.obj], self.relations[:, 2]], 1)


class _PredictionChunk:
    """Raw predictions of ``n`` images concatenated: ``M`` objects, ``P`` candidate pairs, ``C`` predicates.

    Attributes: ``boxes`` (M,4) float32, ``labels`` (M,), ``scores`` (M,), ``num_objects`` / ``num_pairs`` /
    ``pair_start`` (n,), ``pairs`` (P,2) local object indices, ``pair_image`` (P,), ``rel_scores`` (P,C) as
    ``scene_graph_ops.ScoreRows``.
    """

    def __init__(self, items: Sequence[_Prediction], rel_scores: scene_graph_ops.ScoreRows):
        n = len(items)
        self.num_objects = np.fromiter((p[1].shape[0] for p in items), np.int64, n)
        self.num_pairs = np.fromiter((p[3].shape[0] for p in items), np.int64, n)
        self.pair_start = scene_graph_ops.exclusive_cumsum(self.num_pairs)
        self.boxes = _concat([p[0] for p in items], np.float32, 4)
        self.labels = _concat([p[1] for p in items], np.int64)
        self.scores = np.concatenate([p[2] for p in items])
        self.pairs = _concat([p[3] for p in items], np.int64, 2)
        self.pair_image = np.repeat(np.arange(n), self.num_pairs)
        self.rel_scores = rel_scores
        self._global_pairs: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def values_ok(self, best: np.ndarray) -> bool:
        """Pair indices in range, labels >= 0, scores finite and >= 0, finite row maxima ``best`` (chunk-wide)."""
        pairs, scores = self.pairs, self.scores
        if pairs.size:
            has = np.flatnonzero(self.num_pairs)
            image_max = np.maximum.reduceat(np.maximum(pairs[:, 0], pairs[:, 1]), self.pair_start[has])
            if pairs.min() < 0 or (image_max >= self.num_objects[has]).any():
                return False
        if self.labels.size and self.labels.min() < 0:
            return False
        return bool(np.isfinite(scores).all() and (scores.size == 0 or scores.min() >= 0) and np.isfinite(best).all())

    def global_pairs(self) -> Tuple[np.ndarray, np.ndarray]:
        """Subject and object ``(P,)`` as indices into the chunk's objects (computed once, after validation)."""
        if self._global_pairs is None:
            offset = np.repeat(scene_graph_ops.exclusive_cumsum(self.num_objects), self.num_pairs)
            # 1-D columns: a (P, 2) + (P, 1) broadcast runs numpy's inner loop 2 elements at a time (~10x slower)
            self._global_pairs = (self.pairs[:, 0] + offset, self.pairs[:, 1] + offset)
        return self._global_pairs


class _ChunkRanking:
    """The ranked lists of a chunk (image-major, best first), as indices into the chunk's pairs.

    ``gc`` / ``gtpair``: (pair (L,), predicate (L,) int64, rank (L,)); ``ng``: (pair, predicate, score, rank);
    ``triplet`` (P,) the graph-constrained score of every pair.
    """

    def __init__(self, pred: _PredictionChunk, best: np.ndarray, max_k: int, ng_k: int,
                 gt: Optional[_GroundTruthChunk] = None):
        ops = scene_graph_ops
        (sub, obj), segment, sizes, starts = pred.global_pairs(), pred.pair_image, pred.num_pairs, pred.pair_start
        s_sub, s_obj = pred.scores[sub], pred.scores[obj]
        # the reference's post-processor: rel * s_sub * s_obj, in this order (float products are not associative)
        self.triplet = triplet = best * s_sub * s_obj
        index, rank = ops.segment_top_k(triplet, segment, sizes, starts, max_k)
        self.gc = (index, _argmax_rows(pred.rel_scores, best, index, segment[index]), rank)
        self.ng = ops.no_graph_constraint_top(s_sub * s_obj, best, pred.rel_scores, triplet, segment, sizes, starts,
                                              ng_k)
        self.gtpair = None
        if gt is not None:  # PredCls / SGCls: the graph-constrained ranking of the pairs that are GT pairs (A@K)
            rels = gt.relations
            width = int(max(pred.pairs.max(initial=0), rels[:, :2].max(initial=0))) + 1
            in_gt = np.isin((segment * width + pred.pairs[:, 0]) * width + pred.pairs[:, 1],
                            (gt.image * width + rels[:, 0]) * width + rels[:, 1])
            idx = np.flatnonzero(in_gt)
            sub_sizes = np.bincount(segment[idx], minlength=sizes.shape[0])
            top, rank = ops.segment_top_k(triplet[idx], segment[idx], sub_sizes, ops.exclusive_cumsum(sub_sizes),
                                          max_k)
            self.gtpair = (idx[top], _argmax_rows(pred.rel_scores, best, idx[top], segment[idx[top]]), rank)

    def lists(self, pred: _PredictionChunk) -> Dict[str, "_Listed"]:
        """name -> listed triplets for :func:`_match_chunk`."""
        sub, obj = pred.global_pairs()
        named = {"gc_rank": self.gc, "ng_rank": (self.ng[0], self.ng[1], self.ng[3])}
        if self.gtpair is not None:
            named["acc_rank"] = self.gtpair
        return {name: (pred.pair_image[p], sub[p], obj[p], label, rank)
                for name, (p, label, rank) in named.items()}

    def records(self, pred: _PredictionChunk, objects: Sequence[_Prediction], max_k: int,
                ng_k: int) -> List[Dict[str, np.ndarray]]:
        """Per-image ranked records (what ``predictions.pth`` stores; see :func:`rank_scene_graph_prediction`)."""
        n = pred.num_pairs.shape[0]
        named = [("", self.gc[0], self.gc[1], self.triplet[self.gc[0]]), ("ng_",) + self.ng[:3]]
        if self.gtpair is not None:
            named.append(("gtpair_", self.gtpair[0], self.gtpair[1], self.triplet[self.gtpair[0]]))
        fields = {}
        for prefix, p, label, score in named:
            # int32 indices: these records are kept for every image (box AP, predictions.pth)
            bounds = np.concatenate([[0], np.cumsum(np.bincount(pred.pair_image[p], minlength=n))]).tolist()
            fields[prefix] = (bounds, pred.pairs[p].astype(np.int32), label.astype(np.int32), score)
        out = []
        for i, (boxes, labels, scores, pairs, _) in enumerate(objects):
            record = {"boxes": boxes, "labels": labels, "scores": scores, "num_pairs": int(pairs.shape[0]),
                      "max_k": int(max_k), "ng_k": int(ng_k)}
            for prefix, (bounds, rel_pairs, rel_labels, score) in fields.items():
                a, b = bounds[i], bounds[i + 1]
                record.update({f"{prefix}rel_pairs": rel_pairs[a:b], f"{prefix}rel_labels": rel_labels[a:b],
                               f"{prefix}triplet_scores": score[a:b]})
            out.append(record)
        return out


def _argmax_rows(rel_scores: scene_graph_ops.ScoreRows, best: np.ndarray, rows: np.ndarray,
                 image: np.ndarray) -> np.ndarray:
    """Best predicate (the first maximum, as numpy's argmax) of the selected rows (of images ``image``, image-major),
    given the row maxima ``best``.

    The first column equal to the maximum is numpy's argmax; finding it in a boolean matrix is ~2x faster.
    """
    if rows.shape[0] == 0:
        return np.zeros(0, np.int64)
    return (rel_scores.take(rows, image) == best[rows][:, None]).argmax(1)


# ---------------------------------------------------------------------------- stage 1: ranking (one image)
def rank_scene_graph_prediction(prediction: Mapping, *, num_predicates: int, max_k: int = 100, ng_k: int = 100,
                                mode: Optional[str] = None, groundtruth: Optional[Mapping] = None,
                                where: str = "prediction") -> Dict[str, np.ndarray]:
    """Turn one raw prediction into its *ranked record* (what the metrics and ``predictions.pth`` need).

    The evaluator ranks chunks of images at once (``SceneGraphRecallAccumulator``); this is the same code on a
    chunk of one image.

    Args:
        prediction: ``{boxes (N,4), labels (N,), scores (N,), rel_pairs (P,2), rel_scores (P,num_predicates)}``;
            numpy or tensors, 0-based, any pair order.
        max_k: length of the graph-constrained list (``<= 0``: all P pairs).
        ng_k: length of the no-graph-constraint list (the reference uses 100; ``<= 0``: all combinations).
        mode: ``"predcls"`` replaces boxes / labels / scores by the GT's (scores 1) as the reference does;
            ``"predcls"`` / ``"sgcls"`` also build the GT-pair list for ``A@K``. ``None`` uses the prediction as is.
        groundtruth: the image's GT dict; required for ``predcls`` / ``sgcls``.

    Returns:
        dict with ``boxes``, ``labels``, ``scores`` (the objects used), ``num_pairs`` (P), ``max_k``, ``ng_k``,
        ``rel_pairs`` (L,2) / ``rel_labels`` (L,) / ``triplet_scores`` (L,) (graph-constrained, best first),
        ``ng_rel_pairs`` / ``ng_rel_labels`` / ``ng_triplet_scores`` and, for PredCls / SGCls, ``gtpair_*``.
    """
    mode = _check_mode(mode)
    gt = _EMPTY_GT
    if mode in ("predcls", "sgcls"):
        if groundtruth is None:
            raise ValueError(f"{where}: mode '{mode}' needs the image's ground truth (GT pairs / GT boxes).")
        gt = _groundtruth_arrays(groundtruth, where)
        _check_groundtruth_values(*gt, where)
    pred = _prepare_prediction(prediction, gt, num_predicates, mode, where)
    _check_prediction_values(*pred, where)
    chunk = _PredictionChunk([pred], scene_graph_ops.ScoreRows([np.ascontiguousarray(pred[4])], [0]))
    gt_chunk = None
    if mode in ("predcls", "sgcls"):
        gt_chunk = _GroundTruthChunk([gt])
    ranking = _ChunkRanking(chunk, chunk.rel_scores.row_max(), max_k, ng_k, gt_chunk)
    return ranking.records(chunk, [pred], max_k, ng_k)[0]


# ---------------------------------------------------------------------------- stage 2: matching
_LISTS = (("gc_rank", ""), ("ng_rank", "ng_"), ("acc_rank", "gtpair_"))  # stat name, ranked-record key prefix
_Listed = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # image, sub, obj, predicate, rank (L,)


def _match_chunk(gt: _GroundTruthChunk, boxes: np.ndarray, labels: np.ndarray, lists: Mapping[str, _Listed],
                 iou_threshold: float) -> Dict[str, np.ndarray]:
    """Per-GT-relation statistics of a chunk: ``gt_triplets`` (R,3) and, per list, the first-hit rank (R,).

    ``boxes`` (M,4) float32 / ``labels`` (M,) are the chunk's predicted objects; ``lists`` index them globally. All
    lists are matched in one pass (their entries concatenated, tagged with the list).
    """
    names = list(lists)
    image, sub, obj, pred, rank = (np.concatenate([lists[n][i] for n in names]) for i in range(5))
    group = np.repeat(np.arange(len(names)), [lists[n][0].shape[0] for n in names])
    base_obj = int(max(gt.labels.max(initial=0), labels.max(initial=0))) + 1
    base_pred = int(max(gt.relations[:, 2].max(initial=0), pred.max(initial=0))) + 1
    encode = lambda image, sub, obj, pred: ((image * base_obj + sub) * base_obj + obj) * base_pred + pred  # noqa: E731
    trip = gt.triplets
    first = scene_graph_ops.first_hit_ranks(
        encode(gt.image, trip[:, 0], trip[:, 1], trip[:, 2]), gt.boxes[gt.sub], gt.boxes[gt.obj],
        encode(image, labels[sub], labels[obj], pred), sub, obj, rank, boxes, iou_threshold, group, len(names))
    stats = {"gt_triplets": trip}
    stats.update(zip(names, first))
    return stats


def _lists_from_records(records: Sequence[Mapping]) -> Tuple[np.ndarray, np.ndarray, Dict[str, _Listed]]:
    """Objects (boxes (M,4) float32, labels (M,)) and listed triplets of ranked records, concatenated."""
    n = len(records)
    boxes = _concat([np.asarray(r["boxes"]) for r in records], np.float32, 4)
    labels = _concat([np.asarray(r["labels"]) for r in records], np.int64)
    offset = scene_graph_ops.exclusive_cumsum(np.array([len(r["labels"]) for r in records], dtype=np.int64))
    lists = {}
    for name, prefix in _LISTS:
        if not all(f"{prefix}rel_pairs" in r for r in records):
            continue
        sizes = np.array([len(r[f"{prefix}rel_labels"]) for r in records], dtype=np.int64)
        image = np.repeat(np.arange(n), sizes)
        pairs = _concat([np.asarray(r[f"{prefix}rel_pairs"]) for r in records], np.int64, 2) + offset[image][:, None]
        rank = np.arange(image.shape[0]) - np.repeat(scene_graph_ops.exclusive_cumsum(sizes), sizes)
        lists[name] = (image, pairs[:, 0], pairs[:, 1],
                       _concat([np.asarray(r[f"{prefix}rel_labels"]) for r in records], np.int64), rank)
    return boxes, labels, lists


# ---------------------------------------------------------------------------- accumulation
class _Pending:
    """Images queued for the next chunk: keys, error-message prefixes, GT and prediction (or ranked record)."""

    def __init__(self, signature=None):
        self.signature = signature  # ("raw", rel_scores dtype, scores dtype) or ("ranked",): a chunk is homogeneous
        self.keys: List[int] = []
        self.wheres: List[str] = []
        self.gts: List[_GroundTruth] = []
        self.preds: List = []  # _Prediction (rel_scores: a view into the chunk buffer or the caller's array) or records
        self.scores = 0  # predicate scores queued, copied or referenced: the chunk's memory
        self.buffer_rows = 0  # rows of the shared buffer in use
        self.pieces: List[list] = []  # [array, start row, stop row, first image]: the chunk's rows, in order


class SceneGraphRecallAccumulator:
    """Collects per-image first-hit ranks and turns them into every metric of the module docstring.

    Images are identified by an integer ``key`` that also fixes the averaging order (use the dataset index: the
    reference averages in dataset order, and floating-point sums depend on order). Adding the same key twice keeps the
    last record.

    Added images are queued and ranked and matched *a chunk at a time* (``scene_graph_ops``): at most ``_BATCH``
    images and ``_CHUNK_SCORES`` predicate scores (8 MiB of float32), so memory is bounded by one chunk plus O(number
    of GT relations). Inputs are copied, except the ``rel_scores`` of an image with more than ``_COPY_SCORES`` scores,
    which is referenced until its chunk is processed (copying it would cost as much as ranking it): do not modify
    such an array in place before the next ``records`` / ``summarize()``. Shapes are checked when an image is added;
    value errors (indices out of range, NaN, negative scores) are raised when its chunk is processed, naming the image.

    Args:
        gc_length / ng_length: length of the ranked graph-constrained / no-graph-constraint lists per image (default
            ``max(ks)``; ``gc_length <= 0``: every pair).
        keep_ranked: also keep every image's ranked record (``ranked_records``), e.g. for box AP or saving.
    """

    def __init__(self, *, num_predicates: int, ks: Sequence[int] = (20, 50, 100), iou_threshold: float = 0.5,
                 mode: Optional[str] = None, gc_length: Optional[int] = None, ng_length: Optional[int] = None,
                 keep_ranked: bool = False):
        if num_predicates <= 0:
            raise ValueError(f"num_predicates must be positive, got {num_predicates}.")
        ks = tuple(int(k) for k in ks)
        if not ks or min(ks) <= 0:
            raise ValueError(f"ks must be positive integers, got {ks}.")
        self.num_predicates = int(num_predicates)
        self.ks = ks
        self.iou_threshold = float(iou_threshold)
        self.mode = _check_mode(mode)
        self.gc_length = max(ks) if gc_length is None else int(gc_length)
        self.ng_length = max(ks) if ng_length is None else int(ng_length)
        self.keep_ranked = bool(keep_ranked)
        # per-GT-relation statistics of every processed chunk, and key -> (chunk, start, stop) or None (skipped)
        self._chunks: List[Dict[str, np.ndarray]] = []
        self._index: Dict[int, Optional[Tuple[int, int, int]]] = {}
        self._ranked: Dict[int, Dict[str, np.ndarray]] = {}
        self._pending = _Pending()
        self._buffer: Optional[np.ndarray] = None  # the chunk's rel_scores, reused from chunk to chunk

    # chunk limits: per-chunk numpy overhead (~0.3 ms) is amortised over up to _BATCH images; _CHUNK_SCORES bounds
    # the memory; scores of images up to _COPY_SCORES are copied into one buffer (cheap while they fit in cache)
    _BATCH = 512
    _CHUNK_SCORES = 1 << 21
    _COPY_SCORES = 1 << 16

    @property
    def records(self) -> Dict[int, Optional[Dict[str, np.ndarray]]]:
        """key -> per-GT-relation statistics (``None`` for skipped images), after processing queued images; a new
        dict (for gathering across processes: ``merge`` takes it)."""
        self._flush()
        return {key: None if loc is None else {k: v[loc[1]:loc[2]] for k, v in self._chunks[loc[0]].items()}
                for key, loc in self._index.items()}

    def num_images(self) -> int:
        """Images added (each key once), after processing queued images."""
        self._flush()
        return len(self._index)

    @property
    def ranked_records(self) -> Dict[int, Dict[str, np.ndarray]]:
        """key -> ranked record of every added image (``keep_ranked=True`` only)."""
        self._flush()
        return self._ranked

    @property
    def max_k(self) -> int:
        """The largest K evaluated."""
        return max(self.ks)

    def add(self, groundtruth: Mapping, prediction: Mapping, key: Optional[int] = None, where: str = "") -> None:
        """Queue a raw prediction (see :func:`rank_scene_graph_prediction` for the format) and its GT."""
        key = self._next_key() if key is None else int(key)
        where = where or f"image {key}"
        gt = _groundtruth_arrays(groundtruth, where)
        pred = _prepare_prediction(prediction, gt, self.num_predicates, self.mode, where)
        rel_scores = pred[4]
        signature = ("raw", rel_scores.dtype, pred[2].dtype)
        self._start(signature)
        if self._pending.keys and self._pending.scores + rel_scores.size > self._CHUNK_SCORES:
            self._flush()
        pending, image = self._pending, len(self._pending.keys)
        if rel_scores.size <= min(self._COPY_SCORES, self._CHUNK_SCORES):  # (so the buffer always has room)
            buffer = self._chunk_buffer(rel_scores.dtype)
            start = pending.buffer_rows
            stop = pending.buffer_rows = start + rel_scores.shape[0]
            view = buffer[start:stop]
            view[...] = rel_scores  # the copy doubles as the chunk's concatenation
            if pending.pieces and pending.pieces[-1][0] is buffer and pending.pieces[-1][2] == start:
                pending.pieces[-1][2] = stop  # extends the buffer piece of the previous image
            else:
                pending.pieces.append([buffer, start, stop, image])
        else:
            view = np.ascontiguousarray(rel_scores)  # referenced, not copied (see the class docstring)
            pending.pieces.append([view, 0, view.shape[0], image])
        pending.scores += rel_scores.size
        self._enqueue(key, where, gt, pred[:4] + (view,))

    def _chunk_buffer(self, dtype) -> np.ndarray:
        """The ``(_CHUNK_SCORES // num_predicates, num_predicates)`` buffer of small images' scores, kept between
        chunks (allocating it per chunk costs page faults)."""
        rows = self._CHUNK_SCORES // self.num_predicates
        if self._buffer is None or self._buffer.dtype != dtype or self._buffer.shape[0] != rows:
            self._buffer = np.empty((rows, self.num_predicates), dtype=dtype)
        return self._buffer

    def add_ranked(self, groundtruth: Mapping, ranked: Mapping, key: Optional[int] = None, where: str = "") -> None:
        """Queue a ranked record (e.g. read from ``predictions.pth``) after checking it against its GT."""
        key = self._next_key() if key is None else int(key)
        where = where or f"image {key}"
        gt = _groundtruth_arrays(groundtruth, where)
        self._check_ranked(ranked, where)
        self._start(("ranked",))
        self._enqueue(key, where, gt, ranked)

    def _start(self, signature) -> None:
        """Begin a chunk of inputs like ``signature`` (a chunk mixes no dtypes: the products must stay as they were)."""
        if self._pending.signature != signature:
            self._flush()
            self._pending.signature = signature

    def _enqueue(self, key: int, where: str, gt: _GroundTruth, pred) -> None:
        pending = self._pending
        pending.keys.append(key)
        pending.wheres.append(where)
        pending.gts.append(gt)
        pending.preds.append(pred)
        if len(pending.keys) >= self._BATCH or pending.scores >= self._CHUNK_SCORES:
            self._flush()

    def _next_key(self) -> int:
        return len(self._index) + len(self._pending.keys)

    def _flush(self) -> None:
        """Rank (raw inputs) and match the queued chunk; store per-image statistics under their keys."""
        pending = self._pending
        if not pending.keys:
            return
        self._pending = _Pending(pending.signature)
        gt = _GroundTruthChunk(pending.gts)
        if pending.signature[0] == "raw":
            rel_scores = scene_graph_ops.ScoreRows([array[a:b] for array, a, b, _ in pending.pieces],
                                                   [first for *_, first in pending.pieces])
            pred = _PredictionChunk(pending.preds, rel_scores)
            best = rel_scores.row_max()
            if not (gt.values_ok() and pred.values_ok(best)):
                self._raise_first_invalid(pending)
            gt.resolve()
            ranking = _ChunkRanking(pred, best, self.gc_length, self.ng_length,
                                    gt if self.mode in ("predcls", "sgcls") else None)
            if self.keep_ranked:
                ranked = ranking.records(pred, pending.preds, self.gc_length, self.ng_length)
            boxes, labels, lists = pred.boxes, pred.labels, ranking.lists(pred)
        else:
            if not gt.values_ok():
                self._raise_first_invalid(pending)
            gt.resolve()
            ranked = pending.preds
            boxes, labels, lists = _lists_from_records(ranked)
        stats = _match_chunk(gt, boxes, labels, lists, self.iou_threshold)
        # images without GT relations are skipped, as in the reference; an image with GT relations but no candidate
        # pair counts, its GT relations unmatched (no listed triplet of that image: every rank is NOT_HIT)
        evaluated = (gt.num_relations > 0).tolist()
        ends = np.cumsum(gt.num_relations).tolist()
        chunk = len(self._chunks)
        self._chunks.append(stats)
        for key, ok, start, end in zip(pending.keys, evaluated, [0] + ends[:-1], ends):
            self._index[key] = (chunk, start, end) if ok else None  # in order, so the last add of a key wins
        if self.keep_ranked:
            self._ranked.update(zip(pending.keys, ranked))
        if not self._pending.keys:
            self._buffer = None  # nothing queued (the end of a stream, or a pause): give the chunk buffer back

    def _raise_first_invalid(self, pending: _Pending) -> None:
        """Re-check the chunk image by image and raise the first image's error (the chunk-wide test failed)."""
        for where, gt, pred in zip(pending.wheres, pending.gts, pending.preds):
            _check_groundtruth_values(*gt, where)
            if pending.signature[0] == "raw":
                _check_prediction_values(*pred, where)
        raise AssertionError("chunk validation failed but no image is invalid")  # unreachable: same conditions

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
        """Add records gathered from another process (see ``records``)."""
        self._flush()
        for key, record in records.items():
            if record is None:
                self._index[key] = None
            else:
                self._chunks.append(dict(record))
                self._index[key] = (len(self._chunks) - 1, 0, record["gc_rank"].shape[0])

    # ------------------------------------------------------------------ summaries
    def _stacked(self):
        """The statistics of every evaluated image concatenated in key order (the reference's averaging order), with
        ``image`` (R,) the image of each GT relation: one gather over all chunks."""
        self._flush()
        locations = [self._index[k] for k in sorted(self._index) if self._index[k] is not None]
        if not locations:
            return None
        chunk, start, stop = np.array(locations, dtype=np.int64).reshape(-1, 3).T
        used = [self._chunks[c] for c in np.unique(chunk).tolist()]
        names = ["gt_triplets", "gc_rank", "ng_rank"] + (["acc_rank"] if all("acc_rank" in c for c in used) else [])
        chunk_start = scene_graph_ops.exclusive_cumsum(
            np.array([c["gc_rank"].shape[0] for c in self._chunks], dtype=np.int64))
        sizes = stop - start
        rows = np.repeat(chunk_start[chunk] + start - scene_graph_ops.exclusive_cumsum(sizes), sizes) + \
            np.arange(int(sizes.sum()))
        out = {"image": np.repeat(np.arange(len(locations)), sizes), "num_images": len(locations)}
        for name in names:
            out[name] = np.concatenate([c[name] for c in self._chunks])[rows]
        out["gt_triplets"] = out["gt_triplets"].reshape(-1, 3)
        return out

    def num_evaluated_images(self) -> int:
        """Images that count: those with GT relations (with or without candidate pairs)."""
        self._flush()
        return sum(loc is not None for loc in self._index.values())

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
            logger.warning("No image with GT relations: every scene-graph metric is NaN.")
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

    def _predicate_cells(self, data) -> Tuple[np.ndarray, int, np.ndarray, np.ndarray, List[int]]:
        """The (image, predicate) cells of the GT relations, grouped by predicate (cached in ``data``: they do not
        depend on K or the list): ``cell`` (R,), the number of cells, the present cells in predicate-then-image order,
        their GT counts and the group bounds."""
        if "cells" not in data:
            c = self.num_predicates
            predicates = data["gt_triplets"][:, 2]
            if predicates.size and (predicates.min() < 0 or predicates.max() >= c):
                raise ValueError(f"GT predicates span [{predicates.min()}, {predicates.max()}] but "
                                 f"num_predicates={c}.")
            cell = data["image"] * c + predicates
            size = data["num_images"] * c
            counts = np.bincount(cell, minlength=size)
            present = np.flatnonzero(counts)  # image-major: per predicate, the values stay in image order
            predicate_of = present % c
            order = np.argsort(predicate_of, kind="stable")
            bounds = np.searchsorted(predicate_of[order], np.arange(c + 1)).tolist()
            data["cells"] = (cell, size, present[order], counts[present[order]], bounds)
        return data["cells"]

    def _per_predicate_from(self, data, rank_key: str, k: int) -> List[float]:
        cell, size, present, counts, bounds = self._predicate_cells(data)
        hits = np.bincount(cell, weights=(data[rank_key] < k).astype(np.float64), minlength=size)
        grouped = hits[present] / counts  # per predicate, each image's recall of it, in image order
        # np.add.reduce(x) / len(x) is np.mean(x) bit for bit (mean = umr_sum / count), without mean's overhead
        return [float(np.add.reduce(grouped[a:b]) / (b - a)) if b > a else 0.0 for a, b in zip(bounds, bounds[1:])]

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

    ``ks`` records the K the evaluation used (the default of ``tools/evaluate_predictions.py``); the dataset's options
    in effect (``DATASETS.VG.*`` filters ...) are recorded too, so a re-evaluation reads the same GT.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    group = DatasetCatalog.option_group_of(dataset_name)
    options = {group: dict(DatasetCatalog.options(group))} if group else {}
    payload = {"format": RANKED_FORMAT, "mode": mode, "dataset": dataset_name, "ks": [int(k) for k in ks],
               "dataset_options": options, "predictions": records}
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_predictions_payload(path: str):
    """The raw content of a ``predictions.pth`` (image or video SGG), loaded with ``weights_only`` (numpy arrays
    allowed), or a clear error when the file is missing or unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Predictions file '{path}' does not exist (written as inference/<dataset>/"
                                "predictions.pth when TEST.SAVE_PREDICTIONS is True).")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"Cannot read predictions file '{path}' (corrupt, or not written by sgg): {e}") from e


def load_predictions_file(path: str, data=None) -> dict:
    """Read an image SGG predictions file: ``{"format", "mode", "dataset", "ks", "predictions": [...]}``.

    Accepts files written by :class:`SceneGraphEvaluator` (ranked records) and, for hand-made files, a plain list of
    raw prediction dicts (each with ``image_id``), returned with ``format`` ``"raw"``. Loads with ``weights_only``;
    ``data`` = the file's content when already read by :func:`read_predictions_payload`.
    """
    if data is None:
        data = read_predictions_payload(path)
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
        self._accumulator = SceneGraphRecallAccumulator(
            num_predicates=self._num_predicates, ks=self._ks, iou_threshold=self._iou_threshold, mode=self._mode,
            gc_length=self._max_k, ng_length=self._ng_k, keep_ranked=self._save_predictions or self._box_ap)
        self._image_ids: Dict[int, object] = {}  # dataset index -> image_id of every processed image
        self._objects: Dict[int, dict] = {}  # dataset index -> ranked record (+ image_id), set by evaluate()

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
        self._accumulator.add(gt, prediction, key=index, where=f"dataset '{self._dataset_name}' image_id {image_id}")
        self._image_ids[index] = image_id

    def add_ranked_prediction(self, image_id, ranked: Mapping) -> None:
        """Evaluate one ranked record (e.g. from a saved ``predictions.pth``)."""
        index, gt = self._groundtruth(image_id)
        where = f"dataset '{self._dataset_name}' image_id {image_id}"
        self._accumulator.add_ranked(gt, ranked, key=index, where=where)
        self._image_ids[index] = image_id

    def _ranked_objects(self) -> Dict[int, dict]:
        """dataset index -> ranked record with its ``image_id`` first (for box AP and predictions.pth)."""
        objects = {}
        for index, ranked in self._accumulator.ranked_records.items():
            record = {"image_id": self._image_ids[index]}
            record.update({k: v for k, v in ranked.items() if k != "image_id"})
            objects[index] = record
        return objects

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        """Gather, compute, report. Returns ``{}`` on non-main processes."""
        self._objects = self._ranked_objects()
        if self._distributed and comm.get_world_size() > 1:
            comm.synchronize()
            parts = comm.gather((self._accumulator.records, self._objects), dst=0)
            if not comm.is_main_process():
                return {}
            for records, objects in parts:
                self._accumulator.merge(records)
                self._objects.update(objects)
        if not self._accumulator.num_images():
            logger.warning("SceneGraphEvaluator on '%s' received no predictions.", self._dataset_name)
            return {}
        num_dataset = len(self._gt_index) if self._gt_index is not None else 0
        if num_dataset and self._accumulator.num_images() != num_dataset:
            logger.warning("Evaluated %d of the %d images of '%s'.", self._accumulator.num_images(), num_dataset,
                           self._dataset_name)
        metrics = self._accumulator.summarize(self._zeroshot)
        logger.info("Scene-graph evaluation (%s) on %d images with GT relations (of %d received).",
                    self._mode, self._accumulator.num_evaluated_images(), self._accumulator.num_images())
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
