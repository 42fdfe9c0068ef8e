"""Frame-segment algorithms shared by keyframe data, models, tools and metrics.

Video summaries are built from per-step scores in the eccv16 way (Zhang et al. 2016; the pytorch-vsumm-reinforce
``vsum_tools.py`` reference): scores are spread to frames over ``picks``, averaged per shot, and a 0/1 knapsack picks
the shots that fit the frame budget. The KTS shot detector that yields the shots is in :mod:`sgg.structures.kts`.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np

__all__ = ["knapsack_01", "knapsack_ortools_dp", "knapsack_float64", "KNAPSACK_PROTOCOLS", "upsample_to_frames",
           "generate_summary", "minmax_normalize", "select_topk_steps"]


def knapsack_01(values: Sequence[float], weights: Sequence[int], capacity: int) -> List[int]:
    """Indices of the items of a 0/1 knapsack solution (max total value, total weight <= ``capacity``).

    Same table and tie-breaking as the reference ``knapsack_dp`` (pytorch-vsumm-reinforce): item ``i`` is taken at
    capacity ``w`` only when it *strictly* improves the float32 table, and the solution is read back from the last
    item. Vectorised over capacities; O(n_items * capacity).
    """
    values = [float(v) for v in values]
    weights = [int(w) for w in weights]
    if len(values) != len(weights):
        raise ValueError(f"knapsack_01: {len(values)} values but {len(weights)} weights.")
    if any(w < 0 for w in weights) or capacity < 0:
        raise ValueError("knapsack_01: weights and capacity must be non-negative.")
    table = np.zeros(capacity + 1, dtype=np.float32)
    keep = np.zeros((len(values), capacity + 1), dtype=bool)
    for i, (v, w) in enumerate(zip(values, weights)):
        if w > capacity:
            continue
        # float64 candidate vs float32 table, stored back as float32 — exactly what the reference's numpy does.
        candidate = table[: capacity + 1 - w].astype(np.float64) + v
        improves = candidate > table[w:]
        keep[i, w:] = improves
        table[w:] = np.where(improves, candidate, table[w:]).astype(np.float32)
    picks, remaining = [], capacity
    for i in range(len(values) - 1, -1, -1):
        if keep[i, remaining]:
            picks.append(i)
            remaining -= weights[i]
    return sorted(picks)


def knapsack_ortools_dp(values: Sequence[int], weights: Sequence[int], capacity: int) -> List[int]:
    """DSNet's knapsack: OR-Tools' ``KNAPSACK_DYNAMIC_PROGRAMMING_SOLVER`` on integer values, restated.

    Exactly OR-Tools' arithmetic and tie-breaking (``knapsack_solver.cc``): if every item fits, all are packed (its
    capacity reduction); otherwise a 1-D table over capacities records, per capacity, the last item that *strictly*
    improved it (0 when none did), the solution is read back from the full capacity, and the search repeats on the
    items before the one read, with the capacity left. Because the record starts at item 0, item 0 is packed whenever
    it fits in the capacity left even if it is worth 0 — DSNet's "zero-valued shots are packed" behaviour.
    """
    values = [int(v) for v in values]
    weights = [int(w) for w in weights]
    if len(values) != len(weights):
        raise ValueError(f"knapsack_ortools_dp: {len(values)} values but {len(weights)} weights.")
    if any(w < 0 for w in weights) or capacity < 0:
        raise ValueError("knapsack_ortools_dp: weights and capacity must be non-negative.")
    if sum(weights) <= capacity:
        return list(range(len(values)))
    picked: List[int] = []
    remaining, num_items = int(capacity), len(values)
    while remaining > 0 and num_items > 0:
        profit = np.zeros(remaining + 1, dtype=np.int64)
        last = np.zeros(remaining + 1, dtype=np.int64)
        for i in range(num_items):
            w, v = weights[i], values[i]
            if w > remaining:
                continue
            # OR-Tools walks capacities downwards in place: profit[c - w] is still the previous item's row.
            candidate = profit[: remaining + 1 - w] + v
            improves = candidate > profit[w:]
            last[w:][improves] = i
            profit[w:] = np.where(improves, candidate, profit[w:])
        item = int(last[remaining])
        remaining -= weights[item]
        num_items = item
        if remaining >= 0:
            picked.append(item)
    return sorted(picked)


def knapsack_float64(values: Sequence[float], weights: Sequence[int], capacity: int) -> List[int]:
    """PGL-SUM / CA-SUM's knapsack (``knapsack_implementation.knapSack``), restated: a 2-D table of Python floats
    (float64 sums), read back from the last item; an item is packed when its row *changes* the table value, so a
    zero-valued item is never packed and a tie keeps the earlier items."""
    values = [float(v) for v in values]
    weights = [int(w) for w in weights]
    if len(values) != len(weights):
        raise ValueError(f"knapsack_float64: {len(values)} values but {len(weights)} weights.")
    if any(w < 0 for w in weights) or capacity < 0:
        raise ValueError("knapsack_float64: weights and capacity must be non-negative.")
    n = len(values)
    table = np.zeros((n + 1, capacity + 1), dtype=np.float64)
    for i in range(1, n + 1):
        w, v = weights[i - 1], values[i - 1]
        table[i] = table[i - 1]
        lo = max(w, 1)  # column 0 stays 0: the reference's `w == 0` branch
        if lo <= capacity:
            # K[i][c] = max(v + K[i-1][c-w], K[i-1][c]) for c >= w.
            table[i, lo:] = np.maximum(v + table[i - 1, lo - w: capacity + 1 - w], table[i - 1, lo:])
    picked, c = [], capacity
    for i in range(n, 0, -1):
        if table[i, c] != table[i - 1, c]:
            picked.append(i - 1)
            c -= weights[i - 1]
    return sorted(picked)


# name -> (shot value from the shot's float32 mean score, knapsack)
KNAPSACK_PROTOCOLS = ("vsumm", "dsnet", "pglsum")


def upsample_to_frames(step_scores: np.ndarray, picks: np.ndarray, n_frames: int) -> np.ndarray:
    """Spread per-step scores to frames: frame ``f`` in ``[picks[i], picks[i+1])`` gets ``step_scores[i]``.

    Frames before ``picks[0]`` get 0 and the last step covers up to ``n_frames`` (the reference's rule).
    Returns float32 ``(n_frames,)``.
    """
    step_scores = np.asarray(step_scores, dtype=np.float64).reshape(-1)
    positions = np.asarray(picks, dtype=np.int64).reshape(-1)
    if len(positions) != len(step_scores):
        raise ValueError(f"{len(step_scores)} step scores but {len(positions)} picks; they must match one to one.")
    if positions[-1] != n_frames:
        positions = np.append(positions, n_frames)
    frame_scores = np.zeros(n_frames, dtype=np.float32)
    for i in range(len(positions) - 1):
        frame_scores[positions[i]:positions[i + 1]] = step_scores[i]
    return frame_scores


def generate_summary(step_scores: np.ndarray, change_points: np.ndarray, n_frames: int,
                     n_frame_per_seg: np.ndarray, picks: np.ndarray, ratio: float = 0.15,
                     protocol: str = "vsumm") -> np.ndarray:
    """Binary frame-level summary from per-step scores: shot mean score -> 0/1 knapsack at ``ratio``.

    ``protocol`` follows one reference exactly:

    * ``"vsumm"`` (pytorch-vsumm-reinforce ``vsum_tools.py``): shot value = the float32 mean, float32 knapsack table
      (:func:`knapsack_01`), capacity ``floor(ratio * n_frames)``, summary of ``n_frames`` frames;
    * ``"dsnet"`` (DSNet ``vsumm_helper.get_keyshot_summ``): shot value ``int(1000 * mean)``, OR-Tools' DP knapsack
      (:func:`knapsack_ortools_dp`), capacity ``int(n_frames * ratio)``, ``n_frames`` frames;
    * ``"pglsum"`` (PGL-SUM / CA-SUM ``generate_summary.py``): shot value = the float32 mean as a Python float,
      float64 knapsack (:func:`knapsack_float64`), shot lengths from ``change_points`` (``end - start + 1``), capacity
      ``int((last shot end + 1) * ratio)`` and a summary of ``last shot end + 1`` frames (not ``n_frames``).

    Returns float32 ``(n_frames,)`` (``"pglsum"``: ``(change_points[-1, 1] + 1,)``).
    """
    if protocol not in KNAPSACK_PROTOCOLS:
        raise ValueError(f"Summary protocol must be one of {KNAPSACK_PROTOCOLS}, got {protocol!r}.")
    frame_scores = upsample_to_frames(step_scores, picks, n_frames)
    change_points = np.asarray(change_points, dtype=np.int64).reshape(-1, 2)
    seg_means = [frame_scores[start:end + 1].mean() for start, end in change_points]  # float32, as the references
    length = n_frames
    if protocol == "vsumm":
        chosen = set(knapsack_01([float(m) for m in seg_means], n_frame_per_seg, int(math.floor(n_frames * ratio))))
    elif protocol == "dsnet":
        # DSNet runs on numpy < 1.24 (it uses np.bool), where float32 scalar * int is computed in float64 (numpy 2
        # would stay in float32 and truncate differently near integers).
        values = [int(1000 * float(m)) for m in seg_means]
        chosen = set(knapsack_ortools_dp(values, n_frame_per_seg, int(n_frames * ratio)))
    else:
        length = int(change_points[-1, 1]) + 1
        lengths = [int(end - start + 1) for start, end in change_points]
        chosen = set(knapsack_float64([m.item() for m in seg_means], lengths, int(length * ratio)))
    summary = np.zeros(length, dtype=np.float32)
    for seg, (start, end) in enumerate(change_points):
        if seg in chosen:
            summary[start:end + 1] = 1.0
    return summary


def minmax_normalize(x: np.ndarray) -> np.ndarray:
    """``(x - min) / (max - min)`` as float32 (all zeros for a constant input)."""
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min()
    return ((x - x.min()) / span if span > 0 else np.zeros_like(x)).astype(np.float32)


def select_topk_steps(scores: np.ndarray, ratio: float) -> List[int]:
    """Keyframes by seed 003's rule: the ``max(1, floor(ratio * T))`` highest-scoring of the ``T`` steps, in temporal
    order (ties broken by the earlier step)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = max(1, int(math.floor(ratio * len(scores))))
    return sorted(np.argsort(-scores, kind="stable")[:k].tolist())
