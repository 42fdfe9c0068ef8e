"""Backbones in BACKBONE_REGISTRY; each module registers itself on import.

Interface: built as ``cls(cfg)``; ``forward(images: float (B,3,H,W) normalized) -> feature map (B,C,H/s,W/s)``;
attributes ``out_channels`` and ``stride``.
"""

# Registers D2Backbone, EfficientNetB0, ResNet, SmallCNN (D2Backbone imports detectron2 only when it is built).
from . import detectron2, efficientnet, resnet, small_cnn  # noqa: F401
