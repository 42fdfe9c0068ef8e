"""Backbones in BACKBONE_REGISTRY; each module registers itself on import.

Interface: built as ``cls(cfg)``; ``forward(images: float (B,3,H,W) normalized) -> feature map (B,C,H/s,W/s)``;
attributes ``out_channels`` and ``stride``.
"""

from . import efficientnet, resnet, small_cnn  # noqa: F401  (registers EfficientNetB0, ResNet, SmallCNN)
