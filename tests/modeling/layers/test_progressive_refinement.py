"""OED's progressive refinement: query scores, top-k selection per layer, reference-frame rules."""

import pytest
import torch

from sgg.modeling.layers import (
    ProgressiveRefinement,
    reference_query_scores,
    select_reference_frames,
    top_reference_queries,
)
from sgg.modeling.set_prediction import focal_multi_label_loss


def test_query_scores_are_the_product_of_the_best_probabilities():
    obj = torch.tensor([[2.0, 0.0, 5.0]])  # last column = no object: excluded
    att = torch.tensor([[1.0, 0.0, 0.0, 3.0]])  # last column = background: excluded from the max
    spa, con = torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0]])
    p_obj = torch.tensor([2.0, 0.0, 5.0]).softmax(0)[0]
    p_att = torch.tensor([1.0, 0.0, 0.0, 3.0]).softmax(0)[0]
    expected = p_obj * p_att * torch.sigmoid(torch.tensor(1.0)) * torch.sigmoid(torch.tensor(-1.0))
    assert torch.allclose(reference_query_scores(obj, att, spa, con), expected[None])


def test_top_k_takes_the_best_scored_reference_queries_in_order():
    refs = torch.arange(6, dtype=torch.float32).view(1, 6, 1).repeat(1, 1, 2)  # query i has features (i, i)
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.0, 0.3]])
    top = top_reference_queries(refs, scores, 3)
    assert top[0, :, 0].tolist() == [1.0, 3.0, 2.0]  # ties: lower index first
    assert top_reference_queries(refs, scores, 99).shape == (1, 6, 2)  # capped at N


def test_refinement_layers_attend_to_fewer_queries_coarse_to_fine():
    module = ProgressiveRefinement(8, 2, 16, 0.0, (0.8, 0.5, 0.3))
    assert module.num_selected(200) == [160, 100, 60]  # upstream: 100 queries x 2 reference frames
    seen = []
    for layer in module.layers:
        layer.register_forward_hook(lambda m, args, out: seen.append(args[1].shape[1]))
    module(torch.randn(2, 5, 8), torch.randn(2, 10, 8), torch.rand(2, 10))
    assert seen == [8, 5, 3]
    # the selection matters: permuting unselected reference queries changes nothing, the output depends on scores
    module.eval()
    key, refs, scores = torch.randn(1, 5, 8), torch.randn(1, 10, 8), torch.rand(1, 10)
    out = module(key, refs, scores)
    worst = torch.argsort(scores[0])[:2]  # never among the 8 best
    refs2 = refs.clone()
    refs2[0, worst] = torch.randn(2, 8)
    assert torch.allclose(module(key, refs2, scores), out, atol=1e-6)
    assert not torch.allclose(module(key, refs, 1 - scores), out)
    with pytest.raises(ValueError, match="TOPK_FRACTIONS"):
        ProgressiveRefinement(8, 2, 16, 0.0, (0.5, 1.5))


def test_reference_frames_follow_upstreams_rules():
    strided = select_reference_frames(10, 2, 4, "strided")
    assert strided[5].tolist() == [1, 9]  # candidates 1-4, 6-9 (8): step (8 - 1) // 1 = 7
    assert strided[0].tolist() == [1, 4]  # candidates 1..4: step 3
    assert strided[9].tolist() == [5, 8]  # candidates 5..8
    assert select_reference_frames(3, 2, 4, "strided")[1].tolist() == [0, 2]
    assert select_reference_frames(2, 2, 4, "strided")[0].tolist() == [1, 1]  # one candidate, repeated
    assert select_reference_frames(1, 2, 4, "random").tolist() == [[0, 0]]  # alone: its own reference
    causal = select_reference_frames(10, 2, 4, "causal_strided")
    assert causal[5].tolist() == [1, 4] and causal[0].tolist() == [0, 0] and causal[1].tolist() == [0, 0]
    torch.manual_seed(0)
    drawn = select_reference_frames(10, 2, 4, "random")
    for t in range(10):
        row = drawn[t].tolist()
        assert t not in row and all(abs(r - t) <= 4 for r in row) and len(set(row)) == 2
    torch.manual_seed(0)
    assert torch.equal(select_reference_frames(10, 2, 4, "random"), drawn)  # torch's RNG: resumable
    past = select_reference_frames(10, 2, 3, "causal_random")
    assert all(all(t - 3 <= r < t for r in past[t].tolist()) for t in range(1, 10))
    with pytest.raises(ValueError, match="reference rule"):
        select_reference_frames(3, 2, 4, "future")


def test_focal_multi_label_loss_equals_the_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    p = logits.sigmoid()
    a = 0.5
    pos = -(a * torch.log(p) * (1 - p) ** 2 * y).sum()
    neg = -((1 - a) * torch.log(1 - p) * p ** 2 * (1 - y)).sum()
    assert torch.allclose(focal_multi_label_loss(logits, y, a), (pos + neg) / 1)
    # no positive at all: the summed negative term, not divided
    assert torch.allclose(focal_multi_label_loss(logits, torch.zeros(2, 2), a),
                          -((1 - a) * torch.log(1 - p) * p ** 2).sum())
    assert torch.isfinite(focal_multi_label_loss(torch.tensor([[200.0]]), torch.zeros(1, 1)))
