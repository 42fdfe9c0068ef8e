"""DETR (Carion et al., ECCV 2020): the object detector that SpeaQ / IterativeSG start from.

Upstream SpeaQ initialises from a DETR trained on Visual Genome whose decoder is replicated three times (subject,
object and relation decoders). This file is that detector built from sgg's set-prediction parts
(:mod:`sgg.modeling.set_prediction`), with the module names SpeaQ uses, so that
:func:`~sgg.modeling.meta_arch.speaq.detr_to_speaq_state_dict` turns its checkpoint into SpeaQ's initialisation
(``MODEL.DETR.DETECTOR_WEIGHTS``).

:class:`DETR` — the shared front end (:class:`~sgg.modeling.set_prediction.DETRFrontEnd`: backbone -> 1x1
projection -> sine positions -> transformer encoder) + ``DEC_LAYERS`` decoder layers over ``NUM_QUERIES`` learned
queries, a class head with a no-object column and a 3-layer box MLP; Hungarian matching (``HungarianMatcher``) and
CE + L1 + GIoU losses per decoder layer (:func:`~sgg.modeling.set_prediction.set_prediction_losses`); per-sample
``loss_weight`` as in SpeaQ; the optional dense auxiliary loss on the encoder output
(``MODEL.DETR.ENCODER_AUX_CLASS_WEIGHT``). Inference emits the scene-graph evaluator's format with no relations, so
``SceneGraphEvaluator`` reports its box AP.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from sgg.config import configurable
from sgg.structures.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh

from ..build import META_ARCH_REGISTRY
from ..layers import MLP, TransformerDecoderLayer
from ..layers.transformer import clones
from ..losses import class_weights_with_background
from ..matchers.hungarian import HungarianMatcher
from ..set_prediction import (
    DETRFrontEnd,
    boxes_over_ranks,
    detr_kwargs,
    sample_loss_weights,
    set_prediction_losses,
)

__all__ = ["DETR"]

logger = logging.getLogger(__name__)


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
        self.register_buffer("class_weights", class_weights_with_background(num_classes, no_object_weight),
                             persistent=False)
        self.build_pixel_normalizer(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        return {**detr_kwargs(cfg), "cost_class": d.COST_CLASS, "cost_bbox": d.COST_BBOX, "cost_giou": d.COST_GIOU}

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
        images, mask = self.preprocess(batched_inputs)
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
