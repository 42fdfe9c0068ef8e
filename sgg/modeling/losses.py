"""Losses shared by models, and the class weights of their cross-entropies.

* Class weights: :func:`class_weights_with_background` (uniform classes + a background column, e.g. DETR's
  no-object weight) and :func:`relation_class_weights` (predicate weights from training-set frequencies, SpeaQ /
  IterativeSG), both ``(K + 1,)`` with the background / no-relation weight last.
* Ranking losses are registered in ``RANKING_LOSS_REGISTRY`` (chosen by name in configs). Every ranking loss takes
  ``pred`` and ``target`` of shape ``(B, T)`` and a boolean ``mask`` ``(B, T)`` (True = a real step, False =
  padding) and returns a scalar; sequences with fewer than two valid steps contribute nothing.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sgg.utils.registry import Registry

__all__ = ["class_weights_with_background", "check_predicate_frequencies", "relation_class_weights",
           "RANKING_LOSS_REGISTRY", "build_ranking_loss", "soft_rank", "average_rank", "soft_spearman_loss",
           "pairwise_margin_ranking_loss", "masked_mse_loss"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- class weights
def class_weights_with_background(num_classes: int, background_weight: float) -> torch.Tensor:
    """``(num_classes + 1,)`` float32 CE class weights: 1 for every class, ``background_weight`` for the last
    (background / no-object / no-relation) column."""
    weights = torch.ones(num_classes + 1)
    weights[-1] = background_weight
    return weights


def check_predicate_frequencies(frequencies: Sequence[float]) -> np.ndarray:
    """Training-set predicate counts (``predicate_frequencies`` metadata) as a float64 ``(P,)`` array; raises
    ``ValueError`` unless they are finite, >= 0 and have a positive sum."""
    freq = np.asarray(frequencies, dtype=np.float64).reshape(-1)
    if freq.size == 0 or not np.all(np.isfinite(freq)) or np.any(freq < 0) or freq.sum() <= 0:
        raise ValueError("predicate frequencies must be a non-empty list of finite counts >= 0 with a positive sum; "
                         f"got {list(frequencies)[:10]}...")
    return freq


def relation_class_weights(frequencies: Sequence[float], oversample: float, undersample: float,
                           no_relation_weight: float = 0.1) -> torch.Tensor:
    """Relation CE class weights ``w_c = max(sqrt(alpha / f_c), 1) ** beta`` (``f_c`` = share of predicate c among
    training relations, ``alpha = OVERSAMPLE_PARAM``, ``beta = UNDERSAMPLE_PARAM``), followed by the no-relation
    weight -> ``(P + 1,)`` float32. ``alpha <= 0`` gives uniform weights. Unseen predicates (f = 0) get weight 1."""
    freq = check_predicate_frequencies(frequencies)
    share = freq / freq.sum()
    w = np.ones_like(share)
    if oversample > 0:
        seen = share > 0
        w[seen] = np.maximum(np.sqrt(oversample / share[seen]), 1.0) ** undersample
    return torch.as_tensor(np.append(w, no_relation_weight), dtype=torch.float32)


# ---------------------------------------------------------------------------- ranking losses
RANKING_LOSS_REGISTRY = Registry("RANKING_LOSS")
RANKING_LOSS_REGISTRY.__doc__ = """Ranking losses ``fn(pred, target, mask, **kwargs) -> scalar`` over (B, T) scores."""


def _default_mask(pred: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(pred, dtype=torch.bool)
    if mask.shape != pred.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from prediction shape {tuple(pred.shape)}.")
    return mask.bool()


def soft_rank(scores: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Differentiable ranks ``(B, T)``: ``r_i = sum_j sigmoid((s_i - s_j) / temperature)`` over valid ``j``.

    As ``temperature -> 0`` this tends to the (average, 0.5-based) rank of ``s_i`` among the valid steps.
    """
    diff = (scores.unsqueeze(-1) - scores.unsqueeze(-2)) / temperature  # (B, T, T): s_i - s_j
    return (torch.sigmoid(diff) * mask.unsqueeze(-2)).sum(-1)


def average_rank(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact average ranks (ties share their mean rank, like scipy's ``rankdata``; 0.5-based) over valid steps."""
    greater = (values.unsqueeze(-1) > values.unsqueeze(-2)).float()
    equal = (values.unsqueeze(-1) == values.unsqueeze(-2)).float()
    valid = mask.unsqueeze(-2).float()
    return ((greater + 0.5 * equal) * valid).sum(-1)


def _masked_pearson(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row over valid entries -> (B,)."""
    m = mask.float()
    n = m.sum(-1).clamp(min=1)
    xc = (x - (x * m).sum(-1, keepdim=True) / n.unsqueeze(-1)) * m
    yc = (y - (y * m).sum(-1, keepdim=True) / n.unsqueeze(-1)) * m
    denom = (xc.pow(2).sum(-1) * yc.pow(2).sum(-1)).clamp(min=1e-12).sqrt()
    return (xc * yc).sum(-1) / denom


@RANKING_LOSS_REGISTRY.register("soft_spearman")
def soft_spearman_loss(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                       temperature: float = 0.05, **unused) -> torch.Tensor:
    """``1 - rho`` where rho is Spearman's correlation between soft ranks of ``pred`` and exact ranks of ``target``.

    Rows whose target is constant (no ranking to learn) or that have < 2 valid steps are ignored.
    """
    mask = _default_mask(pred, mask)
    rho = _masked_pearson(soft_rank(pred, mask, temperature), average_rank(target, mask), mask)
    t_masked = target.masked_fill(~mask, float("nan"))
    usable = (mask.sum(-1) >= 2) & (torch.nan_to_num(t_masked, nan=float("-inf")).amax(-1)
                                     > torch.nan_to_num(t_masked, nan=float("inf")).amin(-1))
    if not usable.any():
        return pred.sum() * 0.0  # keeps the graph connected for DDP
    return (1.0 - rho[usable]).mean()


@RANKING_LOSS_REGISTRY.register("pairwise_margin")
def pairwise_margin_ranking_loss(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                                 margin: float = 0.05, **unused) -> torch.Tensor:
    """Hinge loss ``max(0, margin - (s_i - s_j))`` averaged over valid pairs with ``target_i > target_j``."""
    mask = _default_mask(pred, mask)
    ordered = (target.unsqueeze(-1) > target.unsqueeze(-2)) & mask.unsqueeze(-1) & mask.unsqueeze(-2)
    if not ordered.any():
        return pred.sum() * 0.0
    gaps = pred.unsqueeze(-1) - pred.unsqueeze(-2)
    return F.relu(margin - gaps)[ordered].mean()


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error over valid steps."""
    mask = _default_mask(pred, mask)
    if not mask.any():
        return pred.sum() * 0.0
    return F.mse_loss(pred[mask], target[mask])


def build_ranking_loss(name: str):
    """The ranking loss registered as ``name``."""
    return RANKING_LOSS_REGISTRY.get(name)
