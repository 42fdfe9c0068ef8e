"""Segment algorithms with hand-computed answers: the 0/1 knapsack (vs brute force and the reference table), frame
upsampling and shot summaries."""


import numpy as np
import pytest

from sgg.structures.segments import generate_summary, knapsack_01, upsample_to_frames


def test_knapsack_hand_cases():
    # capacity 5: {0, 1} (value 7, weight 5) beats {3} (6), {2} (5), {0, 2} does not fit (weight 6).
    assert knapsack_01([3, 4, 5, 6], [2, 3, 4, 5], 5) == [0, 1]
    # capacity 9: {0, 1, 2} (value 12, weight 9) beats {2, 3} (11) and {1, 3} (10).
    assert knapsack_01([3, 4, 5, 6], [2, 3, 4, 5], 9) == [0, 1, 2]
    # Tie: equal values and weights, room for one: the first item wins (strict improvement only, like the reference).
    assert knapsack_01([1.0, 1.0], [1, 1], 1) == [0]
    assert knapsack_01([1.0, 2.0], [3, 3], 2) == []  # nothing fits
    assert knapsack_01([], [], 10) == []


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 8))
        values, weights = rng.random(n), rng.integers(1, 10, n)
        capacity = int(rng.integers(0, 30))
        best = max((sum(values[list(c)]) for k in range(n + 1) for c in _combinations(n, k)
                    if sum(weights[list(c)]) <= capacity), default=0.0)
        chosen = knapsack_01(values, weights, capacity)
        assert sum(weights[chosen]) <= capacity
        assert sum(values[chosen]) == pytest.approx(best, abs=1e-5)


def _table_knapsack(values, weights, capacity):
    """Straightforward 2-D table version of the reference (strict improvement, read back from the last item)."""
    n = len(values)
    table = np.zeros((n + 1, capacity + 1), dtype=np.float32)
    keep = np.zeros((n + 1, capacity + 1), dtype=bool)
    for i in range(1, n + 1):
        for w in range(capacity + 1):
            wi, vi = weights[i - 1], values[i - 1]
            if wi <= w and vi + table[i - 1, w - wi] > table[i - 1, w]:
                table[i, w], keep[i, w] = vi + table[i - 1, w - wi], True
            else:
                table[i, w] = table[i - 1, w]
    picks, w = [], capacity
    for i in range(n, 0, -1):
        if keep[i, w]:
            picks.append(i - 1)
            w -= weights[i - 1]
    return sorted(picks)


def test_knapsack_same_picks_as_table_version_including_ties():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(1, 9))
        values = rng.integers(0, 4, n).astype(float).tolist()  # small integers: many ties
        weights = rng.integers(1, 6, n).tolist()
        capacity = int(rng.integers(0, 15))
        assert knapsack_01(values, weights, capacity) == _table_knapsack(values, weights, capacity)


def _combinations(n, k):
    import itertools

    return itertools.combinations(range(n), k)


def test_upsample_and_generate_summary_hand_case():
    frame_scores = upsample_to_frames([0.2, 0.9], [0, 5], 10)
    np.testing.assert_allclose(frame_scores, [0.2] * 5 + [0.9] * 5)
    np.testing.assert_allclose(upsample_to_frames([0.5, 0.7], [2, 6], 8), [0, 0, 0.5, 0.5, 0.5, 0.5, 0.7, 0.7])
    cps = np.array([[0, 2], [3, 6], [7, 9]])
    # Shot means 0.2, 0.55, 0.9. Capacity floor(10 * 0.15) = 1 frame: no shot fits.
    assert generate_summary([0.2, 0.9], cps, 10, [3, 4, 3], [0, 5], ratio=0.15).sum() == 0
    # Capacity 5: only one shot fits and the last one (0.9) is best.
    summary = generate_summary([0.2, 0.9], cps, 10, [3, 4, 3], [0, 5], ratio=0.5)
    np.testing.assert_array_equal(summary, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
