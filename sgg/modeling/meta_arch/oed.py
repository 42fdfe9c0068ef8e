"""OED (Wang et al., CVPR 2024, guanw-pku/OED): one-stage DETR video scene graph generation with a progressive
refinement module over reference frames, in PredCls and SGDet (``TEST.RELATION.MODE``).

Per video (one dict from :class:`~sgg.data.video_mapper.ActionGenomeMapper`; its annotated frames are the key
frames, and each other's reference frames)::

    frames (T, 3, H', W') --backbone--> 1x1 conv to HIDDEN_DIM + sine positions --> ENC_LAYERS DETR encoder
    pair queries: SGDet  = NUM_QUERIES learned embeddings (query position; content 0)
                  PredCls = one query per GT (person, object) pair: content = MLP(word embedding of the object class),
                            position = MLP([sub cxcywh, obj cxcywh, sub - obj centre, sub area, obj area])
    instance decoder : DEC_LAYERS_HOPD layers -> object class (C + 1, last = no object), subject box, object box
    relation decoder : DEC_LAYERS_INTERACTION layers (position = instance decoder output, content 0) ->
                       attention (3 + background), spatial (6), contacting (17) logits
    --- spatial stage ends here (MODEL.OED.STAGE "spatial") ---
    temporal stage   : query feature = [instance | relation] (2 x HIDDEN_DIM); every key frame takes NUM_REF_FRAMES
                       reference frames (layers/progressive_refinement.py: random within +-INTERVAL_TRAIN in training,
                       strided within +-INTERVAL_TEST at test, or past frames only with CAUSAL); the progressive
                       refinement module refines the key queries with the top-k reference queries (k shrinking per
                       layer, TOPK_FRACTIONS) -> split -> ``temporal_*`` heads, copied from the spatial heads before
                       the first temporal step; only ``refinement.*`` and ``temporal_*`` parameters train.

Training (SGDet): per frame Hungarian matching (:class:`~sgg.modeling.matchers.pair.PairHungarianMatcher`), object
CE over all queries (no-object weight EOS_COEF), attention CE + focal multi-label spatial / contacting losses on the
matched queries, L1 + GIoU of subject and object boxes; auxiliary losses on the last ``min(hopd, interaction) - 1``
earlier decoder layers (spatial stage). PredCls: query ``i`` is GT pair ``i`` (no matching), relation losses only.
Evaluation returns per video ``{"frames": [{boxes (N, 4) xyxy original pixels, labels, scores, pairs (P, 2),
attention (P, 3), spatial (P, 6), contacting (P, 17)}, ...]}`` (``video_scene_graph``'s format): SGDet frames hold
the Q subject boxes (person, score 1) then the Q object boxes (best real class and its probability), pair ``i`` =
(i, Q + i); attention = softmax over the 3 real attention logits (as upstream).

Deliberate differences from upstream (docs/oed.md): attention targets are the pair's first attention label (upstream's
``torch.where`` over a one-hot silently misaligns on pairs with 0 or 2 labels); spatial / contacting losses use
log-sigmoids (finite where upstream's ``log(p)`` is not); any NUM_QUERIES works (upstream hard-codes 100); a
1-frame video is its own reference (upstream's test sampler loops forever); reference frames share one spatial
pass per video (each frame is computed once, then used as key and as reference).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sgg.config import configurable
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES
from sgg.structures.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou

from ..build import META_ARCH_REGISTRY, build_backbone
from ..layers import (
    MLP,
    ProgressiveRefinement,
    TransformerDecoderLayer,
    reference_query_scores,
    select_reference_frames,
)
from ..layers.transformer import clones
from ..matchers.pair import PairHungarianMatcher
from ..set_prediction import DETRFrontEnd, focal_multi_label_loss
from ..video_sgg import (
    VideoSGGModel,
    check_video_images,
    gather_gt_boxes,
    load_word_vectors,
    split_frames,
    training_pairs,
    video_relation_targets,
)

__all__ = ["OED", "OED_MODES", "OED_STAGES", "pair_geometry"]

logger = logging.getLogger(__name__)

OED_MODES = ("predcls", "sgdet")
OED_STAGES = ("spatial", "temporal")
_HEADS = ("obj_class", "sub_box", "obj_box", "attention_head", "spatial_head", "contacting_head")


def pair_geometry(sub: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """PredCls query position input ``(P, 12)`` from normalised cxcywh ``sub`` / ``obj`` ``(P, 4)``:
    ``[sub cxcywh, obj cxcywh, sub centre - obj centre, sub area, obj area]`` (OED's 12-d pair geometry)."""
    return torch.cat([sub, obj, sub[:, :2] - obj[:, :2], (sub[:, 2] * sub[:, 3])[:, None],
                      (obj[:, 2] * obj[:, 3])[:, None]], 1)


@META_ARCH_REGISTRY.register()
class OED(DETRFrontEnd, VideoSGGModel):
    """One-stage DETR video SGG (see the module docstring). ``forward(list of video dicts)``: losses averaged over
    the videos in training, one ``{"frames": [...]}`` per video in evaluation."""

    @configurable
    def __init__(self, *, backbone: nn.Module, mode: str, stage: str = "spatial", num_classes: int = 36,
                 predicate_groups: Sequence[int] = (3, 6, 17), num_queries: int = 100, hidden_dim: int = 256,
                 nheads: int = 8, dim_feedforward: int = 2048, enc_layers: int = 6, dec_layers_hopd: int = 6,
                 dec_layers_interaction: int = 6, dropout: float = 0.1, aux_loss: bool = True,
                 cost_obj_class: float = 1.0, cost_relation: float = 1.0, cost_bbox: float = 2.5,
                 cost_giou: float = 1.0, obj_loss_coef: float = 1.0, rel_loss_coef: float = 2.0,
                 bbox_loss_coef: float = 2.5, giou_loss_coef: float = 1.0, eos_coef: float = 0.1,
                 focal_alpha: float = 0.5, num_ref_frames: int = 2, interval_train: int = 4, interval_test: int = 4,
                 causal: bool = False, topk_fractions: Sequence[float] = (0.8, 0.5, 0.3), embed_dim: int = 200,
                 word_vectors: str = "", class_names: Sequence[str] = (), frame_chunk: int = 16,
                 pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375)):
        """
        Args:
            backbone: ``MODEL.BACKBONE`` network (``out_channels``; upstream ResNet-50, the demo's SmallCNN).
            mode: ``"predcls"`` or ``"sgdet"``. stage: ``"spatial"`` or ``"temporal"`` (module docstring).
            num_classes / predicate_groups: object classes incl. the person (= 0) and the (attention, spatial,
                contacting) group sizes (AG: 36; 3, 6, 17).
            num_queries: SGDet pair queries (upstream 100). dec_layers_hopd / dec_layers_interaction: instance /
                relation decoder depths (upstream 6 / 6 SGDet, 3 / 3 PredCls).
            cost_*: matching costs; *_loss_coef: loss weights; eos_coef: CE weight of "no object";
                focal_alpha: alpha of the spatial / contacting focal loss (upstream ``--alpha`` 0.5).
            num_ref_frames, interval_train, interval_test, causal, topk_fractions: the temporal stage.
            embed_dim, word_vectors, class_names: PredCls object-class embeddings (GloVe file or learned).
            frame_chunk: frames per backbone + encoder forward (bounds memory on long videos).
        """
        super().__init__()
        if mode not in OED_MODES:
            raise ValueError(f"OED: TEST.RELATION.MODE must be one of {OED_MODES}, got {mode!r} (SGCls is not built).")
        if stage not in OED_STAGES:
            raise ValueError(f"MODEL.OED.STAGE must be one of {OED_STAGES}, got {stage!r}.")
        if len(predicate_groups) != 3:
            raise ValueError(f"MODEL.STTRAN.PREDICATE_GROUPS needs 3 sizes, got {tuple(predicate_groups)}.")
        if min(num_queries, dec_layers_hopd, dec_layers_interaction, num_ref_frames, frame_chunk) < 1:
            raise ValueError("MODEL.OED: NUM_QUERIES, DEC_LAYERS_HOPD, DEC_LAYERS_INTERACTION, NUM_REF_FRAMES and "
                             "FRAME_CHUNK must be >= 1.")
        self.mode, self.stage = mode, stage
        self.num_classes, self.groups = num_classes, tuple(int(g) for g in predicate_groups)
        self.num_queries, self.aux_loss, self.frame_chunk = num_queries, aux_loss, frame_chunk
        self.num_ref_frames, self.interval_train, self.interval_test = num_ref_frames, interval_train, interval_test
        self.causal, self.focal_alpha = bool(causal), focal_alpha
        self.coef = {"obj_ce": obj_loss_coef, "attention": rel_loss_coef, "spatial": rel_loss_coef,
                     "contacting": rel_loss_coef, "sub_bbox": bbox_loss_coef, "obj_bbox": bbox_loss_coef,
                     "sub_giou": giou_loss_coef, "obj_giou": giou_loss_coef}
        self.matcher = PairHungarianMatcher(cost_obj_class=cost_obj_class, cost_relation=cost_relation,
                                            cost_bbox=cost_bbox, cost_giou=cost_giou)
        d = hidden_dim
        self.build_front_end(backbone, hidden_dim=d, nheads=nheads, dim_feedforward=dim_feedforward,
                             dropout=dropout, num_layers=enc_layers)
        layer = TransformerDecoderLayer(d, nheads, dim_feedforward, dropout)
        self.instance_decoder, self.relation_decoder = clones(layer, dec_layers_hopd), clones(layer,
                                                                                             dec_layers_interaction)
        self.instance_norm, self.relation_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        for module in (self.encoder, self.instance_decoder, self.relation_decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        if mode == "sgdet":
            self.query = nn.Embedding(num_queries, d)
        else:
            self.class_embed = nn.Embedding(num_classes, embed_dim)
            if word_vectors:
                if len(class_names) != num_classes:
                    raise ValueError(f"MODEL.STTRAN.WORD_VECTORS needs {num_classes} class names, got "
                                     f"{len(class_names)}.")
                self.class_embed.weight.data.copy_(load_word_vectors(word_vectors, class_names, embed_dim)[0])
            self.content_mlp = MLP(embed_dim, d, d, 2)
            self.position_mlp = MLP(12, d, d, 2)
        n_att, n_spa, n_con = self.groups
        self.obj_class = nn.Linear(d, num_classes + 1)
        self.sub_box, self.obj_box = MLP(d, d, 4, 3), MLP(d, d, 4, 3)
        self.attention_head = nn.Linear(d, n_att + 1)  # + background (upstream; never a target, dropped at test)
        self.spatial_head, self.contacting_head = nn.Linear(d, n_spa), nn.Linear(d, n_con)
        weights = torch.ones(num_classes + 1)
        weights[-1] = eos_coef
        self.register_buffer("class_weights", weights, persistent=False)
        self.build_pixel_normalizer(pixel_mean, pixel_std)
        if stage == "temporal":
            self.refinement = ProgressiveRefinement(2 * d, nheads, dim_feedforward, dropout, topk_fractions)
            for name in _HEADS:
                setattr(self, "temporal_" + name, _clone_module(getattr(self, name)))
            # 0 until the temporal heads were copied from the spatial ones (after MODEL.WEIGHTS loaded the spatial
            # stage); saved in checkpoints so a resumed or evaluated temporal model never copies again.
            self.register_buffer("temporal_heads_initialized", torch.zeros((), dtype=torch.long))
            for name, p in self.named_parameters():
                if not (name.startswith("refinement.") or name.startswith("temporal_")):
                    p.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Keyword arguments from ``MODEL.OED``, ``MODEL.STTRAN`` (classes, predicate groups, word embeddings),
        ``MODEL.BACKBONE``, ``MODEL.PIXEL_MEAN / STD`` and ``TEST.RELATION.MODE``."""
        o, s = cfg.MODEL.OED, cfg.MODEL.STTRAN
        return {
            "backbone": build_backbone(cfg), "mode": cfg.TEST.RELATION.MODE, "stage": o.STAGE,
            "num_classes": s.NUM_CLASSES, "predicate_groups": tuple(s.PREDICATE_GROUPS),
            "num_queries": o.NUM_QUERIES, "hidden_dim": o.HIDDEN_DIM, "nheads": o.NHEADS,
            "dim_feedforward": o.DIM_FEEDFORWARD, "enc_layers": o.ENC_LAYERS, "dec_layers_hopd": o.DEC_LAYERS_HOPD,
            "dec_layers_interaction": o.DEC_LAYERS_INTERACTION, "dropout": o.DROPOUT, "aux_loss": o.AUX_LOSS,
            "cost_obj_class": o.COST_OBJ_CLASS, "cost_relation": o.COST_RELATION, "cost_bbox": o.COST_BBOX,
            "cost_giou": o.COST_GIOU, "obj_loss_coef": o.OBJ_LOSS_COEF, "rel_loss_coef": o.REL_LOSS_COEF,
            "bbox_loss_coef": o.BBOX_LOSS_COEF, "giou_loss_coef": o.GIOU_LOSS_COEF, "eos_coef": o.EOS_COEF,
            "focal_alpha": o.FOCAL_ALPHA, "num_ref_frames": o.NUM_REF_FRAMES, "interval_train": o.INTERVAL_TRAIN,
            "interval_test": o.INTERVAL_TEST, "causal": o.CAUSAL, "topk_fractions": tuple(o.TOPK_FRACTIONS),
            "embed_dim": s.EMBED_DIM, "word_vectors": s.WORD_VECTORS,
            "class_names": AG_OBJECT_CLASSES if s.NUM_CLASSES == len(AG_OBJECT_CLASSES) else (),
            "frame_chunk": o.FRAME_CHUNK, "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        """The device of the model's buffers (and parameters)."""
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------------------ spatial stage
    def _encode(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """uint8 frames ``(T, 3, H, W)`` -> the encoder output of :meth:`DETRFrontEnd.encode`, ``frame_chunk``
        frames at a time (the frames of a video share one size, so there is no padding)."""
        parts = []
        for i in range(0, len(images), self.frame_chunk):
            x = (images[i:i + self.frame_chunk].to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std
            parts.append(self.encode(x, torch.zeros((len(x),) + x.shape[-2:], dtype=torch.bool, device=self.device)))
        return {k: torch.cat([p[k] for p in parts]) for k in ("memory", "pos", "padding")}

    def _decode(self, enc: Dict[str, torch.Tensor], tgt: torch.Tensor, query_pos: torch.Tensor) -> List[Dict]:
        """Instance then relation decoder over queries ``tgt`` / ``query_pos`` ``(B, Q, d)`` of frames whose encoder
        output is ``enc`` -> per relation-decoder layer (aligned from the last) the spatial heads' outputs, plus the
        final ``instance`` / ``relation`` features ``(B, Q, d)`` in the last dict."""
        mem, pos, pad = enc["memory"], enc["pos"], enc["padding"]
        instance = []
        for layer in self.instance_decoder:
            tgt = layer(tgt, mem, pos, query_pos, pad)
            instance.append(self.instance_norm(tgt))
        rel_tgt, rel_pos, relation = torch.zeros_like(instance[-1]), instance[-1], []
        for layer in self.relation_decoder:
            rel_tgt = layer(rel_tgt, mem, pos, rel_pos, pad)
            relation.append(self.relation_norm(rel_tgt))
        n = min(len(instance), len(relation))
        outs = [self._heads(i, r, "") for i, r in zip(instance[-n:], relation[-n:])]
        outs[-1]["instance"], outs[-1]["relation"] = instance[-1], relation[-1]
        return outs

    def _heads(self, instance: torch.Tensor, relation: torch.Tensor, prefix: str) -> Dict[str, torch.Tensor]:
        """Heads (``prefix`` "" = spatial, "temporal_" = temporal) on instance / relation features ``(B, Q, d)``."""
        head = lambda name: getattr(self, prefix + name)  # noqa: E731
        return {"obj_logits": head("obj_class")(instance), "sub_boxes": head("sub_box")(instance).sigmoid(),
                "obj_boxes": head("obj_box")(instance).sigmoid(), "attention": head("attention_head")(relation),
                "spatial": head("spatial_head")(relation), "contacting": head("contacting_head")(relation)}

    def _frame_groups(self, video: dict, gt) -> List[Tuple[List[int], torch.Tensor, torch.Tensor]]:
        """Frames batched through the decoders: SGDet one group of all frames with the learned queries; PredCls
        frames grouped by their GT pair count, each with its pair queries (content, position) ``(B, P, d)``."""
        t = len(video["frames"])
        if self.mode == "sgdet":
            pos = self.query.weight[None].expand(t, -1, -1)
            return [(list(range(t)), torch.zeros_like(pos), pos)]
        pairs = training_pairs(gt)
        frame_of = gt.frame_idx[pairs[:, 1]]
        norm = self._normalized(gt.boxes, video)
        content = self.content_mlp(self.class_embed(gt.labels[pairs[:, 1]]))
        position = self.position_mlp(pair_geometry(norm[pairs[:, 0]], norm[pairs[:, 1]]))
        counts = torch.bincount(frame_of, minlength=t).tolist()
        groups = {}
        for f, c in enumerate(counts):
            groups.setdefault(c, []).append(f)
        out = []
        for c, frames in sorted(groups.items()):
            if c == 0:
                continue  # a frame without objects has no pair query (and nothing to predict)
            rows = torch.cat([torch.nonzero(frame_of == f).squeeze(1) for f in frames])
            out.append((frames, content[rows].view(len(frames), c, -1), position[rows].view(len(frames), c, -1)))
        return out

    def _spatial_pass(self, video: dict, gt) -> List[Tuple[List[int], List[Dict]]]:
        """Encoder + decoders on every frame of the video: per frame group (:meth:`_frame_groups`) its frames and
        its per-layer head outputs."""
        enc = self._encode(check_video_images(video, "OED"))
        out = []
        for frames, tgt, pos in self._frame_groups(video, gt):
            idx = torch.as_tensor(frames, device=self.device)
            sub = {k: v[idx] for k, v in enc.items()}
            out.append((frames, self._decode(sub, tgt, pos)))
        return out

    # ------------------------------------------------------------------------------------------ temporal stage
    def _init_temporal_heads(self) -> None:
        """Copy the spatial heads into the temporal ones once (OED initialises its temporal heads this way)."""
        if int(self.temporal_heads_initialized) == 0:
            with torch.no_grad():
                for name in _HEADS:
                    getattr(self, "temporal_" + name).load_state_dict(getattr(self, name).state_dict())
                self.temporal_heads_initialized.fill_(1)

    def _temporal_pass(self, video: dict, gt) -> List[Tuple[List[int], List[Dict]]]:
        """Spatial pass (frozen, no gradients) -> reference frames -> progressive refinement -> temporal heads;
        same layout as :meth:`_spatial_pass` with one (final) layer per group."""
        self._init_temporal_heads()
        with torch.no_grad():
            groups = self._spatial_pass(video, gt)
        t = len(video["frames"])
        feats: List[Optional[torch.Tensor]] = [None] * t  # per frame (Q_t, 2d) query features and (Q_t,) scores
        scores: List[Optional[torch.Tensor]] = [None] * t
        for frames, layers in groups:
            last = layers[-1]
            s = reference_query_scores(last["obj_logits"], last["attention"], last["spatial"], last["contacting"])
            f = torch.cat([last["instance"], last["relation"]], -1)
            for j, frame in enumerate(frames):
                feats[frame], scores[frame] = f[j], s[j]
        if self.training:
            rule, interval = ("causal_random" if self.causal else "random"), self.interval_train
        else:
            rule, interval = ("causal_strided" if self.causal else "strided"), self.interval_test
        valid = [i for i in range(t) if feats[i] is not None]
        refs = select_reference_frames(len(valid), self.num_ref_frames, interval, rule)  # over frames with queries
        slot = {f: i for i, f in enumerate(valid)}
        out = []
        for frames, _ in groups:
            # Each key frame with the concatenated queries of its reference frames; key frames whose references
            # hold the same number of queries (always in SGDet) are refined together.
            ref_rows = [refs[slot[f]].tolist() for f in frames]
            ref_feats = [torch.cat([feats[valid[r]] for r in rows]) for rows in ref_rows]
            ref_scores = [torch.cat([scores[valid[r]] for r in rows]) for rows in ref_rows]
            refined: List[Optional[torch.Tensor]] = [None] * len(frames)
            for n in sorted({len(x) for x in ref_feats}):
                sel = [j for j, x in enumerate(ref_feats) if len(x) == n]
                res = self.refinement(torch.stack([feats[frames[j]] for j in sel]),
                                      torch.stack([ref_feats[j] for j in sel]),
                                      torch.stack([ref_scores[j] for j in sel]))
                for k, j in enumerate(sel):
                    refined[j] = res[k]
            q = torch.stack(refined)
            d = q.shape[-1] // 2
            out.append((frames, [self._heads(q[..., :d], q[..., d:], "temporal_")]))
        return out

    # ------------------------------------------------------------------------------------------ per video
    def _normalized(self, boxes: torch.Tensor, video: dict) -> torch.Tensor:
        """xyxy resized-frame pixels -> normalised cxcywh (fractions of the frame)."""
        h, w = video["images"].shape[-2:]
        return box_xyxy_to_cxcywh((boxes / boxes.new_tensor([w, h, w, h])).clamp(0, 1))

    def _targets(self, video: dict, gt) -> List[Dict[str, torch.Tensor]]:
        """Per frame the GT pairs (person = row 0 with every object): ``labels (P,)``, ``sub_boxes`` / ``obj_boxes``
        normalised cxcywh, ``attention (P,)`` (-100 = none) and ``attention_hot (P, A)``, ``spatial (P, S)``,
        ``contacting (P, K)`` multi-hot; pairs in the order of :func:`training_pairs` (PredCls query order)."""
        pairs = training_pairs(gt)
        att, spa, con = video_relation_targets(video, gt, pairs, self.groups)
        norm = self._normalized(gt.boxes, video)
        frame_of = gt.frame_idx[pairs[:, 1]]
        hot = torch.zeros(len(att), self.groups[0], device=self.device)
        has = att >= 0
        hot[has, att[has]] = 1.0
        out = []
        for f in range(len(video["frames"])):
            r = torch.nonzero(frame_of == f).squeeze(1)
            out.append({"labels": gt.labels[pairs[r, 1]], "sub_boxes": norm[pairs[r, 0]],
                        "obj_boxes": norm[pairs[r, 1]], "attention": att[r], "attention_hot": hot[r],
                        "spatial": spa[r], "contacting": con[r]})
        return out

    def _video_losses(self, video: dict) -> Dict[str, torch.Tensor]:
        gt = gather_gt_boxes(video, self.device)
        targets = self._targets(video, gt)
        if not any(len(t["labels"]) for t in targets) and self.mode == "predcls":
            # no pair in the whole video: nothing to learn, but the loss must reach a trainable parameter
            return {"loss_attention": sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0}
        groups = self._temporal_pass(video, gt) if self.stage == "temporal" else self._spatial_pass(video, gt)
        num_layers = len(groups[0][1]) if groups else 1
        if not self.aux_loss or self.stage == "temporal":
            groups = [(frames, layers[-1:]) for frames, layers in groups]
            num_layers = 1
        losses: Dict[str, torch.Tensor] = {}
        for i in range(num_layers):
            suffix = "" if i == num_layers - 1 else f"_{i}"
            outs = [(frames, layers[i]) for frames, layers in groups]
            for name, value in self._layer_losses(outs, targets).items():
                losses[f"loss_{name}{suffix}"] = self.coef[name] * value
        return losses

    def _layer_losses(self, outs: List[Tuple[List[int], Dict]], targets: List[Dict]) -> Dict[str, torch.Tensor]:
        """One decoder layer's losses over the video's frames (= upstream's batch of frames)."""
        matched = {k: [] for k in ("attention", "spatial", "contacting", "sub_boxes", "obj_boxes")}
        tgt = {k: [] for k in ("attention", "spatial", "contacting", "sub_boxes", "obj_boxes")}
        obj_logits, obj_targets = [], []
        for frames, out in outs:
            frame_targets = [targets[f] for f in frames]
            if self.mode == "sgdet":
                indices = self.matcher({k: out[k] for k in ("obj_logits", "sub_boxes", "obj_boxes", "attention",
                                                            "spatial", "contacting")},
                                       [dict(t, attention=t["attention_hot"]) for t in frame_targets])
            else:  # PredCls: query i is GT pair i
                indices = [(torch.arange(len(t["labels"])), torch.arange(len(t["labels"]))) for t in frame_targets]
            for b, ((q, j), t) in enumerate(zip(indices, frame_targets)):
                q, j = q.to(self.device), j.to(self.device)
                for k in matched:
                    matched[k].append(out[k][b, q])
                    tgt[k].append(t[k][j])
                if self.mode == "sgdet":
                    cls = torch.full((out["obj_logits"].shape[1],), self.num_classes, dtype=torch.long,
                                     device=self.device)
                    cls[q] = t["labels"][j]
                    obj_logits.append(out["obj_logits"][b])
                    obj_targets.append(cls)
        m = {k: torch.cat(v) for k, v in matched.items()}
        y = {k: torch.cat(v) for k, v in tgt.items()}
        att_ok = y["attention"] >= 0
        losses = {
            "attention": F.cross_entropy(m["attention"][att_ok], y["attention"][att_ok]) if att_ok.any()
            else m["attention"].sum() * 0.0,
            "spatial": focal_multi_label_loss(m["spatial"], y["spatial"], self.focal_alpha),
            "contacting": focal_multi_label_loss(m["contacting"], y["contacting"], self.focal_alpha),
        }
        if self.mode == "sgdet":
            losses["obj_ce"] = F.cross_entropy(torch.cat(obj_logits).float(), torch.cat(obj_targets),
                                               weight=self.class_weights)
            n = max(len(y["sub_boxes"]), 1)
            for side in ("sub", "obj"):
                p, g = m[f"{side}_boxes"].float(), y[f"{side}_boxes"]
                losses[f"{side}_bbox"] = F.l1_loss(p, g, reduction="sum") / n
                if len(p):
                    giou = generalized_box_iou(box_cxcywh_to_xyxy(p), box_cxcywh_to_xyxy(g))
                    losses[f"{side}_giou"] = (1 - torch.diag(giou)).sum() / n
                else:  # no GT pair in the video: zero, still connected to the box heads
                    losses[f"{side}_giou"] = m[f"{side}_boxes"].sum() * 0.0
        return losses

    @torch.no_grad()
    def _video_inference(self, video: dict) -> dict:
        gt = gather_gt_boxes(video, self.device) if self.mode == "predcls" else None
        groups = self._temporal_pass(video, gt) if self.stage == "temporal" else self._spatial_pass(video, gt)
        t = len(video["frames"])
        scale = float(video.get("image_scale", 1.0))
        h, w = video["images"].shape[-2:]
        size = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device) / scale
        per_frame: List[Optional[Dict]] = [None] * t
        for frames, layers in groups:
            last = layers[-1]
            for j, f in enumerate(frames):
                per_frame[f] = {k: v[j] for k, v in last.items() if k not in ("instance", "relation")}
        boxes, labels, scores, frame_idx, pairs, att, spa, con = [], [], [], [], [], [], [], []
        offset = 0
        n_att = self.groups[0]
        pair_rows = training_pairs(gt) if gt is not None else None
        for f in range(t):
            out = per_frame[f]
            if self.mode == "predcls":
                rows = torch.nonzero(gt.frame_idx == f).squeeze(1)
                b, lab, sc = gt.original[rows], gt.labels[rows], torch.ones(len(rows), device=self.device)
                fp = pair_rows[gt.frame_idx[pair_rows[:, 1]] == f] - (rows[0] if len(rows) else 0)
            else:
                q = out["obj_logits"].shape[0]
                probs = out["obj_logits"].float().softmax(-1)[:, :-1]
                obj_sc, obj_lab = probs.max(-1)
                b = torch.cat([box_cxcywh_to_xyxy(out["sub_boxes"].float()),
                               box_cxcywh_to_xyxy(out["obj_boxes"].float())]) * size
                lab = torch.cat([torch.zeros(q, dtype=torch.long, device=self.device), obj_lab])
                sc = torch.cat([torch.ones(q, device=self.device), obj_sc])
                fp = torch.stack([torch.arange(q), torch.arange(q, 2 * q)], 1).to(self.device)
            boxes.append(b)
            labels.append(lab)
            scores.append(sc)
            frame_idx.append(torch.full((len(b),), f, dtype=torch.long, device=self.device))
            pairs.append(fp + offset)
            offset += len(b)
            if out is None or len(fp) == 0:
                att.append(b.new_zeros((0, n_att)))
                spa.append(b.new_zeros((0, self.groups[1])))
                con.append(b.new_zeros((0, self.groups[2])))
            else:
                att.append(out["attention"].float()[:, :n_att].softmax(-1))
                spa.append(out["spatial"].float().sigmoid())
                con.append(out["contacting"].float().sigmoid())
        cat = lambda xs, empty: torch.cat(xs) if xs else empty  # noqa: E731
        return {"frames": split_frames(t, cat(frame_idx, torch.zeros(0, dtype=torch.long)),
                                       cat(boxes, torch.zeros(0, 4)), cat(labels, torch.zeros(0, dtype=torch.long)),
                                       cat(scores, torch.zeros(0)), cat(pairs, torch.zeros(0, 2, dtype=torch.long)),
                                       attention=cat(att, torch.zeros(0, n_att)),
                                       spatial=cat(spa, torch.zeros(0, self.groups[1])),
                                       contacting=cat(con, torch.zeros(0, self.groups[2])))}


def _clone_module(module: nn.Module) -> nn.Module:
    """An independent copy of a head (its values are overwritten from the spatial head before training)."""
    return clones(module, 1)[0]
