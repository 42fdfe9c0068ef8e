"""Transformer encoders over groups of rows (tracklets, frames) with sinusoidal positions, for DSG-DETR-style models.

Rows arrive flat, ``(N, D)``, each with a group id (a track id, a frame) and a position (its frame index). The rows of
each group, in their original order, become one padded sequence of a batched ``nn.TransformerEncoder`` call; with
``chunk > 0`` a group longer than ``chunk`` rows is cut into consecutive pieces of at most ``chunk`` rows, which bounds
the attention memory (O(chunk^2) per piece instead of O(T^2) for a whole-video tracklet).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from .spatial_temporal import unblock_empty

__all__ = ["sinusoidal_positions", "group_batches", "GroupTransformerEncoder"]


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sine/cosine encoding (Vaswani et al.) of integer positions ``(N,)`` -> ``(N, dim)``: even channels
    ``sin(p / 10000^(2i/dim))``, odd channels ``cos(...)``. Computed on the fly, so any position is valid."""
    if dim % 2:
        raise ValueError(f"sinusoidal_positions needs an even width, got {dim}.")
    p = positions.to(torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(len(positions), dim, device=positions.device)
    out[:, 0::2] = torch.sin(p * div)
    out[:, 1::2] = torch.cos(p * div)
    return out


def group_batches(groups: torch.Tensor, chunk: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded batch of the rows of each group (rows of a group keep their order).

    ``groups`` ``(N,)`` int64 ids (any values). Returns ``index`` ``(S, L)`` row indices (padding slots point at row
    0), ``pad`` ``(S, L)`` bool (True = padding) and ``slot`` ``(N,)``: row ``i`` sits at ``index.view(-1)[slot[i]]``.
    ``chunk > 0`` splits groups longer than ``chunk`` into consecutive pieces.
    """
    n = len(groups)
    device = groups.device
    if n == 0:
        empty = torch.zeros((0, 1), dtype=torch.long, device=device)
        return empty, empty.bool(), torch.zeros(0, dtype=torch.long, device=device)
    order = torch.sort(groups, stable=True).indices  # rows grouped, original order inside a group
    g = groups[order]
    new = torch.ones(n, dtype=torch.bool, device=device)
    new[1:] = g[1:] != g[:-1]
    start_of = torch.cummax(torch.where(new, torch.arange(n, device=device), torch.zeros_like(order)), 0).values
    rank = torch.arange(n, device=device) - start_of  # position of each sorted row inside its group
    seq = torch.cumsum(new.long(), 0) - 1  # sequence id per sorted row
    if chunk > 0:
        piece = rank // chunk
        new_piece = new | (rank % chunk == 0)
        seq = torch.cumsum(new_piece.long(), 0) - 1
        rank = rank - piece * chunk
    num_seq = int(seq[-1]) + 1
    length = int(rank.max()) + 1
    index = torch.zeros((num_seq, length), dtype=torch.long, device=device)
    pad = torch.ones((num_seq, length), dtype=torch.bool, device=device)
    index[seq, rank] = order
    pad[seq, rank] = False
    slot = torch.empty(n, dtype=torch.long, device=device)
    slot[order] = seq * length + rank
    return index, pad, slot


class GroupTransformerEncoder(nn.Module):
    """``layers`` post-norm ``nn.TransformerEncoderLayer`` s (ReLU, batch first) applied within groups of rows, with an
    optional sinusoidal encoding of each row's position added to the input first (as DSG-DETR's
    ``PositionalEncoding``, dropout included).

    ``forward(x (N, D), groups (N,), positions (N,) or None) -> (N, D)`` in the input's row order; rows of different
    groups never attend to each other.
    """

    def __init__(self, *, dim: int, layers: int, num_heads: int, dim_feedforward: int, dropout: float,
                 use_positions: bool = True, chunk: int = 0):
        """
        Args:
            dim / num_heads / dim_feedforward / dropout: the encoder layers' sizes (``dim % num_heads == 0``).
            layers: depth (0 = identity).
            use_positions: add ``sinusoidal_positions(positions)`` to the input.
            chunk: > 0 cuts groups into pieces of at most ``chunk`` rows (memory cap on long videos).
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"GroupTransformerEncoder: width {dim} is not divisible by {num_heads} heads.")
        if use_positions and dim % 2:
            raise ValueError(f"GroupTransformerEncoder: sinusoidal positions need an even width, got {dim}.")
        if chunk < 0:
            raise ValueError(f"GroupTransformerEncoder: chunk must be >= 0 (0 = whole groups), got {chunk}.")
        self.dim, self.use_positions, self.chunk = dim, use_positions, int(chunk)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward, dropout, batch_first=True)
            for _ in range(layers)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, groups: torch.Tensor, positions: torch.Tensor = None) -> torch.Tensor:
        if x.shape[0] == 0 or not self.layers:
            return x
        if self.use_positions:
            if positions is None:
                raise ValueError("GroupTransformerEncoder(use_positions=True) needs positions.")
            x = self.dropout(x + sinusoidal_positions(positions, self.dim).to(x.dtype))
        index, pad, slot = group_batches(groups.to(x.device), self.chunk)
        h = x[index]
        pad_ok = unblock_empty(pad)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad_ok)
        return h.reshape(-1, x.shape[1])[slot]
