"""Models: registries, backbones, matchers, meta-architectures, shared layers, losses and set-prediction parts."""

from . import backbone, matchers, meta_arch  # noqa: F401  (registers built-in parts)
from .build import (
    BACKBONE_REGISTRY,
    MATCHER_REGISTRY,
    META_ARCH_REGISTRY,
    build_backbone,
    build_matcher,
    build_model,
    resolve_device,
)

__all__ = ["BACKBONE_REGISTRY", "MATCHER_REGISTRY", "META_ARCH_REGISTRY", "build_backbone", "build_matcher",
           "build_model", "resolve_device"]
