"""A small convolutional backbone for the demo data and the tests (trains from scratch in minutes on a CPU)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..build import BACKBONE_REGISTRY

__all__ = ["SmallCNN"]

# Pixel coordinates are fed as two extra input channels, divided by this (so ~[0, 1] on demo-sized images).
COORD_SCALE = 256.0


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(math.gcd(8, cout), cout), nn.ReLU(inplace=True))


@BACKBONE_REGISTRY.register()
class SmallCNN(nn.Module):
    """Four conv stages (3x3 conv + GroupNorm + ReLU, an extra stride-1 conv in the last two), each halving the
    resolution until ``MODEL.BACKBONE.SMALL_CNN_STRIDE`` (8 or 16) is reached:
    ``(B, 3, H, W) -> (B, MODEL.BACKBONE.OUT_CHANNELS, H/stride, W/stride)``.

    The input gets two CoordConv channels (x and y in pixels / 256). Why: a DETR decoder reads box positions out of
    the memory *values*, which carry no position embedding; a pretrained ResNet's large receptive fields learn that
    slowly, and a from-scratch demo model would otherwise spend its whole CPU budget predicting the same boxes for
    every image. GroupNorm rather than BatchNorm so that results do not depend on the per-worker batch size.
    """

    def __init__(self, cfg):
        super().__init__()
        out = cfg.MODEL.BACKBONE.OUT_CHANNELS
        if out < 8:
            raise ValueError(f"MODEL.BACKBONE.OUT_CHANNELS must be >= 8 for SmallCNN, got {out}.")
        stride = cfg.MODEL.BACKBONE.SMALL_CNN_STRIDE
        if stride not in (8, 16):
            raise ValueError(f"MODEL.BACKBONE.SMALL_CNN_STRIDE must be 8 or 16, got {stride}.")
        widths = [max(out // 4, 8), max(out // 2, 8), out, out]
        num_down = int(math.log2(stride))
        layers, cin = [], 5
        for i, w in enumerate(widths):
            layers.append(_block(cin, w, 2 if i < num_down else 1))
            if i >= 2:
                layers.append(_block(w, w, 1))
            cin = w
        self.body = nn.Sequential(*layers)
        self.out_channels = out
        self.stride = stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        ys = torch.arange(h, device=images.device, dtype=images.dtype) / COORD_SCALE
        xs = torch.arange(w, device=images.device, dtype=images.dtype) / COORD_SCALE
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)  # (2, H, W): x, y
        return self.body(torch.cat([images, coords[None].expand(b, -1, -1, -1)], dim=1))
