"""Optimal-transport temporal fusion (SceneLLM): compress a video's frame tokens into fewer, ordered tokens.

SceneLLM aligns the sequence of frame tokens with a shorter token sequence by optimal transport before the LLM reads
it. Here, for ``T`` frame tokens ``x_i`` and ``M = ceil(T / FRAMES_PER_TOKEN)`` output slots::

    slot anchors q_j = mean of the frames of the j-th uniform segment (positions s_j = (j + 0.5) / M)
    cost C_ij        = TIME_WEIGHT x (r_i - s_j)^2 + (1 - cos(x_i, q_j))      (r_i = (i + 0.5) / T)
    plan P (T, M)    = entropic OT between uniform marginals a = 1/T (frames) and b = 1/M (slots), Sinkhorn
    tokens y_j       = M x sum_i P_ij x_i       (a barycentre: every slot's weights sum to 1)

``P`` also maps the LLM's outputs back to the frames (frame i gets ``T x sum_j P_ij h_j``), so every frame reads the
contextualised tokens it was transported to.

Sinkhorn is written here in PyTorch (log domain) instead of calling POT: it is differentiable end to end (the plan's
gradient reaches the frame tokens), runs on the model's device (POT's torch backend would add a dependency), and a
fixed number of iterations keeps training deterministic.
"""

from __future__ import annotations

import logging
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["sinkhorn", "OTTemporalFusion"]

logger = logging.getLogger(__name__)


def sinkhorn(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float = 0.05, iters: int = 50) -> torch.Tensor:
    """Entropic optimal-transport plan ``(T, M)`` for ``cost`` ``(T, M)`` between marginals ``a`` ``(T,)`` and
    ``b`` ``(M,)`` (positive, same total mass), regularisation ``eps``, ``iters`` log-domain Sinkhorn iterations.

    The last update matches the column marginal ``b`` exactly; rows match ``a`` up to the iterations' convergence.
    """
    if cost.ndim != 2 or cost.shape != (len(a), len(b)):
        raise ValueError(f"sinkhorn: cost {tuple(cost.shape)} does not match marginals ({len(a)},) and ({len(b)},).")
    if eps <= 0 or iters < 1:
        raise ValueError(f"sinkhorn: eps must be > 0 and iters >= 1 (MODEL.SCENELLM.OT_EPS / OT_ITERS), got {eps}, "
                         f"{iters}.")
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    for _ in range(iters):
        f = eps * (log_a - torch.logsumexp((g[None, :] - cost) / eps, dim=1))
        g = eps * (log_b - torch.logsumexp((f[:, None] - cost) / eps, dim=0))
    return torch.exp((f[:, None] + g[None, :] - cost) / eps)


class OTTemporalFusion(nn.Module):
    """Frame tokens ``(T, D)`` -> ``(tokens (M, D), plan (T, M))`` by entropic OT (see the module docstring).

    Parameter-free: what it learns comes through the tokens it is given.
    """

    def __init__(self, *, frames_per_token: int = 2, eps: float = 0.05, iters: int = 50, time_weight: float = 1.0):
        super().__init__()
        if frames_per_token < 1:
            raise ValueError(f"MODEL.SCENELLM.OT_FRAMES_PER_TOKEN must be >= 1, got {frames_per_token}.")
        self.frames_per_token, self.eps, self.iters = int(frames_per_token), float(eps), int(iters)
        self.time_weight = float(time_weight)

    def num_tokens(self, num_frames: int) -> int:
        """Output tokens for ``num_frames`` frame tokens: ``ceil(T / FRAMES_PER_TOKEN)`` (at least 1)."""
        return max(1, math.ceil(num_frames / self.frames_per_token))

    def cost(self, x: torch.Tensor, m: int) -> torch.Tensor:
        """Transport cost ``(T, m)`` of the frame tokens ``x`` ``(T, D)`` to ``m`` slots."""
        t = len(x)
        segment = torch.div(torch.arange(t, device=x.device) * m, t, rounding_mode="floor")  # uniform segments
        counts = torch.bincount(segment, minlength=m).clamp(min=1).to(x.dtype)
        anchors = x.new_zeros((m, x.shape[1])).index_add(0, segment, x) / counts[:, None]
        r = (torch.arange(t, device=x.device, dtype=x.dtype) + 0.5) / t
        s = (torch.arange(m, device=x.device, dtype=x.dtype) + 0.5) / m
        similarity = F.normalize(x, dim=1, eps=1e-6) @ F.normalize(anchors, dim=1, eps=1e-6).t()
        return self.time_weight * (r[:, None] - s[None, :]) ** 2 + (1.0 - similarity)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"OTTemporalFusion: expected (T, D) frame tokens with T >= 1, got {tuple(x.shape)}.")
        t, m = len(x), self.num_tokens(len(x))
        a = x.new_full((t,), 1.0 / t)
        b = x.new_full((m,), 1.0 / m)
        plan = sinkhorn(self.cost(x, m), a, b, self.eps, self.iters)
        return m * plan.t() @ x, plan
