"""Kernel temporal segmentation (KTS; Potapov et al., "Category-specific video summarization", ECCV 2014).

KTS splits a sequence of feature vectors into contiguous segments ("shots") whose within-segment kernel scatter is
minimal, choosing the number of change points with Potapov's penalised criterion. It is how the eccv16 TVSum/SumMe
files got their ``change_points``; sgg uses it for raw videos, where no change points are given.

Conventions: positions are indices into the feature sequence; a change point ``c`` starts a new segment at ``c``
(so the segments of ``n`` items with change points ``[c1, c2]`` are ``[0, c1)``, ``[c1, c2)``, ``[c2, n)``).
"""

from __future__ import annotations

import logging
import math
from typing import List, Optional, Tuple

import numpy as np

from .segments import knapsack_01, upsample_to_frames

__all__ = ["segment_scatter_table", "kts_fixed", "kts_auto", "change_points_to_segments", "kts_features_from_frames",
           "select_shot_keyframes"]

logger = logging.getLogger(__name__)


def segment_scatter_table(kernel: np.ndarray) -> np.ndarray:
    """Return ``S`` with ``S[i, j]`` = scatter of the half-open segment ``[i, j)`` (``inf`` where ``j <= i``).

    scatter([i, j)) = sum_t K[t, t] - (1 / (j - i)) * sum_{s, t in [i, j)} K[s, t], i.e. the sum of squared distances
    of the segment's items to its mean in the kernel's feature space. ``kernel`` is ``(n, n)``; the table is
    ``(n + 1, n + 1)``.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    n = kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != n:
        raise ValueError(f"KTS needs a square kernel matrix, got shape {kernel.shape}.")
    diag = np.concatenate([[0.0], np.cumsum(np.diag(kernel))])
    integral = np.zeros((n + 1, n + 1))
    integral[1:, 1:] = kernel.cumsum(0).cumsum(1)
    i = np.arange(n + 1)[:, None]
    j = np.arange(n + 1)[None, :]
    block = integral[j, j] - integral[i, j] - integral[j, i] + integral[i, i]  # sum of K over [i, j) x [i, j)
    length = (j - i).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scatter = (diag[j] - diag[i]) - block / length
    # Rounding can make a zero scatter slightly negative; segments with no item are impossible.
    return np.where(length > 0, np.maximum(scatter, 0.0), np.inf)


def _dynamic_program(scatter: np.ndarray, max_cps: int, min_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """``cost[m, j]``: best scatter of ``[0, j)`` in ``m + 1`` segments; ``arg[m, j]``: start of the last one."""
    n = scatter.shape[0] - 1
    allowed = scatter.copy()
    lengths = np.arange(n + 1)[None, :] - np.arange(n + 1)[:, None]
    allowed[lengths < min_len] = np.inf
    cost = np.full((max_cps + 1, n + 1), np.inf)
    arg = np.zeros((max_cps + 1, n + 1), dtype=np.int64)
    cost[0] = allowed[0]
    for m in range(1, max_cps + 1):
        total = cost[m - 1][:, None] + allowed  # (start i, end j)
        arg[m] = np.argmin(total, axis=0)
        cost[m] = total[arg[m], np.arange(n + 1)]
    return cost, arg


def _backtrack(arg: np.ndarray, num_cps: int, n: int) -> np.ndarray:
    cps, end = [], n
    for m in range(num_cps, 0, -1):
        end = int(arg[m, end])
        cps.append(end)
    return np.asarray(sorted(cps), dtype=np.int64)


def kts_fixed(kernel: np.ndarray, num_cps: int, *, min_len: int = 1) -> Tuple[np.ndarray, float]:
    """Optimal segmentation with exactly ``num_cps`` change points; returns ``(change_points, total_scatter)``."""
    n = kernel.shape[0]
    if num_cps < 0 or (num_cps + 1) * min_len > n:
        raise ValueError(f"Cannot cut {n} items into {num_cps + 1} segments of at least {min_len}.")
    cost, arg = _dynamic_program(segment_scatter_table(kernel), num_cps, min_len)
    return _backtrack(arg, num_cps, n), float(cost[num_cps, n])


def kts_auto(kernel: np.ndarray, max_cps: Optional[int] = None, *, vmax: float = 1.0, min_len: int = 1
             ) -> np.ndarray:
    """Change points with the number chosen automatically (Potapov et al. 2014, eq. 4).

    For every m in ``0..max_cps`` the optimal scatter ``L_m`` is found; m minimises
    ``L_m / n + vmax * m / (2 n) * (log(n / m) + 1)``. ``max_cps`` defaults to ``n - 1`` (as in DSNet's use of KTS);
    ``vmax`` weighs the penalty (1 in the common pipelines). Returns the sorted change points (int64 array).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    n = kernel.shape[0]
    if n <= 1:
        return np.zeros(0, dtype=np.int64)
    max_cps = n - 1 if max_cps is None else int(max_cps)
    max_cps = max(0, min(max_cps, n // min_len - 1))
    cost, arg = _dynamic_program(segment_scatter_table(kernel), max_cps, min_len)
    m = np.arange(max_cps + 1, dtype=np.float64)
    penalty = np.zeros_like(m)
    penalty[1:] = vmax * m[1:] / (2.0 * n) * (np.log(n / m[1:]) + 1.0)
    objective = cost[:, n] / n + penalty
    best = int(np.argmin(objective))
    logger.debug("KTS: n=%d, chose %d change points", n, best)
    return _backtrack(arg, best, n)


def change_points_to_segments(change_points: np.ndarray, positions: np.ndarray, n_frames: int) -> np.ndarray:
    """Map KTS change points over sampled positions to eccv16-style frame segments.

    Args:
        change_points: indices into the sampled sequence (as returned by :func:`kts_auto`).
        positions: ``(n_steps,)`` frame index of each sample (the h5's ``picks``).
        n_frames: frames in the video.

    Returns:
        ``(n_segs, 2)`` int array of inclusive ``[first_frame, last_frame]`` covering ``0..n_frames-1``.
    """
    positions = np.asarray(positions, dtype=np.int64)
    starts = np.concatenate([[0], positions[np.asarray(change_points, dtype=np.int64)]])
    ends = np.concatenate([starts[1:] - 1, [n_frames - 1]])
    return np.stack([starts, ends], axis=1).astype(np.int64)


def kts_features_from_frames(frames: np.ndarray, grid: int = 8, bins: int = 8) -> np.ndarray:
    """Cheap, L2-normalised appearance descriptors for KTS on raw frames (used where no CNN features exist).

    Concatenates a ``grid x grid`` RGB thumbnail (spatial layout) and a ``bins``-bin histogram per colour channel
    (global colour); ``frames`` is uint8 ``(T, H, W, 3)``; returns float64 ``(T, 3 * grid**2 + 3 * bins)``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"kts_features_from_frames expects (T, H, W, 3) frames, got {frames.shape}.")
    t, h, w, _ = frames.shape
    ys = (np.arange(grid) * h) // grid
    xs = (np.arange(grid) * w) // grid
    hs, ws = max(1, h // grid), max(1, w // grid)
    thumb = np.stack([frames[:, y:y + hs, x:x + ws].mean(axis=(1, 2)) for y in ys for x in xs], axis=1) / 255.0
    edges = np.linspace(0, 256, bins + 1)
    hist = np.stack([np.stack([np.histogram(f[..., c], bins=edges)[0] for c in range(3)]) for f in frames])
    hist = hist.reshape(t, -1) / float(h * w)
    feats = np.concatenate([thumb.reshape(t, -1), hist], axis=1)
    feats = feats - feats.mean(axis=0, keepdims=True)
    return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)


def select_shot_keyframes(scores: np.ndarray, frames: np.ndarray, picks: np.ndarray, n_frames: int,
                          ratio: float) -> List[int]:
    """Keyframes by the evaluation protocol's summary: KTS shots on ``frames`` (T, H, W, 3) sampled at ``picks``
    (native frame indices), a 0/1 knapsack of shot-mean scores within ``floor(ratio * n_frames)`` frames, and the
    best-scoring step of every chosen shot. Returns step indices in temporal order."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    feats = kts_features_from_frames(frames)
    segments = change_points_to_segments(kts_auto(feats @ feats.T), picks, n_frames)
    frame_scores = upsample_to_frames(scores, picks, n_frames)
    values = [float(frame_scores[s:e + 1].mean()) for s, e in segments]
    chosen = knapsack_01(values, segments[:, 1] - segments[:, 0] + 1, int(math.floor(ratio * n_frames)))
    keyframes = []
    for seg in chosen:
        inside = np.nonzero((picks >= segments[seg, 0]) & (picks <= segments[seg, 1]))[0]
        if len(inside):
            keyframes.append(int(inside[np.argmax(scores[inside])]))
    return sorted(keyframes)
