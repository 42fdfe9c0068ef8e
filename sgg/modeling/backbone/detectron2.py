"""``D2Backbone``: any backbone of detectron2's ``BACKBONE_REGISTRY`` as an sgg backbone (needs detectron2)."""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sgg.checkpoint.detectron2 import load_detectron2_weights
from sgg.config import ConfigError, configurable
from sgg.config.detectron2 import build_detectron2_cfg, import_detectron2

from ..build import BACKBONE_REGISTRY

__all__ = ["D2Backbone", "detectron2_backbone_cfg"]

logger = logging.getLogger(__name__)

_FEATURE = "MODEL.BACKBONE.NAME 'D2Backbone'"


def detectron2_backbone_cfg(cfg):
    """The detectron2 config ``MODEL.BACKBONE.D2`` describes, with sgg's ``MODEL.BACKBONE.{DEPTH, FREEZE_AT, NORM}``
    mapped to detectron2's ``MODEL.RESNETS.DEPTH``, ``MODEL.BACKBONE.FREEZE_AT``, ``MODEL.RESNETS.NORM`` (lowest
    precedence: ``CONFIG_FILE`` and the inline detectron2 keys override them)."""
    import_detectron2(_FEATURE, "detectron2.config")  # the error names what asked for detectron2
    b = cfg.MODEL.BACKBONE
    return build_detectron2_cfg(b.D2, name="MODEL.BACKBONE.D2", mapped=[
        ("MODEL.RESNETS.DEPTH", b.DEPTH), ("MODEL.BACKBONE.FREEZE_AT", b.FREEZE_AT), ("MODEL.RESNETS.NORM", b.NORM)])


@BACKBONE_REGISTRY.register()
class D2Backbone(nn.Module):
    """A detectron2 backbone (``build_resnet_backbone``, ``build_resnet_fpn_backbone``, a project's own, ...) with
    sgg's backbone interface: ``(B, 3, H, W)`` normalised the sgg way -> the feature map ``OUT_FEATURE``
    ``(B, out_channels, ceil(H / stride), ceil(W / stride))``.

    Inputs are re-normalised to what the detectron2 weights expect (``MODEL.PIXEL_MEAN/STD`` of the detectron2
    config, channel order ``INPUT.FORMAT`` RGB or BGR) and zero-padded to the backbone's ``size_divisibility``
    (FPN: 32); the output is cropped back, so feature cell (i, j) always covers input pixels from
    (i x stride, j x stride). The detectron2 module is the attribute ``backbone``, so this module's state-dict names
    are those of a detectron2 model (``backbone.bottom_up.res2...``): ``weights`` (``MODEL.BACKBONE.WEIGHTS``, a local
    detectron2 ``.pkl`` / ``.pth``, backbone-only or a whole detector) is read by detectron2's checkpointer.
    """

    @configurable
    def __init__(self, *, d2_cfg, out_feature: str = "", weights: str = "",
                 pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375)):
        """
        Args:
            d2_cfg: a detectron2 ``CfgNode`` (``MODEL.BACKBONE.NAME`` names the builder).
            out_feature: the output feature to return; "" = the one with the largest stride.
            weights: a local detectron2 checkpoint ("" = random init).
            pixel_mean / pixel_std: sgg's normalisation of the inputs (RGB, 0-255; ``MODEL.PIXEL_MEAN/STD``).
        """
        super().__init__()
        modeling = import_detectron2(_FEATURE, "detectron2.modeling")
        name = d2_cfg.MODEL.BACKBONE.NAME
        if name not in modeling.BACKBONE_REGISTRY:
            known = ", ".join(sorted(k for k, _ in modeling.BACKBONE_REGISTRY))
            raise ConfigError(f"MODEL.BACKBONE.D2: detectron2's BACKBONE_REGISTRY has no '{name}' "
                              f"(MODEL.BACKBONE.NAME of the detectron2 config); registered: {known}.")
        fmt = d2_cfg.INPUT.FORMAT
        if fmt not in ("RGB", "BGR") or len(d2_cfg.MODEL.PIXEL_MEAN) != 3 or len(d2_cfg.MODEL.PIXEL_STD) != 3:
            raise ConfigError(f"D2Backbone needs a 3-channel RGB or BGR detectron2 input (INPUT.FORMAT '{fmt}', "
                              f"MODEL.PIXEL_MEAN {list(d2_cfg.MODEL.PIXEL_MEAN)}).")
        try:
            self.backbone = modeling.build_backbone(d2_cfg)
        except AssertionError as e:  # detectron2 checks its config with asserts ("Must set ... for R18/R34")
            raise ConfigError(f"MODEL.BACKBONE.D2: detectron2's '{name}' refused the config: {e}") from e
        shapes = self.backbone.output_shape()
        if not out_feature:
            out_feature = max(shapes, key=lambda k: shapes[k].stride)
        elif out_feature not in shapes:
            raise ConfigError(f"MODEL.BACKBONE.D2.OUT_FEATURE '{out_feature}' is not an output of detectron2's "
                              f"'{name}'; it returns {sorted(shapes)}.")
        self.out_feature = out_feature
        self.out_channels = int(shapes[out_feature].channels)
        self.stride = int(shapes[out_feature].stride)
        self.size_divisibility = max(int(getattr(self.backbone, "size_divisibility", 0) or 0), 1)

        # sgg input x = (rgb - mean) / std; detectron2 wants (pixel[perm] - d2_mean) / d2_std: one affine map.
        perm = [2, 1, 0] if fmt == "BGR" else [0, 1, 2]
        mean = torch.tensor(pixel_mean, dtype=torch.float32)[perm]
        std = torch.tensor(pixel_std, dtype=torch.float32)[perm]
        d2_mean = torch.tensor(d2_cfg.MODEL.PIXEL_MEAN, dtype=torch.float32)
        d2_std = torch.tensor(d2_cfg.MODEL.PIXEL_STD, dtype=torch.float32)
        self.register_buffer("_channel_order", torch.tensor(perm), persistent=False)
        self.register_buffer("_scale", (std / d2_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_shift", ((mean - d2_mean) / d2_std).view(1, 3, 1, 1), persistent=False)
        if weights:
            load_detectron2_weights(self, weights, key="MODEL.BACKBONE.WEIGHTS", prefixes=("backbone.",))
        logger.info("D2Backbone: detectron2 '%s', feature '%s' (%d channels, stride %d)", name, out_feature,
                    self.out_channels, self.stride)

    @classmethod
    def from_config(cls, cfg):
        """``MODEL.BACKBONE.D2`` (+ ``DEPTH``, ``FREEZE_AT``, ``NORM``, ``WEIGHTS``) and ``MODEL.PIXEL_MEAN/STD``."""
        return {"d2_cfg": detectron2_backbone_cfg(cfg), "out_feature": cfg.MODEL.BACKBONE.D2.OUT_FEATURE,
                "weights": cfg.MODEL.BACKBONE.WEIGHTS, "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
                "pixel_std": tuple(cfg.MODEL.PIXEL_STD)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        x = images.index_select(1, self._channel_order) * self._scale.to(images.dtype) + self._shift.to(images.dtype)
        d = self.size_divisibility
        pad_h, pad_w = (-h) % d, (-w) % d
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        feature = self.backbone(x)[self.out_feature]
        return feature[..., : math.ceil(h / self.stride), : math.ceil(w / self.stride)]
