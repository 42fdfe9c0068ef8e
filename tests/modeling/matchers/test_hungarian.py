"""Hungarian matchers against brute force on small cases."""

import itertools

import pytest
import torch

from sgg.modeling.matchers.hungarian import (
    HungarianMatcher,
    IterativeHungarianMatcher,
    linear_assignment,
    triplet_cost_matrices,
)
from sgg.structures.boxes import box_cxcywh_to_xyxy, generalized_box_iou


def brute_force(cost: torch.Tensor) -> float:
    """Minimum total cost over all one-to-one assignments of min(Q, T) pairs."""
    q, t = cost.shape
    best = float("inf")
    if q >= t:
        for rows in itertools.permutations(range(q), t):
            best = min(best, sum(cost[r, c].item() for c, r in enumerate(rows)))
    else:
        for cols in itertools.permutations(range(t), q):
            best = min(best, sum(cost[r, c].item() for r, c in enumerate(cols)))
    return best


def random_boxes(n, gen):
    cxcy = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([cxcy, wh], dim=1)


@pytest.mark.parametrize("shape", [(5, 3), (4, 4), (3, 5), (6, 1)])
def test_linear_assignment_is_optimal(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    for _ in range(5):
        cost = torch.rand(shape, generator=gen) * 10 - 3
        rows, cols = linear_assignment(cost)
        assert len(rows) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert cost[rows, cols].sum().item() == pytest.approx(brute_force(cost), abs=1e-5)


def test_linear_assignment_avoids_forbidden_pairs_and_handles_empty():
    cost = torch.tensor([[0.0, float("inf")], [float("inf"), 5.0], [1.0, 1.0]])
    rows, cols = linear_assignment(cost)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (2, 1)]
    rows, cols = linear_assignment(torch.zeros(4, 0))
    assert rows.numel() == 0 and cols.numel() == 0
    with pytest.raises(ValueError, match="matrix"):
        linear_assignment(torch.zeros(3))


def test_hungarian_matcher_cost_and_assignment():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 5, 4, generator=gen)
    boxes = random_boxes(5, gen)[None]
    target = {"labels": torch.tensor([2, 0, 1]), "boxes": random_boxes(3, gen)}
    m = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    cost = m.cost_matrix(logits[0], boxes[0], target)
    prob = logits[0].softmax(-1)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes[0]), box_cxcywh_to_xyxy(target["boxes"]))
    for i in range(5):
        for j in range(3):
            expected = (-prob[i, target["labels"][j]] + 5 * (boxes[0, i] - target["boxes"][j]).abs().sum()
                        - 2 * giou[i, j])
            assert cost[i, j].item() == pytest.approx(expected.item(), abs=1e-5)
    (rows, cols), = m(logits, boxes, [target])
    assert cost[rows, cols].sum().item() == pytest.approx(brute_force(cost), abs=1e-5)
    # A prediction that is exactly a target (confident class, same box) is matched to it.
    logits2 = logits.clone()
    boxes2 = boxes.clone()
    boxes2[0, 3] = target["boxes"][1]
    logits2[0, 3] = torch.tensor([20.0, -20, -20, -20])
    (rows, cols), = m(logits2, boxes2, [target])
    assert dict(zip(cols.tolist(), rows.tolist()))[1] == 3
    with pytest.raises(ValueError, match="all matching costs are 0"):
        HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0)


def triplet_outputs(b, q, c, p, gen):
    out = {"sub_logits": torch.randn(b, q, c + 1, generator=gen), "obj_logits": torch.randn(b, q, c + 1, generator=gen),
           "rel_logits": torch.randn(b, q, p + 1, generator=gen)}
    for s in ("sub", "obj", "rel"):
        out[f"{s}_boxes"] = torch.stack([random_boxes(q, gen) for _ in range(b)])
    return out


def triplet_target(t, c, p, gen):
    target = {"sub_labels": torch.randint(c, (t,), generator=gen), "obj_labels": torch.randint(c, (t,), generator=gen),
              "rel_labels": torch.randint(p, (t,), generator=gen)}
    for s in ("sub", "obj", "rel"):
        target[f"{s}_boxes"] = random_boxes(t, gen)
    return target


def test_triplet_cost_sums_three_streams():
    gen = torch.Generator().manual_seed(1)
    out = triplet_outputs(1, 4, 3, 5, gen)
    tgt = triplet_target(2, 3, 5, gen)
    cost, = triplet_cost_matrices(out, [tgt], cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    single = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    expected = sum(single.cost_matrix(out[f"{s}_logits"][0], out[f"{s}_boxes"][0],
                                      {"labels": tgt[f"{s}_labels"], "boxes": tgt[f"{s}_boxes"]})
                   for s in ("sub", "obj", "rel"))
    assert torch.allclose(cost, expected, atol=1e-5)


def test_iterative_matcher_independent_vs_shared():
    gen = torch.Generator().manual_seed(2)
    layers = [triplet_outputs(2, 5, 3, 4, gen) for _ in range(3)]
    targets = [triplet_target(3, 3, 4, gen), triplet_target(0, 3, 4, gen)]
    indep = IterativeHungarianMatcher(match_independent=True)(layers, targets)
    assert len(indep) == 3
    for out, (indices, tgts) in zip(layers, indep):
        costs = triplet_cost_matrices(out, tgts, cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
        for (rows, cols), cost in zip(indices, costs):
            assert len(rows) == cost.shape[1]
            if cost.shape[1]:
                assert cost[rows, cols].sum().item() == pytest.approx(brute_force(cost), abs=1e-4)
    shared = IterativeHungarianMatcher(match_independent=False)(layers, targets)
    total = [sum(triplet_cost_matrices(out, targets, cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)[0]
                 for out in layers)][0]
    rows, cols = shared[0][0][0]
    assert total[rows, cols].sum().item() == pytest.approx(brute_force(total), abs=1e-4)
    assert all(torch.equal(m[0][0][0], rows) and torch.equal(m[0][0][1], cols) for m in shared)
