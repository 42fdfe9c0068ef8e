"""OED's pair matcher: the cost matrix equals the formula written out entry by entry, and the assignment is the
brute-force optimum."""

import itertools

import torch

from sgg.modeling.matchers.pair import GROUP_COST_EPS, PairHungarianMatcher, pair_cost_matrix
from sgg.structures.boxes import box_cxcywh_to_xyxy, generalized_box_iou


def _random_frame(q, t, seed):
    g = torch.Generator().manual_seed(seed)
    outputs = {"obj_logits": torch.randn(q, 6, generator=g), "attention": torch.randn(q, 4, generator=g),
               "spatial": torch.randn(q, 3, generator=g), "contacting": torch.randn(q, 5, generator=g),
               "sub_boxes": torch.rand(q, 2, generator=g) * 0.5 + torch.tensor([0.25, 0.25]),
               "obj_boxes": torch.rand(q, 2, generator=g) * 0.5 + torch.tensor([0.25, 0.25])}
    for k in ("sub_boxes", "obj_boxes"):
        outputs[k] = torch.cat([outputs[k], torch.rand(q, 2, generator=g) * 0.3 + 0.05], 1)
    target = {"labels": torch.randint(0, 5, (t,), generator=g),
              "attention": torch.nn.functional.one_hot(torch.randint(0, 3, (t,), generator=g), 3).float(),
              "spatial": (torch.rand(t, 3, generator=g) > 0.5).float(),
              "contacting": (torch.rand(t, 5, generator=g) > 0.6).float(),
              "sub_boxes": torch.cat([torch.rand(t, 2, generator=g) * 0.5 + 0.25,
                                      torch.rand(t, 2, generator=g) * 0.3 + 0.05], 1),
              "obj_boxes": torch.cat([torch.rand(t, 2, generator=g) * 0.5 + 0.25,
                                      torch.rand(t, 2, generator=g) * 0.3 + 0.05], 1)}
    if t:
        target["spatial"][0] = 0  # a target without any positive of a group
    return outputs, target


def _brute_cost(outputs, target, w):
    q, t = len(outputs["obj_logits"]), len(target["labels"])
    cost = torch.zeros(q, t, dtype=torch.float64)
    for i in range(q):
        p_obj = outputs["obj_logits"][i].double().softmax(0)
        probs = {"attention": outputs["attention"][i].double().softmax(0)[:3],
                 "spatial": outputs["spatial"][i].double().sigmoid(),
                 "contacting": outputs["contacting"][i].double().sigmoid()}
        for j in range(t):
            rel = 0.0
            for g, p in probs.items():
                y = target[g][j].double()
                rel += -0.5 * (float((p * y).sum()) / (float(y.sum()) + GROUP_COST_EPS)
                               + float(((1 - p) * (1 - y)).sum()) / (float((1 - y).sum()) + GROUP_COST_EPS))
            l1 = max(float((outputs[k][i] - target[k][j]).abs().sum()) for k in ("sub_boxes", "obj_boxes"))
            giou = max(-float(generalized_box_iou(box_cxcywh_to_xyxy(outputs[k][i:i + 1]),
                                                  box_cxcywh_to_xyxy(target[k][j:j + 1]))[0, 0])
                       for k in ("sub_boxes", "obj_boxes"))
            cost[i, j] = (w["cost_obj_class"] * -float(p_obj[target["labels"][j]]) + w["cost_relation"] * rel
                          + w["cost_bbox"] * l1 + w["cost_giou"] * giou)
    return cost


def test_cost_matrix_equals_the_formula_entry_by_entry():
    outputs, target = _random_frame(5, 4, 0)
    w = {"cost_obj_class": 1.0, "cost_relation": 0.7, "cost_bbox": 2.5, "cost_giou": 1.3}
    got = pair_cost_matrix(outputs, target, **w)
    assert torch.allclose(got.double(), _brute_cost(outputs, target, w), atol=1e-5)


def test_assignment_is_the_brute_force_optimum_per_frame():
    frames = [_random_frame(5, t, seed) for seed, t in ((1, 3), (2, 0), (3, 4))]
    outputs = {k: torch.stack([f[0][k] for f in frames]) for k in frames[0][0]}
    matcher = PairHungarianMatcher()
    indices = matcher(outputs, [f[1] for f in frames])
    assert [len(i) for i, _ in indices] == [3, 0, 4]
    for (rows, cols), (out, tgt) in zip(indices, frames):
        t = len(tgt["labels"])
        if not t:
            continue
        cost = _brute_cost(out, tgt, matcher.costs)
        best = min(sum(float(cost[r, c]) for c, r in enumerate(perm))
                   for perm in itertools.permutations(range(5), t))
        assert abs(sum(float(cost[r, c]) for r, c in zip(rows.tolist(), cols.tolist())) - best) < 1e-6
        assert sorted(cols.tolist()) == list(range(t))
