"""Sinkhorn OT: marginals on a hand-made case, the known optimum, and the temporal fusion's shapes / gradients."""

import pytest
import torch

from sgg.modeling.layers.optimal_transport import OTTemporalFusion, sinkhorn


def test_marginals_and_plan_on_a_hand_made_case():
    # 4 frames -> 2 slots, cost = squared temporal distance: frames 0, 1 belong to slot 0 and frames 2, 3 to slot 1
    r = (torch.arange(4.0) + 0.5) / 4
    s = (torch.arange(2.0) + 0.5) / 2
    cost = (r[:, None] - s[None]) ** 2
    a, b = torch.full((4,), 0.25), torch.full((2,), 0.5)
    plan = sinkhorn(cost, a, b, eps=0.005, iters=200)
    assert torch.allclose(plan.sum(1), a, atol=1e-5) and torch.allclose(plan.sum(0), b, atol=1e-6)
    expected = torch.tensor([[0.25, 0.0], [0.25, 0.0], [0.0, 0.25], [0.0, 0.25]])
    assert torch.allclose(plan, expected, atol=1e-3)
    # non-uniform marginals are respected too
    a2 = torch.tensor([0.1, 0.2, 0.3, 0.4])
    b2 = torch.tensor([0.7, 0.3])
    plan2 = sinkhorn(torch.rand(4, 2), a2, b2, eps=0.1, iters=300)
    assert torch.allclose(plan2.sum(1), a2, atol=1e-4) and torch.allclose(plan2.sum(0), b2, atol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        sinkhorn(torch.rand(3, 2), a, b)


def test_fusion_compresses_frames_into_barycentres_and_is_differentiable():
    fusion = OTTemporalFusion(frames_per_token=2, eps=0.05, iters=50)
    x = torch.randn(5, 8, requires_grad=True)
    tokens, plan = fusion(x)
    assert tokens.shape == (3, 8) and plan.shape == (5, 3)  # ceil(5 / 2) tokens
    assert torch.allclose(plan.sum(0), torch.full((3,), 1 / 3), atol=1e-5)
    assert torch.allclose(tokens, 3 * plan.t() @ x)  # each token: a weighted mean of frames (weights sum to 1)
    tokens.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    one, p1 = fusion(torch.randn(1, 8))
    assert one.shape == (1, 8) and torch.allclose(p1, torch.ones(1, 1))
