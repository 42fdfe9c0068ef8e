"""STKET's knowledge-embedded attention layers (Pu et al., TIP 2024).

A prior embedding ``p`` (a relation prior mapped to the feature width) is added to the input of the query and key
projections but not of the value projection, so the prior steers *which* tokens attend to each other without being
copied into the features: ``Q = W_q(x + p) (+ pos)``, ``K = W_k(x + p) (+ pos)``, ``V = W_v(x)``, then multi-head
attention (which has its own in-projections, as upstream). With ``p = 0`` a layer is a plain self-attention layer
with three extra linear maps.

Inputs are batch-first ``(B, L, D)`` with ``pad`` ``(B, L)`` True at padding.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["KnowledgeEncoderLayer", "KnowledgeDecoderLayer", "prior_embedding"]


def prior_embedding(num_predicates: int, dim: int) -> nn.Sequential:
    """STKET's ``state_fc``: Linear 26 -> 128 -> 256 -> 512 -> ``dim`` with no activations in between (as upstream;
    the composition is linear, the factorisation only changes the optimisation)."""
    return nn.Sequential(nn.Linear(num_predicates, 128), nn.Linear(128, 256), nn.Linear(256, 512),
                         nn.Linear(512, dim))


class _KnowledgeAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.w_q, self.w_k, self.w_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)

    def forward(self, x, prior, pad, pos: Optional[torch.Tensor] = None):
        q, k = self.w_q(x + prior), self.w_k(x + prior)
        if pos is not None:
            q, k = q + pos, k + pos
        out, _ = self.attn(q, k, self.w_v(x), key_padding_mask=pad, need_weights=False)
        return out


class KnowledgeEncoderLayer(nn.Module):
    """Spatial-encoder layer: knowledge-embedded self-attention, residual + LayerNorm, ReLU FFN, residual + LayerNorm
    (post-norm). ``forward(x (B, L, D), prior (B, L, D), pad (B, L)) -> (B, L, D)``."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.attn = _KnowledgeAttention(dim, num_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, dim_feedforward), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim_feedforward, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, prior: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        x = self.norm1(x + self.drop1(self.attn(x, prior, pad)))
        return self.norm2(x + self.drop2(self.ffn(x)))


class KnowledgeDecoderLayer(nn.Module):
    """Temporal / ensemble decoder layer: knowledge-embedded self-attention with a position encoding added to the
    projected queries and keys, residual + LayerNorm, ReLU FFN with a residual and no norm after it (as upstream and
    STTran's decoder). ``forward(x, prior, pad, pos) -> (B, L, D)``."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.attn = _KnowledgeAttention(dim, num_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, dim_feedforward), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim_feedforward, dim))
        self.norm = nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, prior: torch.Tensor, pad: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """See the class docstring."""
        x = self.norm(x + self.drop1(self.attn(x, prior, pad, pos)))
        return x + self.drop2(self.ffn(x))
