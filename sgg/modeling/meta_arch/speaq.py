"""SpeaQ (Kim et al., CVPR 2024) on IterativeSG (Khandelwal & Sigal, NeurIPS 2022): one-stage scene graph detection.

Reads top to bottom:

1. :class:`IterativeRelationDecoder` — three decoders (subject, object, relation) of ``num_layers`` DETR layers. At
   every layer the object queries' positional part is conditioned on the subject outputs, the relation queries' on
   subject + object outputs (cross-attention, zero-initialised projections), and between layers each stream attends
   to all (subject, object, relation) triplet features (zero-initialised residuals), so the three streams refine
   each other layer by layer. Relation query ``i`` forms a triplet with subject/object query ``i // MULTIPLY_QUERY``.
2. :class:`SpeaQ` — backbone -> 1x1 projection -> sine positions -> transformer encoder -> decoder -> heads (a shared
   entity class head with a background column, a predicate head with a no-relation column, one box MLP shared by the
   subject, object and relation streams). Training: a matcher (``MODEL.MATCHER.NAME``) assigns triplet queries to GT
   relations at every layer; losses = CE + L1 + GIoU per stream and layer. Inference: class-wise NMS over the 2Q
   entity boxes with duplicates snapped to their kept box, score = p(pred) * s_sub * s_obj, duplicate (sub, obj,
   pred) triplets removed (``MODEL.DETR.TRIPLET_RULE``: sgg's rule or the released code's, :func:`triplet_inference`).
3. :func:`detr_to_speaq_state_dict` — SpeaQ's initialisation from a :class:`~sgg.modeling.meta_arch.detr.DETR`
   checkpoint (``MODEL.DETR.DETECTOR_WEIGHTS``), the detector's decoder replicated x3.

The front end, the set-prediction losses and the config keywords shared with DETR come from
:mod:`sgg.modeling.set_prediction`. **Per-sample loss weights** (``loss_weight`` from the multi-dataset sampler):
every per-query term of an image — matched CE, the no-object / no-relation CE of its unmatched queries, L1 and GIoU
— is multiplied by that image's weight, while the normalisers stay the unweighted ones (CE: the sum of class weights
over all queries of the batch, as ``F.cross_entropy(weight=...)``; boxes: the number of matched GT copies over all
ranks). So a batch of weight-1 images gives exactly the unweighted DETR loss, and an image of weight 0.5 contributes
half of what it would at 1.

The state dict is a key-for-key rename of the released IterativeSG / SpeaQ checkpoints (``tools/convert_checkpoint.py
--from speaq|iterative_sg``, :mod:`sgg.checkpoint.converters.speaq`, docs/checkpoints.md); ``MODEL.DETR.PADDING_MASK
"ceil"`` gives the released code's feature padding mask for batches of mixed image sizes.

IterativeSG is this model with SpeaQ's parts off (``IterativeHungarianMatcher``, ``MULTIPLY_QUERY 1``); it is also
registered under the name ``IterativeSG``.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision.ops import batched_nms

from sgg.checkpoint.checkpointer import CheckpointError, load_checkpoint_file
from sgg.config import configurable
from sgg.structures.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, pairwise_iou

from ..build import META_ARCH_REGISTRY, build_matcher
from ..layers import MLP, TransformerDecoderLayer
from ..layers.transformer import clones, with_pos
from ..losses import class_weights_with_background, relation_class_weights
from ..matchers.hungarian import STREAMS
from ..matchers.speaq import training_predicate_frequencies
from ..set_prediction import DETRFrontEnd, boxes_over_ranks, detr_kwargs, loss_weight_of, set_prediction_losses

__all__ = ["IterativeRelationDecoder", "SpeaQ", "IterativeSG", "build_relation_targets", "relation_boxes_from_pairs",
           "TRIPLET_RULES", "triplet_inference", "detr_to_speaq_state_dict"]

logger = logging.getLogger(__name__)

# Keys only SpeaQMatcher understands; a config that turns them on with another matcher is an error, not a no-op.
_SPEAQ_OFF = {"USE_GROUP_MASK": False, "NUM_GROUPS": 1, "ONE2MANY_SCHEME": "none", "MULTIPLY_QUERY": 1}


# ---------------------------------------------------------------------------- decoder
class IterativeRelationDecoder(nn.Module):
    """Subject, object and relation decoders conditioned on each other layer by layer.

    ``forward(memory (B, L, d), pos (B, L, d), mask (B, L), sub_pos (B, Qe, d), obj_pos (B, Qe, d),
    rel_pos (B, Qr, d))`` with ``Qr = multiply * Qe`` -> ``(sub, obj, rel)`` features, each ``(num_layers, B, Q, d)``
    (normalised; every layer's output feeds the auxiliary losses).
    """

    def __init__(self, *, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int,
                 multiply: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MODEL.DETR.DEC_LAYERS must be >= 1, got {num_layers}.")
        layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout)
        self.num_layers, self.multiply = num_layers, multiply
        self.sub_layers, self.obj_layers, self.rel_layers = (clones(layer, num_layers) for _ in range(3))
        self.entity_norm, self.rel_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

        def attn(kdim):
            return nn.MultiheadAttention(d_model, nhead, dropout=dropout, kdim=kdim, vdim=kdim, batch_first=True)

        n_graph = num_layers - 1
        self.obj_cond_attn = nn.ModuleList(attn(d_model) for _ in range(num_layers))
        self.obj_cond_proj = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(num_layers))
        self.rel_cond_attn = nn.ModuleList(attn(2 * d_model) for _ in range(num_layers))
        self.rel_cond_proj = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(num_layers))
        self.graph_attn = nn.ModuleDict({s: nn.ModuleList(attn(3 * d_model) for _ in range(n_graph)) for s in STREAMS})
        self.graph_proj = nn.ModuleDict({s: nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_graph))
                                         for s in STREAMS})
        self.graph_norm = nn.ModuleDict({s: nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_graph))
                                         for s in STREAMS})
        self.dropout = nn.Dropout(dropout)

    def zero_init_conditioning(self) -> None:
        """Zero the projections that inject one stream into another, so training starts from three plain DETR
        decoders and the coupling is learned (as upstream initialises them)."""
        for proj in [*self.obj_cond_proj, *self.rel_cond_proj, *[p for s in STREAMS for p in self.graph_proj[s]]]:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def _repeat(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.multiply, dim=1) if self.multiply > 1 else x

    def forward(self, memory, pos, mask, sub_pos, obj_pos, rel_pos):
        sub_t, obj_t, rel_t = torch.zeros_like(sub_pos), torch.zeros_like(obj_pos), torch.zeros_like(rel_pos)
        outs: Dict[str, List[torch.Tensor]] = {s: [] for s in STREAMS}
        for i in range(self.num_layers):
            sub = self.sub_layers[i](sub_t, memory, pos, sub_pos, mask)
            # Object queries look at the subjects just decoded (their positional part becomes subject-aware).
            cond = self.obj_cond_attn[i](obj_pos, with_pos(sub, sub_pos), sub, need_weights=False)[0]
            obj_pos_i = obj_pos + self.dropout(self.obj_cond_proj[i](cond))
            obj = self.obj_layers[i](obj_t, memory, pos, obj_pos_i, mask)
            # Relation queries look at (subject, object) pairs.
            keys = torch.cat([with_pos(sub, sub_pos), with_pos(obj, obj_pos_i)], dim=-1)
            cond = self.rel_cond_attn[i](rel_pos, keys, torch.cat([sub, obj], dim=-1), need_weights=False)[0]
            rel_pos_i = rel_pos + self.dropout(self.rel_cond_proj[i](cond))
            rel = self.rel_layers[i](rel_t, memory, pos, rel_pos_i, mask)
            outs["sub"].append(self.entity_norm(sub))
            outs["obj"].append(self.entity_norm(obj))
            outs["rel"].append(self.rel_norm(rel))
            if i == self.num_layers - 1:
                break
            # Between layers every stream attends to the whole graph of triplet features.
            triplet = torch.cat([self._repeat(sub), self._repeat(obj), rel], dim=-1)
            triplet_pos = torch.cat([self._repeat(sub_pos), self._repeat(obj_pos_i), rel_pos_i], dim=-1)
            triplet_k = triplet + triplet_pos
            feats = {"sub": (sub, sub_pos), "obj": (obj, obj_pos_i), "rel": (rel, rel_pos_i)}
            nxt = {}
            for s, (x, p) in feats.items():
                g = self.graph_attn[s][i](x + p, triplet_k, triplet, need_weights=False)[0]
                nxt[s] = x + self.graph_norm[s][i](self.dropout(self.graph_proj[s][i](g)))
            sub_t, obj_t, rel_t = nxt["sub"], nxt["obj"], nxt["rel"]
        return tuple(torch.stack(outs[s]) for s in STREAMS)


# ---------------------------------------------------------------------------- targets
def relation_boxes_from_pairs(sub_xyxy: torch.Tensor, obj_xyxy: torch.Tensor) -> torch.Tensor:
    """Relation boxes ``(R, 4)`` xyxy spanning the subject centre to the object centre (IterativeSG)."""
    cs = (sub_xyxy[:, :2] + sub_xyxy[:, 2:]) / 2
    co = (obj_xyxy[:, :2] + obj_xyxy[:, 2:]) / 2
    return torch.cat([torch.minimum(cs, co), torch.maximum(cs, co)], dim=1)


def build_relation_targets(batched_inputs: Sequence[dict], num_classes: int, num_predicates: int,
                           device: torch.device) -> List[Dict[str, torch.Tensor]]:
    """Mapper outputs -> per-image matcher targets with normalised cxcywh boxes.

    Keys: ``{sub,obj,rel}_labels (R,)``, ``{sub,obj,rel}_boxes (R, 4)``, ``sub_index``/``obj_index`` (R,) and
    ``loss_weight`` (scalar). Boxes are divided by the transformed image's width/height (``image.shape[-2:]``).
    """
    targets = []
    for x in batched_inputs:
        where = f"image {x.get('image_id', '?')}"
        h, w = x["image"].shape[-2:]
        boxes = torch.as_tensor(x["gt_boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        labels = torch.as_tensor(x["gt_classes"], dtype=torch.int64, device=device).reshape(-1)
        rels = torch.as_tensor(x["gt_relations"], dtype=torch.int64, device=device).reshape(-1, 3)
        if not torch.isfinite(boxes).all():
            raise ValueError(f"{where}: gt_boxes contain NaN/inf.")
        if len(labels) != len(boxes):
            raise ValueError(f"{where}: {len(boxes)} gt_boxes but {len(labels)} gt_classes.")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{where}: gt_classes must be in [0, {num_classes}), got {labels.tolist()}.")
        if len(rels) and (rels[:, :2].min() < 0 or rels[:, :2].max() >= len(boxes) or rels[:, 2].min() < 0
                          or rels[:, 2].max() >= num_predicates):
            raise ValueError(f"{where}: gt_relations {rels.tolist()} index outside {len(boxes)} boxes or "
                             f"{num_predicates} predicates.")
        scale = boxes.new_tensor([w, h, w, h])
        sub_xyxy, obj_xyxy = boxes[rels[:, 0]], boxes[rels[:, 1]]
        rel_xyxy = relation_boxes_from_pairs(sub_xyxy, obj_xyxy)

        def norm(b):
            return box_xyxy_to_cxcywh((b / scale).clamp(0, 1))

        weight = loss_weight_of(x)
        targets.append({
            "sub_labels": labels[rels[:, 0]], "obj_labels": labels[rels[:, 1]], "rel_labels": rels[:, 2],
            "sub_boxes": norm(sub_xyxy), "obj_boxes": norm(obj_xyxy), "rel_boxes": norm(rel_xyxy),
            "sub_index": rels[:, 0], "obj_index": rels[:, 1], "loss_weight": torch.tensor(weight, device=device),
        })
    return targets


# ---------------------------------------------------------------------------- inference
TRIPLET_RULES = ("sgg", "upstream")  # MODEL.DETR.TRIPLET_RULE


def triplet_inference(out: Dict[str, torch.Tensor], image_size: Tuple[int, int], *, nms_thresh: float,
                      topk: int, rule: str = "sgg") -> Dict[str, torch.Tensor]:
    """One image's triplet query outputs -> the evaluator's prediction dict.

    ``out``: ``{sub,obj}_logits (Q, C+1)``, ``rel_logits (Q, P+1)``, ``{sub,obj}_boxes (Q, 4)`` normalised cxcywh;
    ``image_size``: (height, width) in ORIGINAL pixels. Entities are the 2Q subject/object boxes with their best
    non-background class; class-wise NMS keeps boxes and every entity is snapped to a kept box of its class. Then
    ``rule`` (``MODEL.DETR.TRIPLET_RULE``):

    * ``"sgg"``: an entity snaps to the highest-scoring kept box of its class overlapping it by >= ``nms_thresh``
      (the box that suppressed it); triplets are scored p(pred) * s_sub * s_obj with the kept boxes' scores,
      self-pairs (subject and object snapped to one box) dropped;
    * ``"upstream"`` (IterativeSG / SpeaQ's ``inference``): an entity snaps to the kept box of its class it overlaps
      most; triplets are scored with the query's own subject / object scores; self-pairs are kept.

    Both then sort the triplets, remove duplicate (sub, obj, pred) ones (the first, best-scoring copy stays) and keep
    the top ``topk``.
    Returns ``{boxes (N, 4) xyxy, labels (N,), scores (N,), rel_pairs (P, 2), rel_scores (P, num_predicates)}``.
    """
    if rule not in TRIPLET_RULES:
        raise ValueError(f"MODEL.DETR.TRIPLET_RULE must be one of {TRIPLET_RULES}, got '{rule}'.")
    h, w = image_size
    q = out["rel_logits"].shape[0]
    ent_prob = torch.cat([out["sub_logits"], out["obj_logits"]]).float().softmax(-1)[:, :-1]
    ent_scores, ent_labels = ent_prob.max(-1)
    ent_boxes = box_cxcywh_to_xyxy(torch.cat([out["sub_boxes"], out["obj_boxes"]]).float())
    ent_boxes = ent_boxes * ent_boxes.new_tensor([w, h, w, h])
    keep = batched_nms(ent_boxes, ent_scores, ent_labels, nms_thresh)  # sorted by decreasing score
    iou = pairwise_iou(ent_boxes, ent_boxes[keep])
    same = ent_labels[:, None] == ent_labels[keep][None, :]
    if rule == "upstream":
        # The most-overlapping kept box of the class (the class's best box is always kept, so there is one).
        snap = torch.where(same, iou, torch.full_like(iou, -1.0)).argmax(1)
    else:
        ok = (iou >= nms_thresh) & same
        # First (= best-scoring) admissible kept box; fall back to the most-overlapping one of the class.
        snap = torch.where(ok.any(1), ok.float().argmax(1), (iou * same).argmax(1))
    sub_idx, obj_idx = snap[:q], snap[q:]
    rel_prob = out["rel_logits"].float().softmax(-1)[:, :-1]
    kept_scores = ent_scores[keep]
    pred_score, pred_label = rel_prob.max(-1)
    if rule == "upstream":
        score = pred_score * ent_scores[:q] * ent_scores[q:]
        valid = torch.ones_like(sub_idx, dtype=torch.bool)
    else:
        score = pred_score * kept_scores[sub_idx] * kept_scores[obj_idx]
        valid = sub_idx != obj_idx
    order = torch.argsort(torch.where(valid, score, torch.full_like(score, -1.0)), descending=True)
    order = order[valid[order]]
    key = (sub_idx[order] * len(keep) + obj_idx[order]) * rel_prob.shape[1] + pred_label[order]
    seen, chosen = set(), []
    for i, k in zip(order.tolist(), key.tolist()):
        if k not in seen:
            seen.add(k)
            chosen.append(i)
            if len(chosen) >= topk:
                break
    chosen = torch.as_tensor(chosen, dtype=torch.int64, device=score.device)
    return {"boxes": ent_boxes[keep], "labels": ent_labels[keep], "scores": kept_scores,
            "rel_pairs": torch.stack([sub_idx[chosen], obj_idx[chosen]], dim=1).reshape(-1, 2),
            "rel_scores": rel_prob[chosen]}


# ---------------------------------------------------------------------------- model
@META_ARCH_REGISTRY.register()
class SpeaQ(DETRFrontEnd):
    """IterativeSG / SpeaQ scene graph detector (see the module docstring).

    ``forward(batched_inputs)``: a list of mapper dicts (``image`` uint8 (3, H, W) RGB, ``height``/``width`` of the
    original image, ``gt_boxes``/``gt_classes``/``gt_relations`` and ``loss_weight`` in training) -> a dict of losses
    in training mode, else one prediction dict per image (:func:`triplet_inference`).
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, matcher: nn.Module, num_classes: int, num_predicates: int,
                 num_queries: int = 300, multiply_query: int = 1, hidden_dim: int = 256, nheads: int = 8,
                 dim_feedforward: int = 2048, enc_layers: int = 6, dec_layers: int = 6, dropout: float = 0.1,
                 deep_supervision: bool = True, class_weight: float = 1.0, l1_weight: float = 5.0,
                 giou_weight: float = 2.0, no_object_weight: float = 0.1,
                 rel_class_weights: Optional[torch.Tensor] = None, encoder_aux_class_weight: float = 0.0,
                 detector_weights: str = "",
                 nms_thresh: float = 0.5, topk: int = 100, triplet_rule: str = "sgg",
                 padding_mask: str = "interpolate",
                 pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375)):
        super().__init__()
        if num_queries < 1 or multiply_query < 1:
            raise ValueError(f"NUM_QUERIES and MULTIPLY_QUERY must be >= 1, got {num_queries}, {multiply_query}.")
        self.matcher = matcher
        self.num_classes, self.num_predicates = num_classes, num_predicates
        self.num_queries, self.multiply_query = num_queries, multiply_query
        self.deep_supervision = deep_supervision
        self.loss_coef = {"ce": class_weight, "bbox": l1_weight, "giou": giou_weight}
        if triplet_rule not in TRIPLET_RULES:
            raise ValueError(f"MODEL.DETR.TRIPLET_RULE must be one of {TRIPLET_RULES}, got '{triplet_rule}'.")
        self.nms_thresh, self.topk, self.triplet_rule = nms_thresh, topk, triplet_rule

        self.build_front_end(backbone, hidden_dim=hidden_dim, nheads=nheads, dim_feedforward=dim_feedforward,
                             dropout=dropout, num_layers=enc_layers, padding_mask=padding_mask)
        self.decoder = IterativeRelationDecoder(d_model=hidden_dim, nhead=nheads, dim_feedforward=dim_feedforward,
                                                dropout=dropout, num_layers=dec_layers, multiply=multiply_query)
        self.sub_query = nn.Embedding(num_queries, hidden_dim)
        self.obj_query = nn.Embedding(num_queries, hidden_dim)
        self.rel_query = nn.Embedding(num_queries * multiply_query, hidden_dim)
        self.entity_class = nn.Linear(hidden_dim, num_classes + 1)  # last column = no object
        self.relation_class = nn.Linear(hidden_dim, num_predicates + 1)  # last column = no relation
        self.box_head = MLP(hidden_dim, hidden_dim, 4, 3)  # shared by the subject, object and relation streams
        self.build_encoder_aux_head(hidden_dim, num_classes, encoder_aux_class_weight)
        self._reset_parameters()

        if rel_class_weights is None:
            rel_class_weights = class_weights_with_background(num_predicates, 0.1)
        if rel_class_weights.shape != (num_predicates + 1,):
            raise ValueError(f"rel_class_weights must have {num_predicates + 1} entries (predicates + no-relation), "
                             f"got {tuple(rel_class_weights.shape)}.")
        self.register_buffer("entity_class_weights", class_weights_with_background(num_classes, no_object_weight),
                             persistent=False)
        self.register_buffer("rel_class_weights", rel_class_weights.float(), persistent=False)
        self.build_pixel_normalizer(pixel_mean, pixel_std)
        if detector_weights:
            self.load_detector(detector_weights)

    def load_detector(self, path: str) -> None:
        """Initialise from a :class:`~sgg.modeling.meta_arch.detr.DETR` checkpoint (``MODEL.DETR.DETECTOR_WEIGHTS``),
        its decoder replicated ×3 (:func:`detr_to_speaq_state_dict`); the predicate head and the cross-stream
        conditioning keep their initialisation. Clear errors for a missing file or an incompatible detector."""
        detr = load_checkpoint_file(path, "MODEL.DETR.DETECTOR_WEIGHTS")["model"]
        if not any(k.startswith("decoder_norm.") for k in detr):
            raise CheckpointError(f"MODEL.DETR.DETECTOR_WEIGHTS='{path}' is not a checkpoint of sgg's DETR detector "
                                  f"(no 'decoder_norm.*' keys; first keys: {sorted(detr)[:5]}).")
        state = detr_to_speaq_state_dict(detr, multiply_query=self.multiply_query,
                                         num_relation_queries=self.rel_query.num_embeddings)
        own = self.state_dict()
        if self.encoder_class is None:  # the detector's auxiliary head has no use here
            state = {k: v for k, v in state.items() if not k.startswith("encoder_class.")}
        for key, value in state.items():
            if key not in own:
                raise CheckpointError(f"MODEL.DETR.DETECTOR_WEIGHTS='{path}': '{key}' has no counterpart in this "
                                      f"SpeaQ (e.g. DEC_LAYERS, ENCODER_AUX_CLASS_WEIGHT or the backbone differ).")
            if own[key].shape != value.shape:
                raise CheckpointError(f"MODEL.DETR.DETECTOR_WEIGHTS='{path}': '{key}' has shape {tuple(value.shape)}, "
                                      f"this model needs {tuple(own[key].shape)} (HIDDEN_DIM, NUM_QUERIES, "
                                      f"NUM_CLASSES and the backbone must match the detector's config).")
        self.load_state_dict(state, strict=False)
        logger.info("SpeaQ initialised from the DETR detector %s (%d tensors; decoder replicated x3).", path,
                    len(state))

    def _reset_parameters(self) -> None:
        for module in (self.encoder, self.decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        self.decoder.zero_init_conditioning()

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        if cfg.TEST.RELATION.MODE != "sgdet":
            raise ValueError(f"{cfg.MODEL.META_ARCHITECTURE} is a one-stage SGDet model; TEST.RELATION.MODE must be "
                             f"'sgdet', got '{cfg.TEST.RELATION.MODE}'.")
        if cfg.MODEL.MATCHER.NAME != "SpeaQMatcher":
            on = [k for k, off in _SPEAQ_OFF.items() if getattr(d, k) != off]
            if on:
                raise ValueError(f"MODEL.DETR.{on} are SpeaQ options and need MODEL.MATCHER.NAME 'SpeaQMatcher' "
                                 f"(got '{cfg.MODEL.MATCHER.NAME}'); set them to {[_SPEAQ_OFF[k] for k in on]} for "
                                 f"IterativeSG.")
        num_predicates = cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES
        freq = training_predicate_frequencies(cfg) if (cfg.DATASETS.TRAIN or cfg.DATASETS.MULTI_DATASET.ENABLED
                                                       or cfg.DATASETS.TYPE) else None
        if freq is not None and len(freq) != num_predicates:
            raise ValueError(f"MODEL.ROI_RELATION_HEAD.NUM_CLASSES={num_predicates} but the training data has "
                             f"{len(freq)} predicates.")
        rel_w = None
        if freq is not None:
            rel_w = relation_class_weights(freq, d.OVERSAMPLE_PARAM, d.UNDERSAMPLE_PARAM, d.NO_RELATION_WEIGHT)
        return {**detr_kwargs(cfg), "matcher": build_matcher(cfg), "multiply_query": d.MULTIPLY_QUERY,
                "rel_class_weights": rel_w, "detector_weights": d.DETECTOR_WEIGHTS, "nms_thresh": d.NMS_THRESH,
                "topk": cfg.TEST.RELATION.TOPK, "triplet_rule": d.TRIPLET_RULE, "padding_mask": d.PADDING_MASK}

    # -------------------------------------------------------------- network
    def network(self, images: torch.Tensor, mask: torch.Tensor
                ) -> Tuple[List[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]:
        """Images -> (per decoder layer ``{sub,obj,rel}_logits`` and ``{sub,obj,rel}_boxes`` (B, Qr, ·), the encoder
        output of :meth:`DETRFrontEnd.encode`)."""
        enc = self.encode(images, mask)
        b = images.shape[0]
        queries = [q.weight[None].expand(b, -1, -1) for q in (self.sub_query, self.obj_query, self.rel_query)]
        sub, obj, rel = self.decoder(enc["memory"], enc["pos"], enc["padding"], *queries)
        if self.multiply_query > 1:  # every relation query has its own copy of its subject/object predictions
            sub = sub.repeat_interleave(self.multiply_query, dim=2)
            obj = obj.repeat_interleave(self.multiply_query, dim=2)
        layers = []
        for i in range(sub.shape[0]):
            layers.append({"sub_logits": self.entity_class(sub[i]), "obj_logits": self.entity_class(obj[i]),
                           "rel_logits": self.relation_class(rel[i]), "sub_boxes": self.box_head(sub[i]).sigmoid(),
                           "obj_boxes": self.box_head(obj[i]).sigmoid(), "rel_boxes": self.box_head(rel[i]).sigmoid()})
        return layers, enc

    def forward(self, batched_inputs: Sequence[dict]):
        images, mask = self.preprocess(batched_inputs)
        layers, encoded = self.network(images, mask)
        if self.training:
            targets = build_relation_targets(batched_inputs, self.num_classes, self.num_predicates, self.device)
            losses = self.losses(layers, targets)
            if self.encoder_class is not None:
                sample_w = torch.stack([t["loss_weight"] for t in targets]).float()
                losses["loss_encoder_ce"] = self.encoder_aux_loss(batched_inputs, encoded, self.entity_class_weights,
                                                                  sample_w)
            return losses
        last = layers[-1]
        results = []
        for b, x in enumerate(batched_inputs):
            out = {k: v[b] for k, v in last.items()}
            results.append(triplet_inference(out, (x["height"], x["width"]), nms_thresh=self.nms_thresh,
                                             topk=self.topk, rule=self.triplet_rule))
        return results

    # -------------------------------------------------------------- losses
    def losses(self, layers: List[Dict[str, torch.Tensor]],
               targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """CE + L1 + GIoU of every stream at the last layer (and, with deep supervision, every earlier layer)."""
        if not self.deep_supervision:
            layers = layers[-1:]
        matches = self.matcher(layers, targets)
        # Box-loss normaliser of each layer: matched GT copies over the whole (distributed) batch, at least 1.
        n_boxes = boxes_over_ranks(torch.tensor([float(sum(len(r) for r, _ in idx)) for idx, _ in matches],
                                                device=self.device))
        losses = {}
        for i, (out, (indices, tgts)) in enumerate(zip(layers, matches)):
            suffix = "" if i == len(layers) - 1 else f"_{i}"
            for name, value in self._layer_losses(out, indices, tgts, n_boxes[i]).items():
                losses[name + suffix] = value
        return losses

    def _layer_losses(self, out, indices, tgts, n_boxes) -> Dict[str, torch.Tensor]:
        sample_w = torch.stack([t["loss_weight"] for t in tgts]).float()  # (B,)
        losses = {}
        for s in STREAMS:
            class_w = self.rel_class_weights if s == "rel" else self.entity_class_weights
            terms = set_prediction_losses(out[f"{s}_logits"], out[f"{s}_boxes"], indices,
                                          [t[f"{s}_labels"] for t in tgts], [t[f"{s}_boxes"] for t in tgts],
                                          class_weights=class_w, sample_weights=sample_w, num_boxes=n_boxes,
                                          coef=self.loss_coef)
            for name, value in terms.items():
                losses[f"loss_{s}_{name}"] = value
        return losses


@META_ARCH_REGISTRY.register()
class IterativeSG(SpeaQ):
    """IterativeSG (NeurIPS 2022): :class:`SpeaQ` without groups, query multiplication or one-to-many assignment
    (``MODEL.MATCHER.NAME: IterativeHungarianMatcher``); a separate name so configs say which model they train."""


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
