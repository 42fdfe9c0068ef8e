"""Video scene graph evaluation on Action Genome: STTran's ``evaluation_recall.py`` protocol (+ TEMPURA's mR@K).

Protocol (DESIGN.md §5), per frame:

* The 26 predicates are split into three groups: attention ``[0:3]``, spatial ``[3:9]``, contacting ``[9:26]``.
  Attention and contacting triplets are ``(person, object, predicate)``, spatial ones ``(object, person, predicate)``.
* A prediction frame holds boxes / labels / scores, ``pairs (P, 2) = [person, object]`` and per-pair probabilities
  ``attention (P, 3)`` (softmax), ``spatial (P, 6)`` and ``contacting (P, 17)`` (sigmoid).
* **with** constraint: per pair, the top-1 predicate of each group (3 triplets per pair).
  **semi**: top-1 attention predicate, plus every spatial / contacting predicate with probability ``> semi_threshold``.
  **no**: every (pair, predicate) of the pair's groups; the 100 best (by score) are kept.
* A triplet's score is ``score(subject) * score(object) * p(predicate)``; triplets are ranked by it.
* A GT triplet is recalled at K when one of the K best predicted triplets has the same subject class, object class
  and predicate and both boxes overlap the GT boxes with IoU >= ``iou_threshold``, IoU computed in the reference's
  +1-pixel convention (``(x2 - x1 + 1) * (y2 - y1 + 1)``) and in float64.
* ``R@K``: recall of GT triplets per frame, averaged over frames. ``mR@K`` has two variants (``mr_variant``):
  ``"tempura"`` (default): hits and GT counts are summed per predicate over all frames, ``hits / (count + 1e-10)`` is
  averaged over all 26 predicates (absent ones count 0). ``"stket"`` (STKET's ``mR``): per frame and predicate
  ``hits / (count + 1e-10)`` (0 for a predicate absent from the frame), averaged over frames, then over the 26
  predicates; the aggregate figure is then also reported as ``avgR@K`` (STKET's name for TEMPURA's mR).
* Models with several prediction branches (STKET: spatial / temporal / ensemble) put each branch's probabilities in
  the frame as ``<branch>/attention`` etc.; the evaluator's ``branches`` scores each like the plain keys.
* All metrics are returned in **percent** (0-100), like the published tables.

The reference loops over frames in Python; :func:`evaluate_video_scene_graphs` does the whole dataset at once with
sorted-array joins (see ``tools/benchmarks/video_eval.py`` for the measured ratio against
:func:`evaluate_video_scene_graphs_per_frame`, a straightforward per-frame implementation of the same protocol that is
also the cross-check in the tests).

Reference details reproduced on purpose: the ``with`` predicate is the argmax over the zero-padded 26-way row (a group
whose probabilities are all 0 yields predicate 0); ``semi`` keeps a row only when the sum of its group's first two
probabilities is > 0; ties in score rank the later triplet (in the reference's row order) first, which is what the
reference's ``argsort()[::-1]`` gives under a stable sort (numpy's default sort is not stable above 16 elements, so the
reference itself is unspecified on exact ties). Frames without GT relations (the reference would fail on them) are
skipped and counted in ``num_frames_skipped``.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from sgg.config import configurable
from sgg.data.catalog import DatasetCatalog
from sgg.structures.boxes import paired_iou
from sgg.utils import comm

from .build import EVALUATOR_REGISTRY
from .evaluator import DatasetEvaluator
from .scene_graph import read_predictions_payload

__all__ = [
    "evaluate_video_scene_graphs", "evaluate_video_scene_graphs_per_frame", "VideoSceneGraphEvaluator",
    "CONSTRAINTS", "PREDICATE_GROUPS", "NUM_PREDICATES", "NO_CONSTRAINT_TOPK", "MR_VARIANTS",
    "VIDEO_PREDICTIONS_FORMAT", "save_video_predictions_file", "load_video_predictions_file",
]

logger = logging.getLogger(__name__)

CONSTRAINTS = ("with", "semi", "no")
NUM_PREDICATES = 26
NO_CONSTRAINT_TOPK = 100  # the reference keeps at most 100 triplets per frame without constraint
MR_EPS = 1e-10  # TEMPURA divides hits by (count + 1e-10)
MR_VARIANTS = ("tempura", "stket")  # aggregate over frames / STKET's per-frame zero-filled mean (+ avgR = aggregate)
# (prediction key, first predicate index, number of predicates, subject is the object box)
PREDICATE_GROUPS = (("attention", 0, 3, False), ("spatial", 3, 6, True), ("contacting", 9, 17, False))
_PREDICTION_KEYS = ("boxes", "labels", "scores", "pairs", "attention", "spatial", "contacting")
_GROUNDTRUTH_KEYS = ("boxes", "labels", "relations")
# Optional per-pair outputs kept when a model gives them (TEMPURA: mean aleatoric + epistemic uncertainty, and the
# flag of pairs above MODEL.TEMPURA.UNCERTAINTY_THRESHOLD); summarised under ``uncertainty/*`` in the results.
_OPTIONAL_PAIR_KEYS = ("uncertainty", "uncertain")
VIDEO_PREDICTIONS_FORMAT = "sgg-video-sgg-v1"  # the "format" of a saved video predictions.pth


# ----------------------------------------------------------------------------------------------- input handling
def _as_numpy(x, dtype=None) -> np.ndarray:
    """Tensor / array / list -> numpy (tensors are moved to CPU once)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.cpu().numpy()
    x = np.asarray(x)
    return x if dtype is None else x.astype(dtype, copy=False)


def _rows(array: np.ndarray, cols: int, what: str, key: str, index: int) -> np.ndarray:
    """``array`` as ``(N, cols)`` (``cols == 0``: as ``(N,)``); empty input is accepted in any shape."""
    if array.size == 0:
        return array.reshape((0, cols) if cols else (0,))
    if (cols and array.ndim == 2 and array.shape[1] == cols) or (not cols and array.ndim == 1):
        return array
    want = f"(N, {cols})" if cols else "(N,)"
    raise ValueError(f"{what} frame {index}: '{key}' must have shape {want}, got {tuple(array.shape)}.")


def _stack_field(frames: Sequence[Mapping], key: str, cols: int, what: str, dtype) -> tuple:
    """Concatenate ``frames[i][key]`` over frames -> ``(array (sum N, cols) or (sum N,), rows per frame (F,))``.

    Fast path: one ``np.concatenate`` / ``torch.cat`` (a single device->host copy for tensors). When that fails or
    the result has the wrong shape, every frame is normalised on its own so the error names the frame.
    """
    try:
        values = [frame[key] for frame in frames]
    except (KeyError, TypeError):
        for i, frame in enumerate(frames):
            if not isinstance(frame, Mapping) or key not in frame:
                raise KeyError(f"{what} frame {i} lacks '{key}'; a frame needs "
                               f"{list(_PREDICTION_KEYS if what == 'Prediction' else _GROUNDTRUTH_KEYS)} "
                               "(see docs/action_genome.md).") from None
        raise
    empty = np.zeros((0, cols) if cols else (0,), dtype)
    if not values:
        return empty, np.zeros(0, np.int64)
    try:
        if isinstance(values[0], torch.Tensor):
            joined = _as_numpy(torch.cat(values))
        else:
            joined = np.concatenate(values)
        lengths = np.fromiter(map(len, values), np.int64, len(values))
        ok = joined.ndim == (2 if cols else 1) and (not cols or joined.shape[1] == cols) and \
            int(lengths.sum()) == joined.shape[0]
    except (ValueError, TypeError, RuntimeError, IndexError):
        ok = False
    if not ok:  # slow path: mixed types, empty arrays of another shape, or a malformed frame (raises here)
        arrays = [_rows(_as_numpy(v), cols, what, key, i) for i, v in enumerate(values)]
        lengths = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
        joined = np.concatenate(arrays)
    return (joined if dtype is None else joined.astype(dtype, copy=False)), lengths


def _check_lengths(lengths: np.ndarray, expected: np.ndarray, what: str, key: str, other: str) -> None:
    bad = np.flatnonzero(lengths != expected)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{what} frame {i}: '{key}' has {int(lengths[i])} rows but '{other}' has "
                         f"{int(expected[i])}; they must match.")


def _check_labels(labels: np.ndarray, lengths: np.ndarray, what: str) -> None:
    if labels.size and labels.min() < 0:
        frame = int(np.searchsorted(np.cumsum(lengths), int(np.flatnonzero(labels < 0)[0]), side="right"))
        raise ValueError(f"{what} frame {frame}: 'labels' must be 0-based class ids (person = 0); found a negative "
                         "one.")


def _score_dtype(scores: np.ndarray) -> np.dtype:
    # The reference multiplies object scores in their own dtype (float32 for torch outputs) in its first stage.
    return np.float64 if scores.dtype == np.float64 else np.float32


class _Groundtruth:
    """All GT frames concatenated: boxes (float64) and relations with global box indices."""

    def __init__(self, frames: Sequence[Mapping]):
        self.num_frames = len(frames)
        self.boxes, n_boxes = _stack_field(frames, "boxes", 4, "Ground-truth", np.float64)
        self.labels, n_labels = _stack_field(frames, "labels", 0, "Ground-truth", np.int64)
        _check_lengths(n_labels, n_boxes, "Ground-truth", "labels", "boxes")
        _check_labels(self.labels, n_labels, "Ground-truth")
        rel, n_rels = _stack_field(frames, "relations", 3, "Ground-truth", np.int64)
        self.rel_frame = np.repeat(np.arange(self.num_frames), n_rels)
        _check_indices(rel[:, :2], n_boxes[self.rel_frame], self.rel_frame, "Ground-truth", "relations")
        if rel.size and (rel[:, 2].min() < 0 or rel[:, 2].max() >= NUM_PREDICATES):
            bad = int(self.rel_frame[np.flatnonzero((rel[:, 2] < 0) | (rel[:, 2] >= NUM_PREDICATES))[0]])
            raise ValueError(f"Ground-truth frame {bad}: predicate ids must be in [0, {NUM_PREDICATES}) "
                             "(attention 0-2, spatial 3-8, contacting 9-25).")
        box_offset = np.cumsum(n_boxes) - n_boxes
        self.rel_sub = rel[:, 0] + box_offset[self.rel_frame]
        self.rel_obj = rel[:, 1] + box_offset[self.rel_frame]
        self.rel_pred = rel[:, 2]
        self.rels_per_frame = n_rels


class _Predictions:
    """All prediction frames concatenated; pair indices made global."""

    def __init__(self, frames: Sequence[Mapping]):
        self.num_frames = len(frames)
        self._frames = frames
        self.boxes, n_boxes = _stack_field(frames, "boxes", 4, "Prediction", np.float64)
        self.labels, n_labels = _stack_field(frames, "labels", 0, "Prediction", np.int64)
        _check_lengths(n_labels, n_boxes, "Prediction", "labels", "boxes")
        _check_labels(self.labels, n_labels, "Prediction")
        scores, n_scores = _stack_field(frames, "scores", 0, "Prediction", None)
        _check_lengths(n_scores, n_boxes, "Prediction", "scores", "boxes")
        self.scores = scores.astype(_score_dtype(scores), copy=False)
        pairs, n_pairs = _stack_field(frames, "pairs", 2, "Prediction", np.int64)
        self.pair_frame = np.repeat(np.arange(self.num_frames), n_pairs)
        _check_indices(pairs, n_boxes[self.pair_frame], self.pair_frame, "Prediction", "pairs")
        box_offset = np.cumsum(n_boxes) - n_boxes
        self.pairs = pairs + box_offset[self.pair_frame][:, None]
        # Position of each pair inside its frame, for the reference's row order (tie-breaking).
        self.pair_local = np.arange(len(pairs)) - (np.cumsum(n_pairs) - n_pairs)[self.pair_frame]
        self.pairs_per_frame = n_pairs
        self.probs = self._group_probs("")

    def _group_probs(self, prefix: str) -> Dict[str, np.ndarray]:
        probs_of = {}
        for key, _, size, _ in PREDICATE_GROUPS:
            # Kept in the model's float dtype: the constraints convert only the values they use to float64.
            probs, n_rows = _stack_field(self._frames, prefix + key, size, "Prediction", None)
            probs_of[key] = probs if probs.dtype in (np.float32, np.float64) else probs.astype(np.float32)
            _check_lengths(n_rows, self.pairs_per_frame, "Prediction", prefix + key, "pairs")
        return probs_of

    def branch(self, name: str) -> "_Predictions":
        """The same boxes and pairs with branch ``name``'s probabilities (frame keys ``<name>/attention`` ...)."""
        other = copy.copy(self)
        other.probs = self._group_probs(f"{name}/")
        return other


def _check_indices(index_pairs: np.ndarray, limit: np.ndarray, frame_of: np.ndarray, what: str, key: str) -> None:
    """Raise naming the first frame whose ``key`` indexes a box that does not exist."""
    if index_pairs.size == 0:
        return
    bad = (index_pairs < 0).any(1) | (index_pairs >= limit[:, None]).any(1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} frame {int(frame_of[row])}: '{key}' row {index_pairs[row].tolist()} refers to a box "
                         f"that does not exist (the frame has {int(limit[row])} boxes).")


# ------------------------------------------------------------------------------------------ candidate triplets
class _Triplets:
    """Predicted triplets laid out frame by frame, each frame's in the reference's order.

    Arrays: ``frame``, ``sub`` / ``obj`` (global box indices), ``pred`` (predicate), ``score``; ``counts`` / ``starts``
    (F,) give each frame's slice. The reference's order within a frame is what decides ties.
    """

    def __init__(self, frame, sub, obj, pred, score, num_frames: int):
        self.frame, self.sub, self.obj, self.pred, self.score = frame, sub, obj, pred, score
        self.counts = np.bincount(frame, minlength=num_frames) if len(frame) else np.zeros(num_frames, np.int64)
        self.starts = np.cumsum(self.counts) - self.counts

    @classmethod
    def from_groups(cls, parts: List[tuple], num_frames: int) -> "_Triplets":
        """Concatenate per-group parts ``(frame, sub, obj, pred, score)``, each already in reference order, and
        interleave them frame by frame (group after group inside a frame, as the reference's rows are)."""
        fields = [np.concatenate([part[i] for part in parts]) for i in range(5)]
        # A stable sort of a few sorted runs (one per group) is a linear-time merge.
        order = np.argsort(fields[0], kind="stable")
        return cls(*(f[order] for f in fields), num_frames=num_frames)

    def take(self, index: np.ndarray) -> "_Triplets":
        """The triplets at ``index`` (which must keep the frame-by-frame layout)."""
        return _Triplets(self.frame[index], self.sub[index], self.obj[index], self.pred[index], self.score[index],
                         len(self.counts))


def _group_rows(pred: _Predictions, group: int):
    """Probabilities, predicate offset and subject / object box of each pair's row in ``group``."""
    key, offset, size, reverse = PREDICATE_GROUPS[group]
    sub, obj = (pred.pairs[:, 1], pred.pairs[:, 0]) if reverse else (pred.pairs[:, 0], pred.pairs[:, 1])
    return pred.probs[key], offset, sub, obj


def _with_constraint(pred: _Predictions) -> _Triplets:
    parts = []
    for g in range(len(PREDICATE_GROUPS)):
        probs, offset, sub, obj = _group_rows(pred, g)
        best = probs.max(1).astype(np.float64) if len(probs) else np.zeros(0)
        # The reference takes argmax over the zero-padded 26-way row: an all-zero group gives predicate 0.
        label = np.where(best > 0, probs.argmax(1) + offset if len(probs) else 0, 0)
        parts.append((pred.pair_frame, sub, obj, label, best))
    return _Triplets.from_groups(parts, pred.num_frames)


def _semi_constraint(pred: _Predictions, threshold: float) -> _Triplets:
    parts = []
    for g in range(len(PREDICATE_GROUPS)):
        probs, offset, sub, obj = _group_rows(pred, g)
        probs = probs.astype(np.float64, copy=False)  # the reference compares float64 values with the threshold
        # The reference recognises a row's group by the sum of the group's first two probabilities being > 0.
        valid_row = (probs[:, 0] + probs[:, 1]) > 0
        if g == 0:  # attention: top-1
            keep = np.flatnonzero(valid_row)
            k = probs[keep].argmax(1) if len(keep) else np.zeros(0, np.int64)
        else:  # row-major (pair, predicate) order, as the reference appends them
            keep, k = np.nonzero((probs > threshold) & valid_row[:, None])
        parts.append((pred.pair_frame[keep], sub[keep], obj[keep], k + offset, probs[keep, k]))
    return _Triplets.from_groups(parts, pred.num_frames)


def _no_constraint(pred: _Predictions) -> _Triplets:
    # (P, 26): every predicate of every pair, each taken in its group's orientation. Laid out pair-major, every frame
    # is one contiguous block; the reference's order (row-major over its (3P, 26) matrix: all attention rows, then all
    # spatial rows, then contacting) is only needed to break exact ties, so it is computed for those alone.
    probs = np.concatenate([pred.probs[key] for key, _, _, _ in PREDICATE_GROUPS], 1).astype(np.float64)
    pair_score = pred.scores[pred.pairs[:, 0]] * pred.scores[pred.pairs[:, 1]]  # score dtype, as the reference
    stage1 = (pair_score.astype(np.float64)[:, None] * probs).reshape(-1)
    counts = pred.pairs_per_frame * NUM_PREDICATES
    starts = np.cumsum(counts) - counts
    group_of = np.repeat(np.arange(len(PREDICATE_GROUPS)), [size for _, _, size, _ in PREDICATE_GROUPS])

    def reference_order(entry: np.ndarray) -> np.ndarray:
        pair, predicate = np.divmod(entry, NUM_PREDICATES)
        row = group_of[predicate] * pred.pairs_per_frame[pred.pair_frame[pair]] + pred.pair_local[pair]
        return row * NUM_PREDICATES + predicate

    # Stage 1 (reference: argsort_desc(...)[:100]): the best 100 per frame, ties in the reference's order, kept in
    # that order: the order of the reference's 100-triplet list (and so its tie order in stage 2).
    kept, _ = _top_within_frames(stage1, starts, counts, NO_CONSTRAINT_TOPK, tiebreak=reference_order)
    pair, predicate = np.divmod(kept, NUM_PREDICATES)
    reverse = group_of[predicate] == 1  # spatial: object -> person
    sub = np.where(reverse, pred.pairs[pair, 1], pred.pairs[pair, 0])
    obj = np.where(reverse, pred.pairs[pair, 0], pred.pairs[pair, 1])
    return _Triplets(pred.pair_frame[pair], sub, obj, predicate, probs.reshape(-1)[kept], pred.num_frames)


def _sorted_rows(values: np.ndarray, index: np.ndarray, tiebreak) -> np.ndarray:
    """Column order sorting every row of ``values`` ascending; exact ties by ``tiebreak(index)`` (ascending) if given,
    else by column. A fast unstable sort first; only rows with exact ties are sorted again with the tie-break."""
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, 1)
    tied = (ordered[:, 1:] == ordered[:, :-1]).any(1)
    if tied.any():
        if tiebreak is None:
            order[tied] = np.argsort(values[tied], axis=1, kind="stable")
        else:
            order[tied] = np.lexsort((tiebreak(index[tied]), values[tied]), axis=-1)
    return order


def _top_within_frames(score: np.ndarray, starts: np.ndarray, counts: np.ndarray, k: int, *,
                       later_first: bool = False, tiebreak=None) -> tuple:
    """The ``k`` best entries of every frame by descending ``score``, in order.

    Frame ``f`` owns ``score[starts[f]:starts[f] + counts[f]]``. Exact ties go to the entry with the smaller
    ``tiebreak(positions)`` key when given; otherwise to the later entry when ``later_first`` (what the reference's
    ``argsort()[::-1]`` gives under a stable sort), else to the earlier one. Returns ``(positions, ranks)``: indices
    into ``score``, frame after frame, each frame's best first, and their rank (0 = best). Frames are bucketed by size;
    a bucket is a 2-D array handled row by row (argpartition first when only the best ``k`` of many are needed).
    """
    kept = np.minimum(counts, k)
    out_starts = np.cumsum(kept) - kept
    positions = np.empty(int(kept.sum()), np.int64)
    ranks = np.empty(len(positions), np.int64)
    for c in np.unique(counts[counts > 0]):
        rows = np.flatnonzero(counts == c)
        cols = np.arange(c)
        index = starts[rows][:, None] + (cols[::-1] if later_first else cols)[None, :]
        values = -score[index]
        top = min(int(c), k)
        if c > k:
            part = np.sort(np.argpartition(values, k - 1, axis=1)[:, :k], axis=1)  # the k best, in column order
            chosen = np.take_along_axis(values, part, 1)
            order = np.take_along_axis(part, _sorted_rows(chosen, np.take_along_axis(index, part, 1), tiebreak), 1)
            # A tie straddling the cut makes the partition's choice arbitrary: such rows get a full sort.
            straddle = (values <= chosen.max(1, keepdims=True)).sum(1) > k
            if straddle.any():
                order[straddle] = _sorted_rows(values[straddle], index[straddle], tiebreak)[:, :k]
        else:
            order = _sorted_rows(values, index, tiebreak)
        dest = out_starts[rows][:, None] + np.arange(top)[None, :]
        positions[dest] = np.take_along_axis(index, order, 1)
        ranks[dest] = np.arange(top)[None, :]
    return positions, ranks


def _best_triplets(triplets: _Triplets, pred: _Predictions, max_k: int) -> tuple:
    """Score the triplets (``score(sub) * score(obj) * p``, float64, as the reference) and return the ``max_k`` best
    of every frame: ``(positions into triplets, rank within the frame)``."""
    s_sub = pred.scores[triplets.sub].astype(np.float64)
    s_obj = pred.scores[triplets.obj].astype(np.float64)
    triplets.score = s_sub * s_obj * triplets.score
    return _top_within_frames(triplets.score, triplets.starts, triplets.counts, max_k, later_first=True)


def _first_hit_rank(gt: _Groundtruth, pred: _Predictions, triplets: _Triplets, ranks: np.ndarray,
                    iou_threshold: float) -> np.ndarray:
    """For every GT relation, the best rank of a matching predicted triplet (``inf``-like if none)."""
    never = np.iinfo(np.int64).max
    best = np.full(len(gt.rel_pred), never, np.int64)
    if len(ranks) == 0 or len(best) == 0:
        return best
    num_labels = int(max(gt.labels.max(initial=0), pred.labels.max(initial=0))) + 1

    def code(frame, sub_label, obj_label, predicate):
        return ((frame * num_labels + sub_label) * num_labels + obj_label) * NUM_PREDICATES + predicate

    pred_code = code(triplets.frame, pred.labels[triplets.sub], pred.labels[triplets.obj], triplets.pred)
    gt_code = code(gt.rel_frame, gt.labels[gt.rel_sub], gt.labels[gt.rel_obj], gt.rel_pred)
    by_code = np.argsort(pred_code, kind="stable")
    sorted_code = pred_code[by_code]
    lo = np.searchsorted(sorted_code, gt_code, "left")
    n = np.searchsorted(sorted_code, gt_code, "right") - lo
    total = int(n.sum())
    if total == 0:
        return best
    gt_idx = np.repeat(np.arange(len(gt_code)), n)
    cand = by_code[np.arange(total) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)]
    sub_iou = paired_iou(gt.boxes[gt.rel_sub[gt_idx]], pred.boxes[triplets.sub[cand]], plus_one=True)
    obj_iou = paired_iou(gt.boxes[gt.rel_obj[gt_idx]], pred.boxes[triplets.obj[cand]], plus_one=True)
    ok = (sub_iou >= iou_threshold) & (obj_iou >= iou_threshold)
    np.minimum.at(best, gt_idx[ok], ranks[cand[ok]])
    return best


def _summarize(gt: _Groundtruth, best_rank: np.ndarray, ks: Sequence[int],
               mr_variant: str = "tempura") -> Dict[str, float]:
    valid = gt.rels_per_frame > 0
    counts_per_pred = np.bincount(gt.rel_pred, minlength=NUM_PREDICATES).astype(np.float64)
    out: Dict[str, float] = OrderedDict()
    for k in ks:
        hit = best_rank < k
        hits_per_frame = np.bincount(gt.rel_frame, weights=hit, minlength=gt.num_frames)
        recall = hits_per_frame[valid] / gt.rels_per_frame[valid]
        out[f"R@{k}"] = float(recall.mean() * 100) if recall.size else 0.0
    aggregate = {}
    for k in ks:
        hits_per_pred = np.bincount(gt.rel_pred[best_rank < k], minlength=NUM_PREDICATES)
        aggregate[k] = float(np.mean(hits_per_pred / (counts_per_pred + MR_EPS)) * 100)
    if mr_variant == "tempura":
        out.update((f"mR@{k}", aggregate[k]) for k in ks)
        return out
    # STKET: a (frame, predicate) table of hits / (count + eps), 0 where the predicate is absent from the frame,
    # averaged over the frames with GT, then over the 26 predicates.
    cell = gt.rel_frame * NUM_PREDICATES + gt.rel_pred
    size = gt.num_frames * NUM_PREDICATES
    counts = np.bincount(cell, minlength=size).reshape(gt.num_frames, NUM_PREDICATES)[valid]
    for k in ks:
        hits = np.bincount(cell[best_rank < k], minlength=size).reshape(gt.num_frames, NUM_PREDICATES)[valid]
        out[f"mR@{k}"] = float((hits / (counts + MR_EPS)).mean(0).mean() * 100) if len(counts) else 0.0
    out.update((f"avgR@{k}", aggregate[k]) for k in ks)
    return out


def _per_predicate_recall(gt: _Groundtruth, best_rank: np.ndarray, k: int) -> np.ndarray:
    hits = np.bincount(gt.rel_pred[best_rank < k], minlength=NUM_PREDICATES)
    counts = np.bincount(gt.rel_pred, minlength=NUM_PREDICATES)
    return hits / (counts + MR_EPS) * 100


def _validate_options(constraint: str, ks: Sequence[int], iou_threshold: float, semi_threshold: float,
                      mr_variant: str = "tempura") -> None:
    if mr_variant not in MR_VARIANTS:
        raise ValueError(f"mr_variant (TEST.VIDEO_RELATION.MR_VARIANT) must be one of {MR_VARIANTS}, got "
                         f"{mr_variant!r}.")
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}.")
    if not ks or any(int(k) <= 0 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}.")
    if not 0.0 <= semi_threshold < 1.0:
        raise ValueError(f"semi_threshold must be in [0, 1), got {semi_threshold}.")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}.")


def _evaluate_prepared(gt: _Groundtruth, pred: _Predictions, constraint: str, ks: Sequence[int],
                       iou_threshold: float, semi_threshold: float, return_ranks: bool = False,
                       mr_variant: str = "tempura"):
    if constraint == "with":
        triplets = _with_constraint(pred)
    elif constraint == "semi":
        triplets = _semi_constraint(pred, semi_threshold)
    else:
        triplets = _no_constraint(pred)
    keep, ranks = _best_triplets(triplets, pred, max(ks))  # nothing ranked beyond the largest K can count
    best = _first_hit_rank(gt, pred, triplets.take(keep), ranks, iou_threshold)
    results = _summarize(gt, best, ks, mr_variant)
    return (results, best) if return_ranks else results


def evaluate_video_scene_graphs(groundtruths: Sequence[Mapping], predictions: Sequence[Mapping], *, constraint: str,
                                ks: Sequence[int] = (10, 20, 50), iou_threshold: float = 0.5,
                                semi_threshold: float = 0.9, mr_variant: str = "tempura",
                                branch: str = "") -> Dict[str, float]:
    """R@K and mR@K (percent) of video scene graph predictions, one dict per frame, vectorised over all frames.

    Args:
        groundtruths: per frame ``{boxes (N, 4) xyxy pixels, labels (N,) AG classes 0-based (person = 0),
            relations (R, 3) [subject, object, predicate]}``; predicates 0-25 (attention 0-2, spatial 3-8,
            contacting 9-25), attention/contacting person -> object, spatial object -> person.
        predictions: per frame ``{boxes (B, 4), labels (B,), scores (B,), pairs (P, 2) [person, object],
            attention (P, 3), spatial (P, 6), contacting (P, 17)}`` (probabilities), same pixel space as the GT.
            numpy arrays or tensors (any device).
        constraint: ``"with"``, ``"semi"`` or ``"no"`` (see the module docstring).
        ks: the K of R@K / mR@K.
        iou_threshold: minimum IoU (+1-pixel convention) of both subject and object boxes.
        semi_threshold: probability a spatial / contacting predicate must exceed under ``"semi"``.
        mr_variant: ``"tempura"`` or ``"stket"`` (module docstring; ``"stket"`` adds ``avgR@K``).
        branch: score the frames' ``<branch>/attention`` ... probabilities instead of the plain keys.

    Returns:
        ``{"R@10": ..., "R@20": ..., "mR@10": ...}`` in percent. Frames without GT relations are skipped.
    """
    _validate_options(constraint, ks, iou_threshold, semi_threshold, mr_variant)
    if len(groundtruths) != len(predictions):
        raise ValueError(f"Got {len(groundtruths)} ground-truth frames but {len(predictions)} prediction frames; "
                         "give exactly one prediction dict per ground-truth frame, in the same order.")
    pred = _Predictions(predictions)
    return _evaluate_prepared(_Groundtruth(groundtruths), pred.branch(branch) if branch else pred, constraint, ks,
                              iou_threshold, semi_threshold, mr_variant=mr_variant)


# ------------------------------------------------------------------------- straightforward per-frame version
def _bbox_overlaps_plus_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (float64, +1 convention) written out plainly, as the reference's Cython ``bbox_overlaps``."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(inter > 0, inter / np.where(union > 0, union, 1), 0.0)


def _frame_rel_table(frame: Mapping, prefix: str = ""):
    """The reference's per-frame layout: 3P rows of pairs and a zero-padded (3P, 26) score matrix."""
    pairs = _as_numpy(frame["pairs"], np.int64).reshape(-1, 2)
    n = len(pairs)
    rows = np.concatenate([pairs, pairs[:, ::-1], pairs], 0)
    table = np.zeros((3 * n, NUM_PREDICATES))
    for g, (key, offset, size, _) in enumerate(PREDICATE_GROUPS):
        table[g * n:(g + 1) * n, offset:offset + size] = _as_numpy(frame[prefix + key], np.float64).reshape(n, size)
    return rows, table


def _frame_pred_rels(frame: Mapping, constraint: str, semi_threshold: float, prefix: str = ""):
    rows, table = _frame_rel_table(frame, prefix)
    scores = _as_numpy(frame["scores"]).reshape(-1)
    scores = scores.astype(_score_dtype(scores), copy=False)
    if constraint == "with":
        return np.column_stack([rows, table.argmax(1)]) if len(rows) else np.zeros((0, 3), np.int64), table.max(1)
    if constraint == "semi":
        rels, pred_scores = [], []
        for i, pair in enumerate(rows):
            if table[i, 0] + table[i, 1] > 0:
                rels.append([pair[0], pair[1], int(table[i].argmax())])
                pred_scores.append(table[i].max())
            elif table[i, 3] + table[i, 4] > 0 or table[i, 9] + table[i, 10] > 0:
                for k in np.flatnonzero(table[i] > semi_threshold):
                    rels.append([pair[0], pair[1], int(k)])
                    pred_scores.append(table[i, k])
        return np.asarray(rels, np.int64).reshape(-1, 3), np.asarray(pred_scores, np.float64)
    overall = scores[rows].prod(1)[:, None] * table
    flat = np.argsort(-overall.ravel(), kind="stable")[:NO_CONSTRAINT_TOPK]
    r, k = np.unravel_index(flat, overall.shape)
    return np.column_stack([rows[r], k]).astype(np.int64).reshape(-1, 3), table[r, k]


def evaluate_video_scene_graphs_per_frame(groundtruths: Sequence[Mapping], predictions: Sequence[Mapping], *,
                                          constraint: str, ks: Sequence[int] = (10, 20, 50),
                                          iou_threshold: float = 0.5, semi_threshold: float = 0.9,
                                          mr_variant: str = "tempura", branch: str = "") -> Dict[str, float]:
    """The same protocol as :func:`evaluate_video_scene_graphs`, computed frame by frame the way the reference does.

    A plain transcription of the reference's loop structure (one zero-padded score table per frame, a Python loop for
    the semi constraint, sort, then per-GT matching); kept as the baseline of ``tools/benchmarks/video_eval.py`` and
    as the independent cross-check in the tests. Same arguments and return value.
    """
    _validate_options(constraint, ks, iou_threshold, semi_threshold, mr_variant)
    if len(groundtruths) != len(predictions):
        raise ValueError(f"Got {len(groundtruths)} ground-truth frames but {len(predictions)} prediction frames.")
    recalls = {k: [] for k in ks}
    hits = {k: np.zeros(NUM_PREDICATES) for k in ks}
    counts = np.zeros(NUM_PREDICATES)
    frame_recalls = {k: [] for k in ks}  # STKET: per evaluated frame, hits / (count + eps) of every predicate
    for gt_frame, pred_frame in zip(groundtruths, predictions):
        gt_rels = _as_numpy(gt_frame["relations"], np.int64).reshape(-1, 3)
        if len(gt_rels) == 0:
            continue
        gt_boxes = _as_numpy(gt_frame["boxes"], np.float64).reshape(-1, 4)
        gt_labels = _as_numpy(gt_frame["labels"], np.int64).reshape(-1)
        pred_boxes = _as_numpy(pred_frame["boxes"], np.float64).reshape(-1, 4)
        pred_labels = _as_numpy(pred_frame["labels"], np.int64).reshape(-1)
        obj_scores = _as_numpy(pred_frame["scores"]).reshape(-1)
        obj_scores = obj_scores.astype(_score_dtype(obj_scores), copy=False)
        pred_rels, pred_scores = _frame_pred_rels(pred_frame, constraint, semi_threshold,
                                                  f"{branch}/" if branch else "")
        triplet_scores = np.column_stack([obj_scores[pred_rels[:, 0]], obj_scores[pred_rels[:, 1]],
                                          pred_scores]).astype(np.float64).prod(1)
        order = np.argsort(triplet_scores, kind="stable")[::-1]
        pred_rels = pred_rels[order]
        gt_trip = np.column_stack([gt_labels[gt_rels[:, 0]], gt_rels[:, 2], gt_labels[gt_rels[:, 1]]])
        pred_trip = np.column_stack([pred_labels[pred_rels[:, 0]], pred_rels[:, 2], pred_labels[pred_rels[:, 1]]])
        pred_to_gt = [[] for _ in range(len(pred_rels))]
        for g in range(len(gt_rels)):
            same = np.flatnonzero((pred_trip == gt_trip[g]).all(1))
            if len(same) == 0:
                continue
            sub_iou = _bbox_overlaps_plus_one(gt_boxes[gt_rels[g, 0]][None], pred_boxes[pred_rels[same, 0]])[0]
            obj_iou = _bbox_overlaps_plus_one(gt_boxes[gt_rels[g, 1]][None], pred_boxes[pred_rels[same, 1]])[0]
            for i in same[(sub_iou >= iou_threshold) & (obj_iou >= iou_threshold)]:
                pred_to_gt[i].append(g)
        frame_counts = np.bincount(gt_rels[:, 2], minlength=NUM_PREDICATES)
        counts += frame_counts
        for k in ks:
            matched = sorted(set(itertools.chain.from_iterable(pred_to_gt[:k])))
            recalls[k].append(len(matched) / len(gt_rels))
            frame_hits = np.zeros(NUM_PREDICATES)
            for g in matched:
                hits[k][gt_rels[g, 2]] += 1
                frame_hits[gt_rels[g, 2]] += 1
            frame_recalls[k].append(frame_hits / (frame_counts + MR_EPS))
    out: Dict[str, float] = OrderedDict()
    for k in ks:
        out[f"R@{k}"] = float(np.mean(recalls[k]) * 100) if recalls[k] else 0.0
    for k in ks:
        aggregate = float(np.mean(hits[k] / (counts + MR_EPS)) * 100)
        if mr_variant == "tempura":
            out[f"mR@{k}"] = aggregate
        else:
            out[f"mR@{k}"] = float(np.mean(np.mean(frame_recalls[k], 0)) * 100) if frame_recalls[k] else 0.0
    if mr_variant == "stket":
        for k in ks:
            out[f"avgR@{k}"] = float(np.mean(hits[k] / (counts + MR_EPS)) * 100)
    return out


# ------------------------------------------------------------------------------------------- predictions file
def save_video_predictions_file(path: str, predictions: Mapping[str, Sequence[Mapping]], *, dataset_name: str,
                                mode: str, evaluation: Optional[Mapping] = None) -> None:
    """Write per-video predictions ``{video_id: [frame dict of arrays, ...]}`` to ``path`` atomically.

    Arrays are stored as torch tensors with their dtypes (so the file loads with ``weights_only``, and the protocol's
    float32 products are unchanged), with the dataset's options in effect (``DATASETS.AG.*``: the GT a re-evaluation
    must read) and ``evaluation``, the evaluator options the run used (constraints, ks, thresholds, branches, ...).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    group = DatasetCatalog.option_group_of(dataset_name)
    options = {group: dict(DatasetCatalog.options(group))} if group else {}
    videos = {str(video_id): [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in frame.items()}
                              for frame in frames] for video_id, frames in predictions.items()}
    payload = {"format": VIDEO_PREDICTIONS_FORMAT, "dataset": dataset_name, "mode": mode,
               "evaluation": dict(evaluation or {}), "dataset_options": options, "videos": videos}
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_video_predictions_file(path: str, data=None) -> dict:
    """Read a file written by :func:`save_video_predictions_file`: ``{"format", "dataset", "mode", "evaluation",
    "dataset_options", "videos": {video_id: [frame dict of numpy arrays]}}`` (loaded with ``weights_only``);
    ``data`` = the file's content when already read by :func:`~sgg.evaluation.scene_graph.read_predictions_payload`."""
    if data is None:
        data = read_predictions_payload(path)
    if not isinstance(data, dict) or data.get("format") != VIDEO_PREDICTIONS_FORMAT:
        raise ValueError(f"'{path}' is not a video SGG predictions file (format '{VIDEO_PREDICTIONS_FORMAT}').")
    data["videos"] = {video_id: [{k: v.numpy() for k, v in frame.items()} for frame in frames]
                      for video_id, frames in data["videos"].items()}
    return data


# ------------------------------------------------------------------------------------------------- evaluator
def _compact_prediction_frame(frame: Mapping, branches: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """One predicted frame as small CPU numpy arrays (what the evaluator keeps between ``process`` and ``evaluate``)."""
    out = {}
    branch_keys = [f"{b}/{key}" for b in branches for key, _, _, _ in PREDICATE_GROUPS]
    for key in _PREDICTION_KEYS + tuple(branch_keys):
        if key not in frame:
            raise KeyError(f"Model output frame lacks '{key}'; video SGG models must return per frame "
                           f"{list(_PREDICTION_KEYS)}" + (f" and, for TEST.VIDEO_RELATION.BRANCHES "
                                                          f"{list(branches)}, {branch_keys}" if branches else "")
                           + " (see docs/action_genome.md, 'Prediction format').")
        out[key] = _as_numpy(frame[key])  # dtypes kept: the protocol computes some products in the scores' dtype
    for key in _OPTIONAL_PAIR_KEYS:
        if key in frame:
            out[key] = _as_numpy(frame[key])
    return out


def _uncertainty_summary(pred_frames: Sequence[Mapping]) -> Dict[str, float]:
    """``uncertainty/mean`` (the model's per-pair uncertainty averaged over all predicted pairs) and
    ``uncertainty/uncertain_percent`` (percent of pairs the model flagged), when the predictions carry
    ``uncertainty`` / ``uncertain``; ``{}`` otherwise."""
    out: Dict[str, float] = {}
    for key, name, scale in (("uncertainty", "uncertainty/mean", 1.0),
                             ("uncertain", "uncertainty/uncertain_percent", 100.0)):
        values = [np.asarray(f[key], dtype=np.float64).reshape(-1) for f in pred_frames if key in f]
        if values and sum(len(v) for v in values):
            out[name] = scale * float(np.concatenate(values).mean())
    return out


class VideoSceneGraphEvaluator(DatasetEvaluator):
    """Action Genome video SGG evaluator (registered as ``video_scene_graph``).

    ``process`` stores each video's per-frame predictions (model output ``{"frames": [frame dict, ...]}``, one frame
    dict per input frame, boxes in original pixels); ``evaluate`` gathers them across ranks, looks the GT up in the
    dataset dicts by ``video_id`` and reports, under the task ``video_sgg``, ``{constraint}/R@K`` and
    ``{constraint}/mR@K`` (percent) for every constraint in ``TEST.VIDEO_RELATION.CONSTRAINTS`` (+ ``avgR@K`` with
    ``MR_VARIANT`` "stket"), and ``{branch}/{constraint}/...`` for every branch in ``TEST.VIDEO_RELATION.BRANCHES``.
    """

    @configurable
    def __init__(self, *, dataset_name: str, output_dir: Optional[str] = None, mode: str = "predcls",
                 constraints: Sequence[str] = CONSTRAINTS, ks: Sequence[int] = (10, 20, 50),
                 iou_threshold: float = 0.5, semi_threshold: float = 0.9, distributed: bool = True,
                 branches: Sequence[str] = (), mr_variant: str = "tempura", save_predictions: bool = False):
        for c in constraints:
            _validate_options(c, ks, iou_threshold, semi_threshold, mr_variant)
        bad = [b for b in branches if not b or "/" in b or b in CONSTRAINTS]
        if bad or len(set(branches)) != len(branches):
            raise ValueError(f"TEST.VIDEO_RELATION.BRANCHES must be distinct names without '/' other than "
                             f"{CONSTRAINTS}, got {tuple(branches)}.")
        self.branches = tuple(branches)
        self.mr_variant = mr_variant
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.mode = mode
        self.constraints = tuple(constraints)
        self.ks = tuple(int(k) for k in ks)
        self.iou_threshold = float(iou_threshold)
        self.semi_threshold = float(semi_threshold)
        self.distributed = distributed
        self.save_predictions = bool(save_predictions)
        self._predictions: Dict[str, List[dict]] = {}

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> dict:
        """Keyword arguments from ``TEST.RELATION`` and ``TEST.VIDEO_RELATION``."""
        # The ground truth must be filtered the way the test loader's dicts were.
        DatasetCatalog.check_configured(cfg, [dataset_name])
        return {
            "dataset_name": dataset_name, "output_dir": output_dir, "mode": cfg.TEST.RELATION.MODE,
            "constraints": tuple(cfg.TEST.VIDEO_RELATION.CONSTRAINTS), "ks": tuple(cfg.TEST.VIDEO_RELATION.KS),
            "iou_threshold": cfg.TEST.RELATION.IOU_THRESHOLD,
            "semi_threshold": cfg.TEST.VIDEO_RELATION.SEMI_THRESHOLD,
            "branches": tuple(cfg.TEST.VIDEO_RELATION.BRANCHES), "mr_variant": cfg.TEST.VIDEO_RELATION.MR_VARIANT,
            "save_predictions": cfg.TEST.SAVE_PREDICTIONS,
        }

    def reset(self) -> None:
        """Forget all processed predictions."""
        self._predictions = {}

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Store the per-frame predictions of each video of the batch (moved to CPU numpy once)."""
        for inp, out in zip(inputs, outputs):
            video_id = inp["video_id"]
            frames = out["frames"] if isinstance(out, Mapping) else None
            if frames is None:
                raise KeyError(f"Model output for video '{video_id}' must be a dict with a 'frames' list.")
            if "frames" in inp and len(frames) != len(inp["frames"]):
                raise ValueError(f"Model returned {len(frames)} frames for video '{video_id}', which has "
                                 f"{len(inp['frames'])}; return one prediction dict per input frame.")
            self._predictions[video_id] = [_compact_prediction_frame(f, self.branches) for f in frames]

    def add_video_predictions(self, video_id: str, frames: Sequence[Mapping]) -> None:
        """Queue one video's per-frame predictions (e.g. read back from a saved ``predictions.pth``)."""
        self.process([{"video_id": video_id}], [{"frames": list(frames)}])

    def _evaluation_options(self) -> dict:
        return {"constraints": list(self.constraints), "ks": list(self.ks), "iou_threshold": self.iou_threshold,
                "semi_threshold": self.semi_threshold, "branches": list(self.branches),
                "mr_variant": self.mr_variant}

    def _gather(self) -> Optional[Dict[str, List[dict]]]:
        if not self.distributed or comm.get_world_size() == 1:
            return self._predictions
        parts = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        merged: Dict[str, List[dict]] = {}
        for part in parts:
            merged.update(part)
        return merged

    def _paired_frames(self, predictions: Dict[str, List[dict]]):
        videos = {d["video_id"]: d for d in DatasetCatalog.get(self.dataset_name)}
        unknown = sorted(set(predictions) - set(videos))
        if unknown:
            raise KeyError(f"Predicted video(s) {unknown[:5]} are not in dataset '{self.dataset_name}'.")
        missing = len(videos) - len(predictions)
        if missing:
            logger.warning("%d of %d videos of '%s' have no prediction; evaluating the %d that do.", missing,
                           len(videos), self.dataset_name, len(predictions))
        gts, preds = [], []
        for video_id, video in videos.items():
            if video_id not in predictions:
                continue
            if len(predictions[video_id]) != len(video["frames"]):
                raise ValueError(f"Video '{video_id}': {len(predictions[video_id])} predicted frames, "
                                 f"{len(video['frames'])} in the dataset.")
            gts.extend(video["frames"])
            preds.extend(predictions[video_id])
        return gts, preds

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """``{"video_sgg": {"with/R@10": ..., "semi/mR@50": ...}}`` on the main process, ``{}`` elsewhere."""
        predictions = self._gather()
        if predictions is None:
            return {}
        if not predictions:
            logger.warning("VideoSceneGraphEvaluator received no predictions.")
            return {}
        gt_frames, pred_frames = self._paired_frames(predictions)
        gt, pred = _Groundtruth(gt_frames), _Predictions(pred_frames)
        metrics: Dict[str, float] = OrderedDict()
        per_predicate = {}
        for prefix, branch_pred in [("", pred)] + [(f"{b}/", pred.branch(b)) for b in self.branches]:
            for constraint in self.constraints:
                result, best = _evaluate_prepared(gt, branch_pred, constraint, self.ks, self.iou_threshold,
                                                  self.semi_threshold, return_ranks=True, mr_variant=self.mr_variant)
                for name, value in result.items():
                    metrics[f"{prefix}{constraint}/{name}"] = value
                per_predicate[prefix + constraint] = {k: _per_predicate_recall(gt, best, k).tolist() for k in self.ks}
        metrics.update(_uncertainty_summary(pred_frames))
        skipped = int((gt.rels_per_frame == 0).sum())
        logger.info("Video SGG (%s) on %s: %d videos, %d frames (%d without GT relations skipped); mR@K = %s",
                    self.mode, self.dataset_name, len(predictions), gt.num_frames, skipped,
                    "STKET's per-frame mean (avgR@K = the aggregate)" if self.mr_variant == "stket"
                    else "TEMPURA's aggregate over frames")
        self._save(metrics, per_predicate, len(predictions), gt.num_frames, skipped)
        if self.save_predictions and self.output_dir:
            path = os.path.join(self.output_dir, "predictions.pth")
            save_video_predictions_file(path, predictions, dataset_name=self.dataset_name, mode=self.mode,
                                        evaluation=self._evaluation_options())
            logger.info("Saved the predictions of %d videos to %s", len(predictions), path)
        return {"video_sgg": metrics}

    def _save(self, metrics, per_predicate, num_videos, num_frames, skipped) -> None:
        if not self.output_dir:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, "video_sgg_results.json")
        payload = {"dataset": self.dataset_name, "mode": self.mode, "metrics": metrics,
                   "per_predicate_recall": per_predicate, "num_videos": num_videos, "num_frames": num_frames,
                   "num_frames_skipped": skipped, "iou_threshold": self.iou_threshold,
                   "semi_threshold": self.semi_threshold, "mr_variant": self.mr_variant,
                   "branches": list(self.branches)}
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)


EVALUATOR_REGISTRY.register("video_scene_graph")(VideoSceneGraphEvaluator)
