"""The chunked kernels of the scene-graph evaluator against plain per-segment numpy (ties, signs, NaN, edge sizes)."""

import itertools

import numpy as np
import pytest

from sgg.evaluation import scene_graph_ops as ops
from sgg.structures.boxes import paired_iou


def _segments(rng, num, low, high):
    sizes = rng.integers(low, high + 1, num)
    return sizes, ops.exclusive_cumsum(sizes), np.repeat(np.arange(num), sizes)


def _tied_values(rng, n, dtype=np.float32, signed=False):
    """Values with many exact ties, zeros of both signs and (optionally) negatives."""
    v = np.round(rng.random(n) * 8) / 8
    if signed:
        v = v - 0.5
    v = v.astype(dtype)
    v[rng.random(n) < 0.05] = -0.0
    return v


def test_exclusive_cumsum():
    assert ops.exclusive_cumsum(np.array([3, 0, 2])).tolist() == [0, 3, 3]
    assert ops.exclusive_cumsum(np.array([], dtype=np.int64)).tolist() == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 2, 7, 50])
def test_row_max_equals_numpy(dtype, width):
    rng = np.random.default_rng(width)
    a = (rng.random((3000, width)) - 0.7).astype(dtype)
    a[::13] = -np.abs(a[::13])  # rows of negative values: the integer shortcut does not apply
    a[5] = -0.0
    a[6, -1] = np.inf
    a[7] = -np.inf
    a[8, 0] = -np.inf
    a[9] = 0.0
    a[9, 0] = -0.0
    assert np.array_equal(ops.row_max(a), a.max(1))
    for nan in (np.nan, -np.nan):  # x86 produces the negative quiet NaN: it must not hide behind the sign bit
        b = a.copy()
        b[100, -1] = nan
        assert np.isnan(ops.row_max(b)[100]) and np.array_equal(ops.row_max(b), b.max(1), equal_nan=True)
    assert ops.row_max(np.zeros((0, width), dtype)).shape == (0,)
    assert np.array_equal(ops.row_max(a[:, ::-1]), a.max(1))  # non-contiguous input


def test_segment_kth_equal_and_unequal_sizes():
    rng = np.random.default_rng(0)
    for (low, high), signed in itertools.product(((5, 5), (1, 30), (12, 12)), (False, True)):
        sizes, starts, _ = _segments(rng, 40, low, high)
        values = _tied_values(rng, int(sizes.sum()), signed=signed)  # >= 0: partitioned as integers
        for k in (1, 3, 10):
            kth = ops.segment_kth(values, sizes, starts, k)
            for i, (a, n) in enumerate(zip(starts, sizes)):
                seg = np.sort(values[a:a + n])[::-1]
                assert kth[i] == (seg[k - 1] if n > k else -np.inf)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sort_segments_desc_matches_stable_sorts(dtype):
    rng = np.random.default_rng(1)
    sizes, _, segment = _segments(rng, 50, 0, 40)
    values = _tied_values(rng, segment.shape[0], dtype, signed=True)
    secondary = _tied_values(rng, segment.shape[0], dtype)
    for sec in (None, secondary):
        order, rank = ops.sort_segments_desc(values, segment, sizes.shape[0], secondary=sec)
        keys = (-values, segment) if sec is None else (-sec, -values, segment)
        assert np.array_equal(order, np.lexsort(keys))
        assert np.array_equal(rank, np.concatenate([np.arange(n) for n in sizes]))


def test_segment_top_k_is_a_stable_descending_sort_cut_at_k():
    rng = np.random.default_rng(2)
    sizes, starts, segment = _segments(rng, 60, 0, 25)
    values = _tied_values(rng, segment.shape[0])
    for k in (0, 1, 4, 30):
        index, rank = ops.segment_top_k(values, segment, sizes, starts, k)
        expected = []
        for a, n in zip(starts, sizes):
            top = a + np.argsort(-values[a:a + n], kind="stable")
            expected.append(top[:k] if k > 0 else top)
        assert np.array_equal(index, np.concatenate(expected))
        assert np.array_equal(rank, np.concatenate([np.arange(len(e)) for e in expected]))


def test_no_graph_constraint_top_matches_full_sort_of_every_combination():
    """Per image: every (pair, predicate) sorted by score desc, then the pair's graph-constrained rank, then the
    predicate -- the full-size definition the pruned kernel must reproduce, ties included."""
    rng = np.random.default_rng(3)
    num_predicates = 6
    sizes, starts, segment = _segments(rng, 30, 0, 40)
    rel = (np.round(rng.random((segment.shape[0], num_predicates)) * 6) / 6).astype(np.float32)
    pair_mult = (np.round(rng.random(segment.shape[0]) * 3) / 3).astype(np.float32)
    best = rel.max(1)
    triplet = best * pair_mult
    cut = int(starts[10])  # two pieces, as when a chunk mixes copied and referenced images
    scores = ops.ScoreRows([rel[:cut], rel[cut:]], [0, 10])
    for k in (1, 5, 17, 0):
        pair, pred, score, rank = ops.no_graph_constraint_top(pair_mult, best, scores, triplet, segment, sizes, starts,
                                                              k)
        exp_pair, exp_pred = [], []
        for a, n in zip(starts, sizes):
            gc_order = a + np.argsort(-triplet[a:a + n], kind="stable")
            combos = (pair_mult[gc_order, None] * rel[gc_order]).ravel()
            top = np.argsort(-combos, kind="stable")
            top = top[:k] if k > 0 else top
            exp_pair.append(gc_order[top // num_predicates])
            exp_pred.append(top % num_predicates)
        assert np.array_equal(pair, np.concatenate(exp_pair)) and np.array_equal(pred, np.concatenate(exp_pred))
        assert np.array_equal(score, pair_mult[pair] * rel[pair, pred])
        assert np.array_equal(rank, np.concatenate([np.arange(len(e)) for e in exp_pair]))


def test_score_rows_take_across_pieces():
    rng = np.random.default_rng(4)
    sizes = np.array([3, 0, 4, 2, 5])
    rel = rng.random((int(sizes.sum()), 3)).astype(np.float32)
    starts = ops.exclusive_cumsum(sizes)
    # pieces: images 0-1 | image 2 | images 3-4
    rows = ops.ScoreRows([rel[:3], rel[3:7], rel[7:]], [0, 2, 3])
    assert np.array_equal(rows.row_max(), rel.max(1))
    image = np.repeat(np.arange(5), sizes)
    pick = np.array([2, 0, 6, 3, 8, 7, 13, 9])  # image-major, any order within an image
    assert np.array_equal(rows.take(pick, image[pick]), rel[pick])
    assert starts.tolist() == [0, 3, 3, 7, 9]


def test_first_hit_ranks_matches_brute_force():
    rng = np.random.default_rng(5)
    num_gt, num_listed, num_boxes = 300, 4000, 6  # few boxes: equal (IoU 1) and overlapping ones recur
    boxes = np.sort(rng.integers(0, 40, (num_boxes, 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1, 4)
    boxes = boxes.astype(np.float32)
    gt_key = rng.integers(0, 60, num_gt)
    gt_sub, gt_obj = rng.integers(0, num_boxes, num_gt), rng.integers(0, num_boxes, num_gt)
    list_key = rng.integers(0, 60, num_listed)
    list_sub, list_obj = rng.integers(0, num_boxes, num_listed), rng.integers(0, num_boxes, num_listed)
    rank = rng.integers(0, 100, num_listed)
    first = ops.first_hit_ranks(gt_key, boxes[gt_sub], boxes[gt_obj], list_key, list_sub, list_obj, rank, boxes, 0.5)
    for g in range(num_gt):
        m = np.flatnonzero(list_key == gt_key[g])
        ok = (paired_iou(np.repeat(boxes[gt_sub[g]][None], m.size, 0), boxes[list_sub[m]], plus_one=True) >= 0.5) & \
             (paired_iou(np.repeat(boxes[gt_obj[g]][None], m.size, 0), boxes[list_obj[m]], plus_one=True) >= 0.5)
        assert first[g] == (rank[m[ok]].min() if ok.any() else ops.NOT_HIT)
    assert 20 < (first != ops.NOT_HIT).sum() < num_gt  # a non-trivial case
    # several lists at once (tagged entries) == one call per list
    group = rng.integers(0, 3, num_listed)
    both = ops.first_hit_ranks(gt_key, boxes[gt_sub], boxes[gt_obj], list_key, list_sub, list_obj, rank, boxes, 0.5,
                               group, 3)
    for g in range(3):
        m = group == g
        assert np.array_equal(both[g], ops.first_hit_ranks(gt_key, boxes[gt_sub], boxes[gt_obj], list_key[m],
                                                           list_sub[m], list_obj[m], rank[m], boxes, 0.5))
