"""Keyframe (video summarization) detector of seed 003, in two registered variants.

``KeyframeDetector`` (pixels)::

    frames (T, 3, H, W) uint8 --EfficientNet-B0--> (T, 1280) --Linear--> (T, 512) + sinusoidal PE
      --TransformerEncoder(3 layers, 8 heads, FFN 2048)--> h
      local attention over h (step i sees i-5..i+5, a mask)  \
                                                              concat -> fusion Linear(1024->512) + ReLU (+ h)
      global attention over h (all steps)                     /
      --MLP(512->256->1) + sigmoid--> importance score per step, in [0, 1]

``KeyframeFeatureDetector`` is the same temporal model fed with the eccv16 h5's precomputed ``features``
(``(T, 1024)`` GoogLeNet pool5) instead of pixels.

Inputs (one dict per video, from :class:`~sgg.data.keyframe_mapper.KeyframeMapper`): ``frames`` uint8 ``(T, 3, H, W)``
or ``features`` float ``(T, D)``; in training also ``target`` float ``(T,)`` in [0, 1]. Training returns
``{"loss_rank", "loss_mse"}``; evaluation returns ``[{"scores": (T,) float in [0, 1], "video_id": ...}]``.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from sgg.config import configurable

from ..build import META_ARCH_REGISTRY, build_backbone
from ..losses import build_ranking_loss, masked_mse_loss

__all__ = ["KeyframeDetector", "KeyframeFeatureDetector", "sinusoidal_position_encoding", "local_window_mask"]

logger = logging.getLogger(__name__)


def sinusoidal_position_encoding(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Vaswani et al. (2017) encodings ``(length, dim)``: sin on even, cos on odd channels, wavelengths up to 1e4."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angle = position * div  # (length, ceil(dim / 2))
    # sin / cos interleaved by stacking rather than by slice assignment into zeros: the same values, and the length
    # stays symbolic when the model is traced for ONNX (sgg.export).
    pe = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(1)[:, :dim]
    return pe.to(dtype)


def local_window_mask(length: int, window: int, device=None) -> torch.Tensor:
    """Boolean ``(length, length)``: True where step ``i`` may attend to step ``j`` (``|i - j| <= window``)."""
    idx = torch.arange(length, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window


def _attention_mask(allowed: torch.Tensor, valid: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``nn.MultiheadAttention`` mask ``(B * heads, T, T)`` (True = blocked) from an allowed pattern and key validity.

    Every step may always attend to itself, so no row is fully blocked (padded steps would otherwise give NaN).
    """
    b, t = valid.shape
    ok = allowed.unsqueeze(0) & valid.unsqueeze(1)  # (B, T, T)
    steps = torch.arange(t, device=valid.device)
    # The diagonal as a comparison, not torch.eye(dtype=bool): ONNX Runtime has no boolean EyeLike (sgg.export).
    ok = ok | (steps[:, None] == steps[None, :]).unsqueeze(0)
    return (~ok).repeat_interleave(num_heads, dim=0)


class _KeyframeDetectorBase(nn.Module):
    """Temporal scoring model shared by both variants; subclasses implement :meth:`encode_steps`."""

    def __init__(self, *, in_dim: int, d_model: int = 512, num_layers: int = 3, num_heads: int = 8,
                 dim_feedforward: int = 2048, dropout: float = 0.1, local_window: int = 5,
                 scorer_hidden: int = 256, ranking_loss: str = "soft_spearman", ranking_loss_weight: float = 1.0,
                 mse_loss_weight: float = 1.0, soft_rank_temperature: float = 0.05, ranking_margin: float = 0.05):
        super().__init__()
        self.d_model, self.num_heads, self.local_window = d_model, num_heads, local_window
        self.input_proj = nn.Linear(in_dim, d_model)
        self.input_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.local_attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.global_attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.fusion = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.scorer = nn.Sequential(nn.Linear(d_model, scorer_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                    nn.Linear(scorer_hidden, 1))
        self.ranking_loss = build_ranking_loss(ranking_loss)
        self.ranking_loss_kwargs = {"temperature": soft_rank_temperature, "margin": ranking_margin}
        self.ranking_loss_weight, self.mse_loss_weight = ranking_loss_weight, mse_loss_weight

    @staticmethod
    def temporal_config(cfg) -> dict:
        """Keyword arguments of the temporal model from ``MODEL.KEYFRAME``."""
        k = cfg.MODEL.KEYFRAME
        return {"d_model": k.D_MODEL, "num_layers": k.NUM_LAYERS, "num_heads": k.NUM_HEADS,
                "dim_feedforward": k.DIM_FEEDFORWARD, "dropout": k.DROPOUT, "local_window": k.LOCAL_WINDOW,
                "scorer_hidden": k.SCORER_HIDDEN, "ranking_loss": k.RANKING_LOSS,
                "ranking_loss_weight": k.RANKING_LOSS_WEIGHT, "mse_loss_weight": k.MSE_LOSS_WEIGHT,
                "soft_rank_temperature": k.SOFT_RANK_TEMPERATURE, "ranking_margin": k.RANKING_MARGIN}

    @property
    def device(self) -> torch.device:
        # Any parameter, not input_proj.weight: that is a method once MODEL.QUANTIZATION has made it an int8 Linear.
        return next(self.parameters()).device

    def encode_steps(self, batched_inputs: List[dict]) -> List[torch.Tensor]:
        """Per-video step features ``(T_i, in_dim)``."""
        raise NotImplementedError

    def score(self, steps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Padded step features ``(B, T, in_dim)`` + validity ``(B, T)`` -> importance ``(B, T)`` in [0, 1]."""
        t = steps.shape[1]
        x = self.input_proj(steps) + sinusoidal_position_encoding(t, self.d_model, steps.device, steps.dtype)
        h = self.encoder(self.input_dropout(x), src_key_padding_mask=~valid)
        local_mask = _attention_mask(local_window_mask(t, self.local_window, steps.device), valid, self.num_heads)
        global_mask = _attention_mask(torch.ones(t, t, dtype=torch.bool, device=steps.device), valid,
                                      self.num_heads)
        local, _ = self.local_attention(h, h, h, attn_mask=local_mask, need_weights=False)
        glob, _ = self.global_attention(h, h, h, attn_mask=global_mask, need_weights=False)
        fused = self.fusion(torch.cat([local, glob], dim=-1)) + h  # residual keeps the encoder signal
        return torch.sigmoid(self.scorer(fused).squeeze(-1))

    def _pad(self, sequences: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(s) for s in sequences], device=self.device)
        if (lengths == 0).any():
            raise ValueError("A video in the batch has zero steps; check the dataset and INPUT.KEYFRAME.FPS.")
        padded = pad_sequence(sequences, batch_first=True)
        valid = torch.arange(padded.shape[1], device=self.device)[None, :] < lengths[:, None]
        return padded, valid

    def losses(self, scores: torch.Tensor, batched_inputs: List[dict], valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Ranking loss + MSE against each input's ``target`` (``(T,)`` in [0, 1])."""
        for inp in batched_inputs:
            if "target" not in inp:
                raise KeyError(f"Training input '{inp.get('video_id', '?')}' has no 'target'; use KeyframeMapper.")
        target, _ = self._pad([inp["target"].to(self.device, torch.float32) for inp in batched_inputs])
        if target.shape != scores.shape:
            raise ValueError(f"target shape {tuple(target.shape)} does not match scores {tuple(scores.shape)}.")
        rank = self.ranking_loss(scores, target, valid, **self.ranking_loss_kwargs)
        return {"loss_rank": self.ranking_loss_weight * rank,
                "loss_mse": self.mse_loss_weight * masked_mse_loss(scores, target, valid)}

    def forward(self, batched_inputs: List[dict]):
        """Training: dict of losses; eval: ``[{"scores": (T_i,), "video_id"}]``."""
        steps, valid = self._pad(self.encode_steps(batched_inputs))
        scores = self.score(steps, valid)
        if self.training:
            return self.losses(scores, batched_inputs, valid)
        return [{"scores": scores[i, : int(valid[i].sum())], "video_id": inp.get("video_id")}
                for i, inp in enumerate(batched_inputs)]


@META_ARCH_REGISTRY.register()
class KeyframeDetector(_KeyframeDetectorBase):
    """End-to-end pixel model: a ``BACKBONE_REGISTRY`` frame encoder (``EfficientNetB0``) + the temporal model.

    ``freeze_backbone=True`` (stage 1) sets ``requires_grad=False`` on the backbone; ``SOLVER.STAGE2`` later
    unfreezes parameter prefixes such as ``backbone.features.7.`` (see
    :func:`sgg.modeling.backbone.efficientnet.last_blocks_prefixes`). While no backbone parameter requires a
    gradient, the backbone runs under ``torch.no_grad`` (no activations kept).
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, pixel_mean, pixel_std, freeze_backbone: bool = True,
                 backbone_chunk: int = 64, **temporal):
        super().__init__(in_dim=backbone.out_channels, **temporal)
        self.backbone = backbone
        self.backbone_chunk = backbone_chunk
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        return {"backbone": build_backbone(cfg), "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
                "freeze_backbone": cfg.MODEL.KEYFRAME.FREEZE_BACKBONE,
                "backbone_chunk": cfg.MODEL.KEYFRAME.BACKBONE_CHUNK, **cls.temporal_config(cfg)}

    def _backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        images = (images.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std
        if self.training:
            return self.backbone(images)
        # Chunk long videos at inference so memory does not grow with video length.
        return torch.cat([self.backbone(c) for c in images.split(self.backbone_chunk)])

    def encode_steps(self, batched_inputs: List[dict]) -> List[torch.Tensor]:
        frames = []
        for inp in batched_inputs:
            f = inp.get("frames")
            if f is None or f.dim() != 4 or f.shape[1] != 3:
                raise ValueError(f"KeyframeDetector needs 'frames' uint8 (T, 3, H, W) for video "
                                 f"'{inp.get('video_id', '?')}', got {None if f is None else tuple(f.shape)}. "
                                 "For the h5 features use MODEL.META_ARCHITECTURE KeyframeFeatureDetector.")
            frames.append(f)
        images = torch.cat(frames)
        trainable = any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            feats = self._backbone_features(images)
        return list(feats.split([len(f) for f in frames]))


@META_ARCH_REGISTRY.register()
class KeyframeFeatureDetector(_KeyframeDetectorBase):
    """The temporal model on precomputed per-step features (``inputs[i]["features"]``, ``(T, feature_dim)``)."""

    @configurable
    def __init__(self, *, feature_dim: int = 1024, **temporal):
        super().__init__(in_dim=feature_dim, **temporal)
        self.feature_dim = feature_dim

    @classmethod
    def from_config(cls, cfg):
        return {"feature_dim": cfg.MODEL.KEYFRAME.FEATURE_DIM, **cls.temporal_config(cfg)}

    def encode_steps(self, batched_inputs: List[dict]) -> List[torch.Tensor]:
        out = []
        for inp in batched_inputs:
            f = inp.get("features")
            if f is None or f.dim() != 2 or f.shape[1] != self.feature_dim:
                raise ValueError(f"KeyframeFeatureDetector needs 'features' (T, {self.feature_dim}) for video "
                                 f"'{inp.get('video_id', '?')}', got {None if f is None else tuple(f.shape)}. "
                                 "Set MODEL.KEYFRAME.FEATURE_DIM to the h5's feature width.")
            out.append(f.to(self.device, torch.float32))
        return out
