"""Model registries and ``build_model``."""

from __future__ import annotations

import logging

import torch

from sgg.config.config import ConfigError
from sgg.utils.registry import Registry

from .quantization import check_quantization_device, quantize_model

__all__ = ["META_ARCH_REGISTRY", "BACKBONE_REGISTRY", "MATCHER_REGISTRY", "VIDEO_DETECTOR_REGISTRY",
           "VIDEO_FEATURES_REGISTRY", "build_model", "build_backbone", "build_matcher", "build_video_detector",
           "build_video_features", "resolve_device"]

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """Whole models. Called as ``cls(cfg)``; ``model(batched_inputs)`` returns a dict of losses
in training mode and a list of per-input prediction dicts in eval mode."""

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """Feature extractors, built as ``cls(cfg)`` (``MODEL.BACKBONE.NAME``)."""

MATCHER_REGISTRY = Registry("MATCHER")
MATCHER_REGISTRY.__doc__ = """Prediction/target assignment (``MODEL.MATCHER.NAME``), built as ``cls(cfg)``."""

VIDEO_DETECTOR_REGISTRY = Registry("VIDEO_DETECTOR")
VIDEO_DETECTOR_REGISTRY.__doc__ = """SGDet object detectors of the video models (``MODEL.VIDEO_DETECTOR.NAME``), built
as ``cls(cfg, backbone=backbone)`` on the video model's backbone features; interface: ``losses(fmap, image_size,
boxes, labels, frame_idx)``, ``detect(fmap, image_size) -> (boxes, frame_idx, distribution)``,
``detections(fmap, image_size, image_scale=1.0) -> (boxes, frame_idx, distribution, features or None)`` (features
of the detections when the detector computes them, e.g. AGFasterRCNNDetector; None = the model pools its own),
attributes ``trainable`` and ``num_classes``."""

VIDEO_FEATURES_REGISTRY = Registry("VIDEO_FEATURES")
VIDEO_FEATURES_REGISTRY.__doc__ = """Feature sources of the STTran-family video models (``MODEL.VIDEO_FEATURES.NAME``),
built as ``cls(cfg)``; interface (see :class:`~sgg.modeling.video_sgg.BackboneRoIFeatures`): ``frame_features(images)``,
``object_features(fmap, boxes, frame_idx)``, ``union_features(fmap, boxes, frame_idx)``, attributes ``object_dim``,
``union_channels``, ``stride`` and ``backbone`` (the module an SGDet detector shares); optional
``class_distribution(object_features) -> (N, classes)`` (a detector's class probabilities of the boxes, the SGCls
object classifier's input; see ``video_sgg.class_prior``)."""


def resolve_device(name: str, key: str = "MODEL.DEVICE") -> torch.device:
    """``MODEL.DEVICE`` -> torch.device: ``"auto"`` (the default) = CUDA when available, else CPU; an explicit
    ``"cuda"`` / ``"cuda:N"`` on a machine without CUDA is refused with :class:`ConfigError` (it would silently run
    on CPU otherwise)."""
    text = str(name).strip().lower()
    if text in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"{key} '{name}' is not a device; use auto, cpu, cuda or cuda:N.") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key} is '{name}' but CUDA is not available on this machine "
                              f"(torch {torch.__version__}, torch.cuda.is_available() is False). Set {key} cpu "
                              "(or auto: CUDA when present, else CPU).")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{key} is '{name}' but only {torch.cuda.device_count()} CUDA device(s) are visible.")
    return device


def build_model(cfg) -> torch.nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE``, move it to ``cfg.MODEL.DEVICE`` and apply ``cfg.MODEL.QUANTIZATION``
    (:func:`~sgg.modeling.quantization.quantize_model`; weights are not loaded here)."""
    if not cfg.MODEL.META_ARCHITECTURE:
        raise ValueError("MODEL.META_ARCHITECTURE is empty; set it in the config (see tools/train_net.py --list).")
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    device = resolve_device(cfg.MODEL.DEVICE)
    model.to(device)
    if cfg.MODEL.QUANTIZATION:  # the structure a quantized checkpoint needs, before any weights load
        check_quantization_device(cfg.MODEL.QUANTIZATION, device)
        quantize_model(model, cfg.MODEL.QUANTIZATION)
    return model


def build_backbone(cfg) -> torch.nn.Module:
    """Build ``cfg.MODEL.BACKBONE.NAME``."""
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg)


def build_video_detector(cfg, backbone: torch.nn.Module) -> torch.nn.Module:
    """Build ``cfg.MODEL.VIDEO_DETECTOR.NAME`` over ``backbone``'s features."""
    return VIDEO_DETECTOR_REGISTRY.get(cfg.MODEL.VIDEO_DETECTOR.NAME)(cfg, backbone=backbone)


def build_video_features(cfg) -> torch.nn.Module:
    """Build ``cfg.MODEL.VIDEO_FEATURES.NAME``, the feature source of an STTran-family video model."""
    return VIDEO_FEATURES_REGISTRY.get(cfg.MODEL.VIDEO_FEATURES.NAME)(cfg)


def build_matcher(cfg):
    """Build ``cfg.MODEL.MATCHER.NAME``."""
    return MATCHER_REGISTRY.get(cfg.MODEL.MATCHER.NAME)(cfg)
