"""Building blocks of DETR-style set-prediction models (DETR, SpeaQ / IterativeSG; the planned video models reuse them).

A set-prediction model turns images into a fixed set of queries, matches the queries one-to-one (or one-to-many) to
the ground truth and trains every query: matched ones on their target's class and box, the others on the background
("no object") class. This module holds what such models share; the model files only add their decoders, heads and
matchers.

* :func:`detr_kwargs` — the constructor keywords every DETR-style model reads from ``cfg.MODEL`` (``from_config``).
* :func:`pad_and_normalize` and :class:`DETRFrontEnd` — images -> padded, normalised batch + padding mask ->
  backbone -> 1x1 projection -> sine positions -> transformer encoder, plus the optional dense auxiliary class loss
  on the encoder output (:func:`dense_entity_labels`, :func:`encoder_class_loss`,
  ``MODEL.DETR.ENCODER_AUX_CLASS_WEIGHT``).
* :func:`set_prediction_losses` — CE + L1 + GIoU of one matched prediction set, with :func:`boxes_over_ranks` (the
  box-loss normaliser) and the per-sample loss weights of :func:`loss_weight_of` / :func:`sample_loss_weights`.

Conventions: boxes of predictions and targets are normalised ``(cx, cy, w, h)`` in ``[0, 1]`` (fractions of the
transformed, unpadded image's width / height); class logits have ``C + 1`` columns, the last one = background.
**Per-sample loss weights** (``loss_weight`` of an input, e.g. from the multi-dataset sampler) multiply every
per-query term of that image while the normalisers stay the unweighted ones, so a batch of weight-1 images gives
exactly the unweighted DETR loss and an image of weight 0.5 contributes half of what it would at 1.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from sgg.structures.boxes import box_area, box_cxcywh_to_xyxy, generalized_box_iou
from sgg.utils import comm

from .build import build_backbone
from .layers import PositionEmbeddingSine, TransformerEncoder

__all__ = ["detr_kwargs", "pad_and_normalize", "DETRFrontEnd", "PADDING_MASK_RULES", "feature_padding_mask",
           "dense_entity_labels", "encoder_class_loss",
           "loss_weight_of", "sample_loss_weights", "boxes_over_ranks", "set_prediction_losses",
           "focal_multi_label_loss"]

logger = logging.getLogger(__name__)


# MODEL.DETR.PADDING_MASK choices (feature_padding_mask).
PADDING_MASK_RULES = ("interpolate", "ceil")


# ---------------------------------------------------------------------------- config
def detr_kwargs(cfg) -> Dict[str, Any]:
    """Constructor keywords shared by the DETR-style models, for their ``from_config``.

    Builds the backbone (``build_backbone(cfg)``) and maps ``MODEL.ROI_HEADS.NUM_CLASSES`` to ``num_classes``,
    ``MODEL.ROI_RELATION_HEAD.NUM_CLASSES`` to ``num_predicates``, ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD`` (0-255 RGB) to
    ``pixel_mean`` / ``pixel_std``, and ``MODEL.DETR``'s transformer sizes (``NUM_QUERIES``, ``HIDDEN_DIM``,
    ``NHEADS``, ``DIM_FEEDFORWARD``, ``ENC_LAYERS``, ``DEC_LAYERS``, ``DROPOUT``), ``DEEP_SUPERVISION``, loss
    coefficients (``CLASS_WEIGHT``, ``L1_WEIGHT``, ``GIOU_WEIGHT``), ``NO_OBJECT_WEIGHT`` and
    ``ENCODER_AUX_CLASS_WEIGHT`` to their lower-case keywords. Each model adds its own keys (matcher, costs, ...).
    """
    d = cfg.MODEL.DETR
    return {"backbone": build_backbone(cfg), "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "num_predicates": cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES, "num_queries": d.NUM_QUERIES,
            "hidden_dim": d.HIDDEN_DIM, "nheads": d.NHEADS, "dim_feedforward": d.DIM_FEEDFORWARD,
            "enc_layers": d.ENC_LAYERS, "dec_layers": d.DEC_LAYERS, "dropout": d.DROPOUT,
            "deep_supervision": d.DEEP_SUPERVISION, "class_weight": d.CLASS_WEIGHT, "l1_weight": d.L1_WEIGHT,
            "giou_weight": d.GIOU_WEIGHT, "no_object_weight": d.NO_OBJECT_WEIGHT,
            "encoder_aux_class_weight": d.ENCODER_AUX_CLASS_WEIGHT, "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD}


# ---------------------------------------------------------------------------- front end
def pad_and_normalize(batched_inputs: Sequence[dict], pixel_mean: torch.Tensor,
                      pixel_std: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalise the uint8 ``image`` (3, H, W) of every input and zero-pad them to one batch.

    Returns ``(B, 3, Hmax, Wmax)`` float images and the padding mask ``(B, Hmax, Wmax)`` (True = padding).
    ``pixel_mean``/``pixel_std``: ``(3, 1, 1)`` on the target device, in the images' 0-255 units.
    """
    device = pixel_mean.device
    images = [x["image"].to(device, torch.float32) for x in batched_inputs]
    hmax = max(i.shape[-2] for i in images)
    wmax = max(i.shape[-1] for i in images)
    batch = images[0].new_zeros((len(images), 3, hmax, wmax))
    mask = torch.ones((len(images), hmax, wmax), dtype=torch.bool, device=device)
    for i, img in enumerate(images):
        batch[i, :, : img.shape[-2], : img.shape[-1]] = (img - pixel_mean) / pixel_std
        mask[i, : img.shape[-2], : img.shape[-1]] = False
    return batch, mask


class DETRFrontEnd(nn.Module):
    """Base class of the DETR-style models: backbone -> 1x1 projection to ``hidden_dim`` -> sine positions ->
    post-norm transformer encoder, as top-level modules ``backbone``, ``input_proj``, ``position``, ``encoder`` (so
    ``SOLVER.BACKBONE_MULTIPLIER``'s ``backbone`` prefix and checkpoints line up between the models), the input
    normalisation and the optional dense auxiliary class head ``encoder_class`` on the encoder output.

    A subclass calls :meth:`build_front_end` (and :meth:`build_encoder_aux_head`, :meth:`build_pixel_normalizer`) in
    its ``__init__``, then :meth:`preprocess` and :meth:`encode` in ``forward``.
    """

    def build_front_end(self, backbone: nn.Module, *, hidden_dim: int, nheads: int, dim_feedforward: int,
                        dropout: float, num_layers: int, padding_mask: str = "interpolate") -> None:
        """Create (and validate) the front-end modules. Call from ``__init__`` after ``super().__init__()``.

        ``padding_mask`` (``MODEL.DETR.PADDING_MASK``): how the pixel padding mask becomes the feature grid's —
        ``"interpolate"`` (DETR's reference code: nearest-neighbour resampling of the pixel mask) or ``"ceil"``
        (detectron2's DETR wrapper, used by IterativeSG and SpeaQ: an image of ``h x w`` pixels covers the first
        ``ceil(h / stride) x ceil(w / stride)`` cells). They differ only in batches of images of different sizes.
        """
        if hidden_dim % nheads or hidden_dim % 2:
            raise ValueError(f"HIDDEN_DIM ({hidden_dim}) must be even and divisible by NHEADS ({nheads}).")
        if padding_mask not in PADDING_MASK_RULES:
            raise ValueError(f"MODEL.DETR.PADDING_MASK must be one of {PADDING_MASK_RULES}, got '{padding_mask}'.")
        self.padding_mask = padding_mask
        self.backbone = backbone
        self.input_proj = nn.Conv2d(backbone.out_channels, hidden_dim, kernel_size=1)
        self.position = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.encoder = TransformerEncoder(hidden_dim, nheads, num_layers, dim_feedforward, dropout)

    def build_encoder_aux_head(self, hidden_dim: int, num_classes: int, weight: float) -> None:
        """The optional dense auxiliary head ``encoder_class`` (``ENCODER_AUX_CLASS_WEIGHT``); only built when the
        weight is > 0, so full-size checkpoints carry exactly upstream's parameters."""
        if weight < 0:
            raise ValueError(f"MODEL.DETR.ENCODER_AUX_CLASS_WEIGHT must be >= 0, got {weight}.")
        self.encoder_aux_class_weight = weight
        self.encoder_class = nn.Linear(hidden_dim, num_classes + 1) if weight > 0 else None

    def build_pixel_normalizer(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        """Non-persistent ``pixel_mean`` / ``pixel_std`` buffers ``(3, 1, 1)`` (0-255 RGB) for :meth:`preprocess`;
        they also tell :attr:`device`."""
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        """The device of the model's buffers (and parameters)."""
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: Sequence[dict]) -> Tuple[torch.Tensor, torch.Tensor]:
        """:func:`pad_and_normalize` with the model's statistics -> ``(B, 3, H, W)`` float images and the padding
        mask ``(B, H, W)`` (True = padding)."""
        return pad_and_normalize(batched_inputs, self.pixel_mean, self.pixel_std)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``images (B, 3, H, W)``, ``mask (B, H, W)`` -> ``memory`` (B, h*w, d), ``pos`` (B, h*w, d), ``padding``
        (B, h*w) bool, ``grid_padding`` (B, h, w) bool on the backbone's feature grid, and ``stride`` (input pixels
        per feature cell along x)."""
        feat = self.input_proj(self.backbone(images))
        grid_padding = feature_padding_mask(mask, tuple(feat.shape[-2:]), self.padding_mask,
                                            stride=getattr(self.backbone, "stride", None))
        pos = self.position(grid_padding).to(feat.dtype).flatten(2).transpose(1, 2)
        padding = grid_padding.flatten(1)
        memory = self.encoder(feat.flatten(2).transpose(1, 2), pos, padding)
        return {"memory": memory, "pos": pos, "padding": padding, "grid_padding": grid_padding,
                "stride": images.shape[-1] / feat.shape[-1]}

    def encoder_aux_loss(self, batched_inputs: Sequence[dict], enc: Dict[str, torch.Tensor],
                         class_weights: torch.Tensor, sample_weights: torch.Tensor) -> torch.Tensor:
        """``ENCODER_AUX_CLASS_WEIGHT`` x :func:`encoder_class_loss` of :meth:`encode`'s output ``enc`` against
        :func:`dense_entity_labels` (only when the head exists). ``class_weights (C+1,)``, ``sample_weights (B,)``."""
        labels = dense_entity_labels(batched_inputs, tuple(enc["grid_padding"].shape[-2:]), enc["stride"],
                                     class_weights.numel() - 1, enc["memory"].device)
        return self.encoder_aux_class_weight * encoder_class_loss(
            self.encoder_class(enc["memory"]), labels, enc["padding"], class_weights, sample_weights)


def feature_padding_mask(mask: torch.Tensor, grid: Tuple[int, int], rule: str = "interpolate",
                         stride: Optional[int] = None) -> torch.Tensor:
    """The padding mask of a feature grid ``(B, h, w)`` bool (True = padding) from the pixel one ``mask (B, H, W)``.

    ``"interpolate"``: nearest-neighbour resampling (DETR). ``"ceil"``: image ``b`` of ``h_b x w_b`` unpadded pixels
    covers the first ``ceil(h_b / stride)`` rows and ``ceil(w_b / stride)`` columns (detectron2's DETR wrapper, which
    IterativeSG / SpeaQ use); ``stride`` is the backbone's (its ``stride`` attribute), required for ``"ceil"``.
    """
    if rule == "interpolate":
        return F.interpolate(mask[:, None].float(), size=grid).bool()[:, 0]
    if rule != "ceil":
        raise ValueError(f"MODEL.DETR.PADDING_MASK must be one of {PADDING_MASK_RULES}, got '{rule}'.")
    h, w = grid
    if not stride or stride < 1:
        raise ValueError("MODEL.DETR.PADDING_MASK 'ceil' needs the backbone's stride (its 'stride' attribute).")
    rows = (~mask).any(2).sum(1)  # unpadded pixel rows / columns of each image (the image sits top-left)
    cols = (~mask).any(1).sum(1)
    rows_in = torch.div(rows + stride - 1, stride, rounding_mode="floor")
    cols_in = torch.div(cols + stride - 1, stride, rounding_mode="floor")
    ys = torch.arange(h, device=mask.device)
    xs = torch.arange(w, device=mask.device)
    return (ys[None, :, None] >= rows_in[:, None, None]) | (xs[None, None, :] >= cols_in[:, None, None])


# ---------------------------------------------------------------------------- losses
def dense_entity_labels(batched_inputs: Sequence[dict], grid_shape: Tuple[int, int], stride: float,
                        background: int, device: torch.device) -> torch.Tensor:
    """``(B, h*w)`` int64: per feature cell the class of the smallest GT box (``gt_boxes`` xyxy in pixels of the
    transformed image, ``gt_classes``) covering the cell centre, else ``background``. Boxes are half-open
    (``x1 <= x < x2``); ``stride`` = input pixels per cell."""
    h, w = grid_shape
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    cy, cx = ys[:, None].expand(h, w).reshape(-1), xs[None, :].expand(h, w).reshape(-1)
    labels = torch.full((len(batched_inputs), h * w), background, dtype=torch.int64, device=device)
    for k, x in enumerate(batched_inputs):
        boxes = torch.as_tensor(x["gt_boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        classes = torch.as_tensor(x["gt_classes"], dtype=torch.int64, device=device).reshape(-1)
        if not len(boxes):
            continue
        inside = ((cx[:, None] >= boxes[:, 0]) & (cx[:, None] < boxes[:, 2])
                  & (cy[:, None] >= boxes[:, 1]) & (cy[:, None] < boxes[:, 3]))  # (h*w, N)
        area = box_area(boxes).expand_as(inside)
        smallest = torch.where(inside, area, torch.full_like(area, float("inf"))).argmin(1)
        labels[k] = torch.where(inside.any(1), classes[smallest], labels[k])
    return labels


def encoder_class_loss(logits: torch.Tensor, labels: torch.Tensor, padding: torch.Tensor, class_weights: torch.Tensor,
                       sample_weights: torch.Tensor) -> torch.Tensor:
    """Dense CE ``(B, L, C+1)`` logits vs ``(B, L)`` labels over unpadded cells (``padding (B, L)``, True = padding),
    each cell weighted by its class weight (background = no-object weight) and its image's ``loss_weight``
    (``sample_weights`` (B,)); normalised by the summed class weights, as the decoder CEs. Returns a scalar."""
    b, n = labels.shape
    ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view(b, n)
    weight = class_weights[labels] * (~padding)
    return (ce * weight * sample_weights[:, None]).sum() / weight.sum().clamp(min=1e-6)


def loss_weight_of(x: dict) -> float:
    """An input's per-sample ``loss_weight`` (1 when absent), checked finite and >= 0."""
    w = float(x.get("loss_weight", 1.0))
    if not w >= 0 or w == float("inf"):
        raise ValueError(f"image {x.get('image_id', '?')}: loss_weight must be finite and >= 0, got {w}.")
    return w


def sample_loss_weights(batched_inputs: Sequence[dict], device: torch.device) -> torch.Tensor:
    """``(B,)`` float32 per-image ``loss_weight`` (:func:`loss_weight_of`)."""
    return torch.tensor([loss_weight_of(x) for x in batched_inputs], dtype=torch.float32, device=device)


def boxes_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """Box-loss normaliser: matched GT counts (float tensor, any shape) averaged over all ranks, at least 1 (DETR).
    All-reduces ``counts`` in place when distributed."""
    if comm.get_world_size() > 1 and dist.is_initialized():
        dist.all_reduce(counts)
        counts = counts / comm.get_world_size()
    return counts.clamp(min=1.0)


def set_prediction_losses(logits: torch.Tensor, boxes: torch.Tensor,
                          indices: Sequence[Tuple[torch.Tensor, torch.Tensor]], tgt_labels: Sequence[torch.Tensor],
                          tgt_boxes: Sequence[torch.Tensor], *, class_weights: torch.Tensor,
                          sample_weights: torch.Tensor, num_boxes: torch.Tensor,
                          coef: Dict[str, float]) -> Dict[str, torch.Tensor]:
    """DETR's CE + L1 + GIoU of one prediction set after matching, with per-sample weights.

    ``logits (B, Q, C+1)`` (last column = background), ``boxes (B, Q, 4)`` normalised cxcywh; ``indices[b]`` =
    (query indices, target indices) of image ``b`` into ``tgt_labels[b] (T,)`` / ``tgt_boxes[b] (T, 4)``.
    CE over every query (unmatched ones -> background), each weighted by its target's ``class_weights`` (C+1,) and
    its image's ``sample_weights`` (B,), divided by the summed class weights; L1 and GIoU of the matched queries scaled
    by their image's weight, divided by ``num_boxes`` (:func:`boxes_over_ranks`). Returns scalars ``{"ce", "bbox",
    "giou"}`` (times ``coef``, same keys); with no match at all the box terms are exact zeros still connected to
    ``boxes`` (DDP).
    """
    device = logits.device
    b, q = logits.shape[:2]
    batch_idx = torch.cat([torch.full_like(r, k) for k, (r, _) in enumerate(indices)]).to(device)
    query_idx = torch.cat([r for r, _ in indices]).to(device)
    target_cls = torch.full((b, q), class_weights.numel() - 1, dtype=torch.int64, device=device)
    if len(query_idx):
        target_cls[batch_idx, query_idx] = torch.cat([t[c.to(device)] for t, (_, c) in zip(tgt_labels, indices)])
    ce = F.cross_entropy(logits.float().flatten(0, 1), target_cls.flatten(), reduction="none").view(b, q)
    w = class_weights[target_cls]  # (B, Q): class weight of each query's target, background included
    losses = {"ce": coef["ce"] * (ce * w * sample_weights[:, None]).sum() / w.sum().clamp(min=1e-6)}
    if len(query_idx):
        pred = boxes[batch_idx, query_idx].float()
        gt = torch.cat([t[c.to(device)] for t, (_, c) in zip(tgt_boxes, indices)])
        per_w = sample_weights[batch_idx]
        l1 = F.l1_loss(pred, gt, reduction="none").sum(-1)
        giou = 1 - torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)))
        losses["bbox"] = coef["bbox"] * (l1 * per_w).sum() / num_boxes
        losses["giou"] = coef["giou"] * (giou * per_w).sum() / num_boxes
    else:
        zero = boxes.sum() * 0.0
        losses["bbox"], losses["giou"] = zero, zero.clone()
    return losses


def focal_multi_label_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.5,
                           gamma: float = 2.0) -> torch.Tensor:
    """CDN / OED's focal-style multi-label loss (their ``_neg_loss``) of ``logits (N, G)`` against multi-hot
    ``targets (N, G)``, a scalar.

    With ``p = sigmoid(logits)``: positives add ``-alpha (1 - p)^gamma log p``, negatives
    ``-(1 - alpha) p^gamma log(1 - p)``; the sum is divided by the number of positives (not divided when there are
    none). The logs are taken as log-sigmoids, so the value is finite where upstream's ``log(p)`` would be ``-inf``.
    """
    p = logits.float().sigmoid()
    pos = targets.float().eq(1).float()
    pos_loss = alpha * F.logsigmoid(logits.float()) * (1 - p).pow(gamma) * pos
    neg_loss = (1 - alpha) * F.logsigmoid(-logits.float()) * p.pow(gamma) * (1 - pos)
    num_pos = pos.sum()
    total = -(pos_loss.sum() + neg_loss.sum())
    return torch.where(num_pos > 0, total / num_pos.clamp(min=1.0), total)
