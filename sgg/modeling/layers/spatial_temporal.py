"""Transformer blocks of the STTran family over variable-length groups of pair features (frames, windows, tracks).

Pair features arrive flat, ``(P, D)``, grouped by frame with frames ascending. :func:`segment_index` turns contiguous
segments of rows into a padded batch ``(S, L)`` of row indices plus a padding mask, so one batched attention call
covers every frame (or every sliding window of frames) of a video.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

__all__ = ["segment_index", "unblock_empty", "TemporalDecoderLayer", "SpatialTemporalTransformer"]


def segment_index(counts: torch.Tensor, starts: torch.Tensor, length: int,
                  total: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows of segments ``[starts[i], starts[i] + counts[i])`` of a ``total``-row tensor as a padded batch.

    Returns ``index`` ``(S, length)`` int64 (padding slots clamped to a valid row, so gathering never fails) and
    ``pad`` ``(S, length)`` bool (True = padding).
    """
    offs = torch.arange(length, device=counts.device)
    index = starts[:, None] + offs[None, :]
    pad = offs[None, :] >= counts[:, None]
    return index.clamp(max=max(total - 1, 0)), pad


def unblock_empty(pad: torch.Tensor) -> torch.Tensor:
    """Copy of ``pad`` ``(S, L)`` where fully padded rows attend to their first slot, which is never read back:
    attention over an all-masked row would produce NaN."""
    pad = pad.clone()
    pad[pad.all(dim=1), 0] = False
    return pad


class TemporalDecoderLayer(nn.Module):
    """STTran's temporal decoder layer: self-attention with the frame encoding added to queries and keys (not values),
    residual + LayerNorm, then a ReLU feed-forward with a residual (the reference has no norm after it).

    Inputs are batch-first ``(B, L, D)``; ``pad`` ``(B, L)`` is True at padding.
    """

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim_feedforward), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim_feedforward, dim))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``x``, ``pos`` ``(B, L, D)``, ``pad`` ``(B, L)`` -> ``(B, L, D)``."""
        q = x + pos
        out, _ = self.attn(q, q, x, key_padding_mask=pad, need_weights=False)
        x = self.norm(x + self.drop1(out))
        return x + self.drop2(self.ffn(x))


class SpatialTemporalTransformer(nn.Module):
    """STTran's relation transformer: a spatial encoder within each frame, then a temporal decoder over sliding windows
    of ``window`` consecutive frames (stride 1) with a learned frame encoding per window position added to queries and
    keys; frame t takes its output from the window that ends at t (STTran's "latter" mode; the first frames from
    window 0).

    ``forward(x (P, D), frame_of_pair (P,) sorted ascending, num_frames) -> (P, D)``.
    """

    def __init__(self, *, dim: int, enc_layers: int, dec_layers: int, num_heads: int, dim_feedforward: int,
                 dropout: float, window: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"Relation dim {dim} (3 x VISUAL_DIM + 2 x EMBED_DIM) is not divisible by "
                             f"NUM_HEADS={num_heads}; pick sizes with dim % heads == 0 (STTran: 1936 / 8).")
        if window < 1:
            raise ValueError(f"The temporal window (TEMPORAL_WINDOW) must be >= 1, got {window}.")
        self.window = window
        self.encoder = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward, dropout, batch_first=True)
            for _ in range(enc_layers)
        ])
        self.decoder = nn.ModuleList([TemporalDecoderLayer(dim, num_heads, dim_feedforward, dropout)
                                      for _ in range(dec_layers)])
        self.frame_embedding = nn.Embedding(window, dim)
        nn.init.uniform_(self.frame_embedding.weight)  # as the reference

    # The index tensors below depend only on how many pairs each frame has, so they are computed apart from the
    # tensors they index (``*_layout``) and applied by ``*_apply``: the data-dependent part (segment lengths) stays in
    # Python while the ``*_apply`` half is shape-generic tensor code that traces (sgg.export's video core).
    def spatial_layout(self, frame_of_pair: torch.Tensor, num_frames: int) -> Dict[str, torch.Tensor]:
        """Index tensors of the spatial encoder for pairs in frames ``frame_of_pair`` ``(P,)`` (ascending, P > 0):
        ``index`` ``(T, L)`` rows gathered per frame, ``mask`` ``(T, L)`` the attention padding mask (fully padded
        rows unblocked, :func:`unblock_empty`), ``keep`` ``(P,)`` flat slots of the real pairs in ``(T * L)``."""
        counts = torch.bincount(frame_of_pair, minlength=num_frames)
        starts = torch.cumsum(counts, 0) - counts
        index, pad = segment_index(counts, starts, int(counts.max()), frame_of_pair.shape[0])
        return {"index": index, "mask": unblock_empty(pad), "keep": torch.nonzero(~pad.flatten()).squeeze(1)}

    def spatial_apply(self, x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor,
                      keep: torch.Tensor) -> torch.Tensor:
        """The spatial encoder on pair features ``x`` ``(P, D)`` with :meth:`spatial_layout`'s tensors -> ``(P, D)``
        in the original order (frames ascending, pairs in order)."""
        h = x[index]
        for layer in self.encoder:
            h = layer(h, src_key_padding_mask=mask)
        return h.flatten(0, 1)[keep]

    def temporal_layout(self, frame_of_pair: torch.Tensor, num_frames: int) -> Dict[str, torch.Tensor]:
        """Index tensors of the temporal decoder (sliding windows of ``window`` frames, stride 1) for pairs in frames
        ``frame_of_pair`` ``(P,)`` (ascending, P > 0): ``index`` ``(W, L)`` rows per window, ``position`` ``(W, L)``
        each slot's frame within its window, ``mask`` ``(W, L)`` padding (unblocked), ``gather`` ``(P,)`` the flat
        slot of ``(W * L)`` each pair reads its output from."""
        counts = torch.bincount(frame_of_pair, minlength=num_frames)
        starts = torch.cumsum(counts, 0) - counts
        num_windows = max(num_frames - self.window + 1, 1)
        w_first = torch.arange(num_windows, device=frame_of_pair.device)
        w_last = (w_first + self.window - 1).clamp(max=num_frames - 1)
        ends = starts + counts
        w_starts, w_counts = starts[w_first], ends[w_last] - starts[w_first]
        length = int(w_counts.max())
        index, pad = segment_index(w_counts, w_starts, length, frame_of_pair.shape[0])
        position = (frame_of_pair[index] - w_first[:, None]).clamp(0, self.window - 1)
        # Frame t reads the window ending at t ("latter"); the first window also serves frames 0 .. window - 2.
        window_of_pair = (frame_of_pair - self.window + 1).clamp(0, num_windows - 1)
        slot = torch.arange(frame_of_pair.shape[0], device=frame_of_pair.device) - w_starts[window_of_pair]
        return {"index": index, "position": position, "mask": unblock_empty(pad),
                "gather": window_of_pair * length + slot}

    def temporal_apply(self, x: torch.Tensor, index: torch.Tensor, position: torch.Tensor, mask: torch.Tensor,
                       gather: torch.Tensor) -> torch.Tensor:
        """The temporal decoder on ``x`` ``(P, D)`` with :meth:`temporal_layout`'s tensors -> ``(P, D)``."""
        h = x[index]
        pos = self.frame_embedding(position)
        for layer in self.decoder:
            h = layer(h, pos, mask)
        return h.flatten(0, 1)[gather]

    def spatial(self, x: torch.Tensor, frame_of_pair: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The spatial encoder alone: pairs attend to the pairs of their own frame. ``(P, D) -> (P, D)``."""
        if x.shape[0] == 0 or not self.encoder:
            return x
        return self.spatial_apply(x, **self.spatial_layout(frame_of_pair, num_frames))

    def temporal(self, x: torch.Tensor, frame_of_pair: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The temporal decoder alone over sliding windows of frames. ``(P, D) -> (P, D)``."""
        if x.shape[0] == 0 or not self.decoder:
            return x
        return self.temporal_apply(x, **self.temporal_layout(frame_of_pair, num_frames))

    def forward(self, x: torch.Tensor, frame_of_pair: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Contextualise pair features ``x`` ``(P, D)`` (pairs grouped by frame, frames ascending)."""
        return self.temporal(self.spatial(x, frame_of_pair, num_frames), frame_of_pair, num_frames)
