"""torchvision ResNet-50/101 backbone with frozen BatchNorm (DETR's backbone), weights from a local file only."""

from __future__ import annotations

import logging
import os

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..build import BACKBONE_REGISTRY

__all__ = ["ResNet"]

logger = logging.getLogger(__name__)

_DEPTHS = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}


@BACKBONE_REGISTRY.register()
class ResNet(nn.Module):
    """ResNet-``MODEL.BACKBONE.DEPTH`` (50 or 101) returning the last stage (C5):
    ``(B, 3, H, W) -> (B, 2048, H/32, W/32)``.

    Every BatchNorm is a :class:`torchvision.ops.FrozenBatchNorm2d` (batch statistics of a few images per GPU are
    useless). ``MODEL.BACKBONE.FREEZE_AT`` = k freezes the stem (k >= 1) and the first k-1 residual stages (detectron2's
    convention; DETR trains everything but the stem and res2, i.e. k = 2). ``MODEL.BACKBONE.WEIGHTS``: a local
    torchvision state dict (e.g. ``resnet101-63fe2227.pth``); nothing is ever downloaded.
    """

    def __init__(self, cfg):
        super().__init__()
        depth = cfg.MODEL.BACKBONE.DEPTH
        if depth not in _DEPTHS:
            raise ValueError(f"MODEL.BACKBONE.DEPTH must be one of {sorted(_DEPTHS)} for ResNet, got {depth}.")
        net = _DEPTHS[depth](weights=None, norm_layer=FrozenBatchNorm2d)
        weights = cfg.MODEL.BACKBONE.WEIGHTS
        if weights:
            self._load(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels = 2048
        self.stride = 32
        self._freeze(cfg.MODEL.BACKBONE.FREEZE_AT)

    @staticmethod
    def _load(net: nn.Module, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MODEL.BACKBONE.WEIGHTS='{path}' does not exist (weights load from local files "
                                    f"only).")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is not part of C5
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"Backbone weights '{path}' do not fit the ResNet: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}.")
        logger.info("Loaded ResNet backbone weights from %s", path)

    def _freeze(self, freeze_at: int) -> None:
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT must be in [0, 5], got {freeze_at}.")
        if freeze_at >= 1:
            self.stem.requires_grad_(False)
        for stage in self.stages[: max(freeze_at - 1, 0)]:
            stage.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
        return x
