"""DETR (Carion et al., ECCV 2020): the object detector that SpeaQ / IterativeSG start from.

Upstream SpeaQ initialises from a DETR trained on Visual Genome whose decoder is replicated three times (subject,
object and relation decoders). This file is that detector built from sgg's parts, with the module names SpeaQ uses,
so that :func:`detr_to_speaq_state_dict` turns its checkpoint into SpeaQ's initialisation
(``MODEL.DETR.DETECTOR_WEIGHTS``).

Reads top to bottom:

1. Shared front end, also used by :mod:`.speaq`: :func:`pad_and_normalize` (images -> padded batch + mask),
   :class:`DETRFrontEnd` (backbone -> 1x1 projection -> sine positions -> transformer encoder) and
   :func:`dense_entity_labels` / :func:`encoder_class_loss` (the optional dense auxiliary loss on the encoder output,
   ``MODEL.DETR.ENCODER_AUX_CLASS_WEIGHT``).
2. :class:`DETR` — encoder + ``DEC_LAYERS`` decoder layers over ``NUM_QUERIES`` learned queries, a class head with a
   no-object column and a 3-layer box MLP; Hungarian matching (``HungarianMatcher``) and CE + L1 + GIoU losses per
   decoder layer; per-sample ``loss_weight`` as in SpeaQ. Inference emits the scene-graph evaluator's format with no
   relations, so ``SceneGraphEvaluator`` reports its box AP.
3. :func:`detr_to_speaq_state_dict` — the ×3 decoder replication.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from sgg.config import configurable
from sgg.structures.boxes import box_area, box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou
from sgg.utils import comm

from ..build import META_ARCH_REGISTRY, build_backbone
from ..layers import MLP, PositionEmbeddingSine, TransformerDecoderLayer, TransformerEncoder
from ..layers.transformer import clones
from ..matchers.hungarian import HungarianMatcher

__all__ = ["pad_and_normalize", "DETRFrontEnd", "dense_entity_labels", "encoder_class_loss", "loss_weight_of",
           "sample_loss_weights", "boxes_over_ranks", "set_prediction_losses", "DETR", "detr_to_speaq_state_dict"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- shared front end
def pad_and_normalize(batched_inputs: Sequence[dict], pixel_mean: torch.Tensor,
                      pixel_std: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalise the uint8 ``image`` (3, H, W) of every input and zero-pad them to one batch.

    Returns ``(B, 3, Hmax, Wmax)`` float images and the padding mask ``(B, Hmax, Wmax)`` (True = padding).
    ``pixel_mean``/``pixel_std``: ``(3, 1, 1)`` on the target device.
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
    """Base of :class:`DETR` and SpeaQ: backbone -> 1x1 projection to ``hidden_dim`` -> sine positions -> post-norm
    transformer encoder, as top-level modules ``backbone``, ``input_proj``, ``position``, ``encoder`` (so
    ``SOLVER.BACKBONE_MULTIPLIER``'s ``backbone`` prefix and checkpoints line up between the two models)."""

    def build_front_end(self, backbone: nn.Module, *, hidden_dim: int, nheads: int, dim_feedforward: int,
                        dropout: float, num_layers: int) -> None:
        """Create (and validate) the front-end modules. Call from ``__init__`` after ``super().__init__()``."""
        if hidden_dim % nheads or hidden_dim % 2:
            raise ValueError(f"HIDDEN_DIM ({hidden_dim}) must be even and divisible by NHEADS ({nheads}).")
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

    def encoder_aux_loss(self, batched_inputs: Sequence[dict], enc: Dict[str, torch.Tensor],
                         class_weights: torch.Tensor, sample_weights: torch.Tensor) -> torch.Tensor:
        """``ENCODER_AUX_CLASS_WEIGHT`` x :func:`encoder_class_loss` of :meth:`encode`'s output ``enc`` against
        :func:`dense_entity_labels` (only when the head exists)."""
        labels = dense_entity_labels(batched_inputs, tuple(enc["grid_padding"].shape[-2:]), enc["stride"],
                                     class_weights.numel() - 1, enc["memory"].device)
        return self.encoder_aux_class_weight * encoder_class_loss(
            self.encoder_class(enc["memory"]), labels, enc["padding"], class_weights, sample_weights)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``images (B, 3, H, W)``, ``mask (B, H, W)`` -> ``memory`` (B, h*w, d), ``pos`` (B, h*w, d), ``padding``
        (B, h*w) bool, ``grid_padding`` (B, h, w) bool on the backbone's feature grid, and ``stride`` (input pixels
        per feature cell along x)."""
        feat = self.input_proj(self.backbone(images))
        grid_padding = F.interpolate(mask[:, None].float(), size=feat.shape[-2:]).bool()[:, 0]
        pos = self.position(grid_padding).to(feat.dtype).flatten(2).transpose(1, 2)
        padding = grid_padding.flatten(1)
        memory = self.encoder(feat.flatten(2).transpose(1, 2), pos, padding)
        return {"memory": memory, "pos": pos, "padding": padding, "grid_padding": grid_padding,
                "stride": images.shape[-1] / feat.shape[-1]}


def dense_entity_labels(batched_inputs: Sequence[dict], grid_shape: Tuple[int, int], stride: float,
                        background: int, device: torch.device) -> torch.Tensor:
    """``(B, h*w)`` int64: per feature cell the class of the smallest GT box (``gt_boxes`` xyxy in pixels of the
    transformed image, ``gt_classes``) covering the cell centre, else ``background``."""
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
    """Dense CE ``(B, L, C+1)`` logits vs ``(B, L)`` labels over unpadded cells, each cell weighted by its class weight
    (background = no-object weight) and its image's ``loss_weight`` (``sample_weights`` (B,)); normalised by the
    summed class weights, as the decoder CEs."""
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
    """``(B,)`` per-image ``loss_weight`` (:func:`loss_weight_of`)."""
    return torch.tensor([loss_weight_of(x) for x in batched_inputs], dtype=torch.float32, device=device)


def boxes_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """Box-loss normaliser: matched GT counts (any shape) averaged over all ranks, at least 1 (DETR)."""
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
    CE over every query (unmatched ones -> background), each weighted by its target's ``class_weights`` and its
    image's ``sample_weights`` (B,), divided by the summed class weights; L1 and GIoU of the matched queries scaled by
    their image's weight, divided by ``num_boxes``. Returns ``{"ce", "bbox", "giou"}`` (times ``coef``); with no
    match at all the box terms are exact zeros still connected to ``boxes`` (DDP).
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


# ---------------------------------------------------------------------------- model
@META_ARCH_REGISTRY.register()
class DETR(DETRFrontEnd):
    """DETR object detector (see the module docstring); the initialisation SpeaQ's recipe starts from.

    ``forward(batched_inputs)``: mapper dicts (``image`` uint8 (3, H, W) RGB, ``height``/``width`` of the original
    image, ``gt_boxes`` xyxy / ``gt_classes`` and optional ``loss_weight`` in training) -> a dict of losses in
    training, else per image ``{boxes (Q, 4) xyxy original pixels, labels (Q,), scores (Q,), rel_pairs (0, 2),
    rel_scores (0, num_predicates)}`` sorted by score.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, num_classes: int, num_predicates: int, num_queries: int = 100,
                 hidden_dim: int = 256, nheads: int = 8, dim_feedforward: int = 2048, enc_layers: int = 6,
                 dec_layers: int = 6, dropout: float = 0.1, deep_supervision: bool = True,
                 cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0, class_weight: float = 1.0,
                 l1_weight: float = 5.0, giou_weight: float = 2.0, no_object_weight: float = 0.1,
                 encoder_aux_class_weight: float = 0.0, pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375)):
        super().__init__()
        if num_queries < 1 or dec_layers < 1:
            raise ValueError(f"NUM_QUERIES and DEC_LAYERS must be >= 1, got {num_queries}, {dec_layers}.")
        self.num_classes, self.num_predicates, self.num_queries = num_classes, num_predicates, num_queries
        self.deep_supervision = deep_supervision
        self.loss_coef = {"ce": class_weight, "bbox": l1_weight, "giou": giou_weight}
        self.matcher = HungarianMatcher(cost_class=cost_class, cost_bbox=cost_bbox, cost_giou=cost_giou)
        self.build_front_end(backbone, hidden_dim=hidden_dim, nheads=nheads, dim_feedforward=dim_feedforward,
                             dropout=dropout, num_layers=enc_layers)
        self.decoder = clones(TransformerDecoderLayer(hidden_dim, nheads, dim_feedforward, dropout), dec_layers)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query = nn.Embedding(num_queries, hidden_dim)
        self.entity_class = nn.Linear(hidden_dim, num_classes + 1)  # last column = no object
        self.box_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.build_encoder_aux_head(hidden_dim, num_classes, encoder_aux_class_weight)
        for module in (self.encoder, self.decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        class_w = torch.ones(num_classes + 1)
        class_w[-1] = no_object_weight
        self.register_buffer("class_weights", class_w, persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        return {"backbone": build_backbone(cfg), "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                "num_predicates": cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES, "num_queries": d.NUM_QUERIES,
                "hidden_dim": d.HIDDEN_DIM, "nheads": d.NHEADS, "dim_feedforward": d.DIM_FEEDFORWARD,
                "enc_layers": d.ENC_LAYERS, "dec_layers": d.DEC_LAYERS, "dropout": d.DROPOUT,
                "deep_supervision": d.DEEP_SUPERVISION, "cost_class": d.COST_CLASS, "cost_bbox": d.COST_BBOX,
                "cost_giou": d.COST_GIOU, "class_weight": d.CLASS_WEIGHT, "l1_weight": d.L1_WEIGHT,
                "giou_weight": d.GIOU_WEIGHT, "no_object_weight": d.NO_OBJECT_WEIGHT,
                "encoder_aux_class_weight": d.ENCODER_AUX_CLASS_WEIGHT, "pixel_mean": cfg.MODEL.PIXEL_MEAN,
                "pixel_std": cfg.MODEL.PIXEL_STD}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def network(self, images: torch.Tensor, mask: torch.Tensor) -> Tuple[List[Dict[str, torch.Tensor]], Dict]:
        """Images -> (per decoder layer ``{logits (B, Q, C+1), boxes (B, Q, 4) normalised cxcywh}``, encoder
        output of :meth:`DETRFrontEnd.encode`)."""
        enc = self.encode(images, mask)
        query_pos = self.query.weight[None].expand(images.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        layers = []
        for layer in self.decoder:
            tgt = layer(tgt, enc["memory"], enc["pos"], query_pos, enc["padding"])
            out = self.decoder_norm(tgt)
            layers.append({"logits": self.entity_class(out), "boxes": self.box_head(out).sigmoid()})
        return layers, enc

    def forward(self, batched_inputs: Sequence[dict]):
        images, mask = pad_and_normalize(batched_inputs, self.pixel_mean, self.pixel_std)
        layers, enc = self.network(images, mask)
        if not self.training:
            return [self.inference(layers[-1]["logits"][b], layers[-1]["boxes"][b], (x["height"], x["width"]))
                    for b, x in enumerate(batched_inputs)]
        sample_w = sample_loss_weights(batched_inputs, self.device)
        targets = self.targets(batched_inputs)
        losses = self.losses(layers if self.deep_supervision else layers[-1:], targets, sample_w)
        if self.encoder_class is not None:
            losses["loss_encoder_ce"] = self.encoder_aux_loss(batched_inputs, enc, self.class_weights, sample_w)
        return losses

    def targets(self, batched_inputs: Sequence[dict]) -> List[Dict[str, torch.Tensor]]:
        """Per image ``{labels (N,), boxes (N, 4) cxcywh normalised by the transformed image size}``."""
        out = []
        for x in batched_inputs:
            h, w = x["image"].shape[-2:]
            boxes = torch.as_tensor(x["gt_boxes"], dtype=torch.float32, device=self.device).reshape(-1, 4)
            labels = torch.as_tensor(x["gt_classes"], dtype=torch.int64, device=self.device).reshape(-1)
            if len(labels) != len(boxes) or (len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes)):
                raise ValueError(f"image {x.get('image_id', '?')}: {len(boxes)} gt_boxes and gt_classes "
                                 f"{labels.tolist()}; expected one class in [0, {self.num_classes}) per box.")
            scale = boxes.new_tensor([w, h, w, h])
            out.append({"labels": labels, "boxes": box_xyxy_to_cxcywh((boxes / scale).clamp(0, 1))})
        return out

    def losses(self, layers: List[Dict[str, torch.Tensor]], targets: List[Dict[str, torch.Tensor]],
               sample_w: torch.Tensor) -> Dict[str, torch.Tensor]:
        """CE (class weights, no-object ``NO_OBJECT_WEIGHT``) + L1 + GIoU per decoder layer (suffix ``_i`` for the
        earlier ones), every per-query term scaled by its image's loss weight; boxes normalised by the GT count over
        all ranks."""
        n_boxes = boxes_over_ranks(torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=self.device))
        losses = {}
        for i, out in enumerate(layers):
            suffix = "" if i == len(layers) - 1 else f"_{i}"
            indices = self.matcher(out["logits"], out["boxes"], targets)
            terms = set_prediction_losses(out["logits"], out["boxes"], indices, [t["labels"] for t in targets],
                                          [t["boxes"] for t in targets], class_weights=self.class_weights,
                                          sample_weights=sample_w, num_boxes=n_boxes, coef=self.loss_coef)
            for name, value in terms.items():
                losses[f"loss_{name}{suffix}"] = value
        return losses

    def inference(self, logits: torch.Tensor, boxes: torch.Tensor, image_size: Tuple[int, int]) -> Dict:
        """One image: every query's best non-background class and its probability, boxes in original pixels."""
        h, w = image_size
        scores, labels = logits.float().softmax(-1)[:, :-1].max(-1)
        order = torch.argsort(scores, descending=True)
        xyxy = box_cxcywh_to_xyxy(boxes.float()) * boxes.new_tensor([w, h, w, h]).float()
        return {"boxes": xyxy[order], "labels": labels[order], "scores": scores[order],
                "rel_pairs": torch.zeros((0, 2), dtype=torch.int64, device=logits.device),
                "rel_scores": logits.new_zeros((0, self.num_predicates), dtype=torch.float32)}


# ---------------------------------------------------------------------------- DETR -> SpeaQ
def detr_to_speaq_state_dict(detr_state: Dict[str, torch.Tensor], *, multiply_query: int,
                             num_relation_queries: int) -> Dict[str, torch.Tensor]:
    """SpeaQ's initialisation from a :class:`DETR` state dict, as upstream: backbone, projection and encoder copied,
    the decoder layers replicated into the subject, object and relation decoders, the decoder norm into the entity
    and relation norms, the queries into the subject/object queries (and, each repeated ``multiply_query`` times, the
    relation queries), the class head into the entity class head, the box MLP into the shared box head. The
    predicate head and the cross-stream conditioning keep their own initialisation (upstream: the same)."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in detr_state.items():
        if key.startswith(("backbone.", "input_proj.", "encoder.", "entity_class.", "box_head.", "encoder_class.")):
            out[key] = value
        elif key.startswith("decoder."):
            for stream in ("sub", "obj", "rel"):
                out[f"decoder.{stream}_layers.{key[len('decoder.'):]}"] = value
        elif key.startswith("decoder_norm."):
            for norm in ("entity_norm", "rel_norm"):
                out[f"decoder.{norm}.{key[len('decoder_norm.'):]}"] = value
        elif key == "query.weight":
            out["sub_query.weight"] = value
            out["obj_query.weight"] = value
            rel = value.repeat_interleave(multiply_query, dim=0)
            if rel.shape[0] != num_relation_queries:
                raise ValueError(f"The DETR checkpoint has {value.shape[0]} queries but this SpeaQ has NUM_QUERIES "
                                 f"= {num_relation_queries // multiply_query}; set MODEL.DETR.NUM_QUERIES "
                                 f"{value.shape[0]} to start from it.")
            out["rel_query.weight"] = rel
    return out
