"""EfficientNet-B0 frame encoder (torchvision's implementation), registered as ``EfficientNetB0``.

Input: a float tensor ``(N, 3, H, W)`` already normalised with ImageNet mean/std; output: ``(N, C)`` globally
average-pooled features with ``C = out_channels`` (1280 for B0). ``MODEL.EFFICIENTNET.WIDTH_MULT`` /
``DEPTH_MULT`` shrink the network for tests and CPU demos (1.0 / 1.0 is exactly B0, whose torchvision weights load
from ``MODEL.BACKBONE.WEIGHTS``, a local path; nothing is downloaded).

Parameter names follow torchvision: ``features.0`` is the stem, ``features.1`` .. ``features.7`` are the seven
MBConv stages and ``features.8`` is the final 1x1 conv to ``C`` channels. "The last N blocks" means the last N of
these nine children; :func:`last_blocks_prefixes` returns their parameter-name prefixes for ``SOLVER.STAGE2.UNFREEZE``.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import List

import torch
from torch import nn
from torchvision.models.efficientnet import EfficientNet, MBConvConfig

from sgg.config import configurable

from ..build import BACKBONE_REGISTRY

__all__ = ["EfficientNetBackbone", "last_blocks_prefixes", "efficientnet_b0_stages", "load_efficientnet_weights",
           "NUM_FEATURE_BLOCKS"]

logger = logging.getLogger(__name__)

NUM_FEATURE_BLOCKS = 9  # stem + 7 MBConv stages + head conv


def efficientnet_b0_stages(width_mult: float = 1.0, depth_mult: float = 1.0) -> List[MBConvConfig]:
    """The seven MBConv stages of EfficientNet-B0 (Tan & Le 2019, table 1), scaled by width/depth multipliers."""
    stage = partial(MBConvConfig, width_mult=width_mult, depth_mult=depth_mult)
    # (expand ratio, kernel, stride, in channels, out channels, layers)
    return [stage(1, 3, 1, 32, 16, 1), stage(6, 3, 2, 16, 24, 2), stage(6, 5, 2, 24, 40, 2),
            stage(6, 3, 2, 40, 80, 3), stage(6, 5, 1, 80, 112, 3), stage(6, 5, 2, 112, 192, 4),
            stage(6, 3, 1, 192, 320, 1)]


def last_blocks_prefixes(num_blocks: int, module_prefix: str = "backbone.features") -> List[str]:
    """Parameter-name prefixes of the last ``num_blocks`` EfficientNet blocks (for ``SOLVER.STAGE2.UNFREEZE``).

    ``last_blocks_prefixes(2)`` -> ``["backbone.features.7.", "backbone.features.8."]`` (the last MBConv stage and the
    head conv). The trailing dot keeps ``features.1`` from matching ``features.10``.
    """
    if not 0 <= num_blocks <= NUM_FEATURE_BLOCKS:
        raise ValueError(f"num_blocks must be in [0, {NUM_FEATURE_BLOCKS}], got {num_blocks}.")
    first = NUM_FEATURE_BLOCKS - num_blocks
    return [f"{module_prefix}.{i}." for i in range(first, NUM_FEATURE_BLOCKS)]


def load_efficientnet_weights(module: nn.Module, path: str) -> None:
    """Load a torchvision EfficientNet state dict (``features.*``; ``classifier.*`` is ignored) into ``module``.

    Accepts a raw state dict or a checkpoint holding it under ``"model"`` / ``"state_dict"``. Raises ``ValueError``
    naming the file and the mismatching keys when the weights do not fit (e.g. a B1 file for a B0 network).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet weights not found: '{path}'. Set MODEL.BACKBONE.WEIGHTS to a local "
                                "torchvision efficientnet_b0 state dict (e.g. efficientnet_b0_rwightman-7f5810bc.pth) "
                                "or to '' for random initialisation.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    own = module.state_dict()
    missing = sorted(set(own) - set(features))
    unexpected = sorted(set(features) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(features) if own[k].shape != features[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"EfficientNet weights '{path}' do not match the network (width/depth multipliers "
            f"MODEL.EFFICIENTNET.*): missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, wrong shape {wrong_shape[:5]}."
        )
    module.load_state_dict(features)
    logger.info("Loaded EfficientNet weights from %s (%d tensors)", path, len(features))


@BACKBONE_REGISTRY.register("EfficientNetB0")
class EfficientNetBackbone(nn.Module):
    """EfficientNet feature extractor: ``(N, 3, H, W)`` normalised images -> ``(N, out_channels)`` pooled features.

    ``norm_eval=True`` keeps every BatchNorm in eval mode during training, so frozen (or slowly fine-tuned)
    pretrained statistics are not overwritten by small batches of highly correlated video frames.
    """

    @configurable
    def __init__(self, *, width_mult: float = 1.0, depth_mult: float = 1.0, stochastic_depth_prob: float = 0.2,
                 weights: str = "", norm_eval: bool = True):
        super().__init__()
        net = EfficientNet(efficientnet_b0_stages(width_mult, depth_mult), dropout=0.0,
                           stochastic_depth_prob=stochastic_depth_prob)
        self.features = net.features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = int(net.classifier[1].in_features)
        self.norm_eval = norm_eval
        if weights:
            load_efficientnet_weights(self, weights)

    @classmethod
    def from_config(cls, cfg):
        return {"width_mult": cfg.MODEL.EFFICIENTNET.WIDTH_MULT, "depth_mult": cfg.MODEL.EFFICIENTNET.DEPTH_MULT,
                "stochastic_depth_prob": cfg.MODEL.EFFICIENTNET.STOCHASTIC_DEPTH_PROB,
                "weights": cfg.MODEL.BACKBONE.WEIGHTS, "norm_eval": cfg.MODEL.KEYFRAME.BACKBONE_NORM_EVAL}

    def train(self, mode: bool = True) -> "EfficientNetBackbone":
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (N, 3, H, W) float -> (N, out_channels)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"EfficientNetBackbone expects (N, 3, H, W) images, got {tuple(images.shape)}.")
        first_trainable = self.first_trainable_block()
        x = images
        # Frozen leading blocks (stage 1, or before the unfrozen tail in stage 2) keep no activations for backward.
        with torch.no_grad():
            for block in self.features[:first_trainable]:
                x = block(x)
        for block in self.features[first_trainable:]:
            x = block(x)
        return torch.flatten(self.avgpool(x), 1)

    def first_trainable_block(self) -> int:
        """Index of the first ``features`` block with a parameter that requires grad (9 when all are frozen)."""
        for i, block in enumerate(self.features):
            if any(p.requires_grad for p in block.parameters()):
                return i
        return len(self.features)
