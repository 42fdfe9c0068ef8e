"""Sinusoidal 2-D position encoding of DETR (Carion et al. 2020) for transformer encoders over feature maps."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding of (y, x) positions that ignores padded pixels.

    ``forward(mask)`` takes a bool padding mask ``(B, H, W)`` (True = padding) and returns
    ``(B, 2 * num_pos_feats, H, W)``: the first half encodes y, the second half x. With ``normalize`` the cumulative
    positions are rescaled to ``[0, scale]`` per image, so images of different sizes in one padded batch get
    comparable codes.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True,
                 scale: Optional[float] = None):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even (sin/cos pairs), got {num_pos_feats}.")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
