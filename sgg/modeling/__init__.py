"""Models: registries, backbones, matchers, meta-architectures, shared layers, losses and set-prediction parts."""

from . import ag_faster_rcnn, backbone, matchers, meta_arch, video_detector, video_sgg  # noqa: F401  (registers built-in parts)
from .build import (
    BACKBONE_REGISTRY,
    MATCHER_REGISTRY,
    META_ARCH_REGISTRY,
    VIDEO_DETECTOR_REGISTRY,
    VIDEO_FEATURES_REGISTRY,
    build_backbone,
    build_matcher,
    build_model,
    build_video_detector,
    build_video_features,
    resolve_device,
)

__all__ = ["BACKBONE_REGISTRY", "MATCHER_REGISTRY", "META_ARCH_REGISTRY", "VIDEO_DETECTOR_REGISTRY",
           "VIDEO_FEATURES_REGISTRY", "build_backbone", "build_matcher", "build_model", "build_video_detector",
           "build_video_features", "resolve_device"]
