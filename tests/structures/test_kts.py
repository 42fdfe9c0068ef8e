"""Kernel temporal segmentation: hand-computed scatter, exact recovery of clear shots, segment conversion."""

import numpy as np
import pytest

from sgg.structures.kts import (
    change_points_to_segments,
    kts_auto,
    kts_features_from_frames,
    kts_fixed,
    segment_scatter_table,
)


def test_scatter_table_hand_case():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = segment_scatter_table(x @ x.T)
    assert s[0, 2] == pytest.approx(0.0)  # two identical items
    assert s[0, 3] == pytest.approx(3 - 5 / 3)  # trace 3 - sum(K) / 3
    assert s[1, 3] == pytest.approx(2 - 2 / 2)  # items 1, 2: orthogonal unit vectors
    assert np.isinf(s[2, 2]) and np.isinf(s[2, 1])


def _blocks(lengths, dim=16, noise=0.2, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(lengths), dim))
    x = np.concatenate([m + noise * rng.normal(size=(n, dim)) for m, n in zip(means, lengths)])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_kts_recovers_clear_change_points():
    x = _blocks([10, 7, 12, 5])
    np.testing.assert_array_equal(kts_auto(x @ x.T), [10, 17, 29])
    cps, cost = kts_fixed(x @ x.T, 3)
    np.testing.assert_array_equal(cps, [10, 17, 29])
    assert cost < kts_fixed(x @ x.T, 2)[1]  # more segments never cost more scatter
    assert len(kts_auto(_blocks([30], seed=1) @ _blocks([30], seed=1).T)) <= 1  # one shot: (almost) no cuts
    with pytest.raises(ValueError, match="Cannot cut 4 items into 3 segments of at least 2"):
        kts_fixed(np.eye(4), 2, min_len=2)


def test_change_points_to_segments_uses_picks():
    segments = change_points_to_segments(np.array([2, 3]), np.array([0, 15, 30, 45, 60]), 70)
    np.testing.assert_array_equal(segments, [[0, 29], [30, 44], [45, 69]])


def test_features_from_frames_separate_colours():
    frames = np.zeros((6, 16, 16, 3), np.uint8)
    frames[3:] = [200, 30, 30]
    feats = kts_features_from_frames(frames)
    assert feats.shape == (6, 3 * 64 + 24)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(kts_auto(feats @ feats.T), [3])
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        kts_features_from_frames(np.zeros((2, 4, 4)))
