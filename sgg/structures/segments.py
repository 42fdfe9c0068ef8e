"""Frame-segment algorithms shared by keyframe data, models, tools and metrics.

Video summaries are built from per-step scores in the eccv16 way (Zhang et al. 2016; the pytorch-vsumm-reinforce
``vsum_tools.py`` reference): scores are spread to frames over ``picks``, averaged per shot, and a 0/1 knapsack picks
the shots that fit the frame budget. The KTS shot detector that yields the shots is in :mod:`sgg.structures.kts`.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np

__all__ = ["knapsack_01", "upsample_to_frames", "generate_summary", "minmax_normalize", "select_topk_steps"]


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
                     n_frame_per_seg: np.ndarray, picks: np.ndarray, ratio: float = 0.15) -> np.ndarray:
    """Binary frame-level summary ``(n_frames,)`` from per-step scores (shot mean score -> knapsack at ``ratio``)."""
    frame_scores = upsample_to_frames(step_scores, picks, n_frames)
    change_points = np.asarray(change_points, dtype=np.int64).reshape(-1, 2)
    seg_scores = [float(frame_scores[start:end + 1].mean()) for start, end in change_points]
    capacity = int(math.floor(n_frames * ratio))
    chosen = set(knapsack_01(seg_scores, n_frame_per_seg, capacity))
    summary = np.zeros(n_frames, dtype=np.float32)
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
