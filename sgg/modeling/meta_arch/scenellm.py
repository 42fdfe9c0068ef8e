"""SceneLLM (Zhang, Li, Liu; arXiv 2412.11026): scene tokens from a VQ-VAE, spatial aggregation per frame, optimal-
transport temporal fusion, a local LLM with LoRA, and an STTran-style SGG decoder.

No official code exists; the paper's abstract fixes the parts, not their details (docs/scenellm.md says what was
chosen where it is vague). Per video (one dict from :class:`~sgg.data.video_mapper.ActionGenomeMapper`)::

    frames --feature source--> maps; boxes: GT (PredCls / SGCls) or detections (SGDet)
    object features (N, F) = feature source (RoIAlign + box head, or the AG Faster R-CNN's RoI features)
    VQ-VAE          : sg(object features) -> codes z_q (N, CODE_DIM), straight-through; reconstruction + codebook +
                      commitment losses (each once); codebook usage / perplexity logged as scenellm/vq_*
    SIA             : z_q + box MLP -> GCN over Ward clusters of the box centres of each frame -> one token per frame
    OT fusion       : T frame tokens -> M = ceil(T / OT_FRAMES_PER_TOKEN) tokens by Sinkhorn, plan P (T, M)
    LLM             : Linear(CODE_DIM -> hidden) -> local LLM (frozen, + LoRA) -> hidden states (M, hidden)
    back to frames  : frame context (T, hidden) = T x P @ hidden states
    pair features   : [ STTran's relation vector (RelationFeatures) |
                        Linear(frame context of the pair's frame) + Linear(z_q of the object) (LLM_FEATURE_DIM) ]
    SGG decoder     : STTran's spatial encoder + temporal decoder (SpatialTemporalTransformer) over the pair
                      features; attention / spatial / contacting heads and losses as STTran; object classifier
                      (SGCls / SGDet) as STTran

``MODEL.SCENELLM.USE_LLM False`` removes everything between the feature source and the decoder (the A/B: the decoder
on the visual relation vector alone). ``MODEL.SCENELLM.TRAINING_STAGE`` says what trains:

* ``vqvae``  — the VQ-VAE alone, on the (frozen) feature source's object features; only the VQ losses.
* ``stage1`` — everything but the LLM: feature source (unless frozen by its own key), VQ-VAE (unless
  ``FREEZE_VQVAE``), SIA, projections, decoder, heads; LLM and LoRA frozen (gradients pass through the LLM).
* ``stage2`` — stage 1 + the LoRA adapters (the LLM's own weights stay frozen).

``SOLVER.STAGE2`` (the generic two-stage hook) can switch stage 1 to stage 2 within one run: ``UNFREEZE
["llm.*lora_*"]`` at ``START_ITER`` (``tools/train.py -freeze_llm_epochs N`` sets this up).

Training returns ``loss_vq_{reconstruction,codebook,commitment}`` (when the VQ-VAE trains) + ``loss_attention``,
``loss_spatial``, ``loss_contacting`` (+ ``loss_object`` in SGCls / SGDet, + the detector's losses in SGDet when it is
trained); evaluation returns per video ``{"frames": [...]}`` in ``video_scene_graph``'s format.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sgg.config import configurable
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES
from sgg.structures.boxes import union_box
from sgg.utils.events import get_event_storage

from ..build import META_ARCH_REGISTRY, build_video_detector, build_video_features
from ..layers import (
    VQVAE,
    LoRALanguageModel,
    OTTemporalFusion,
    SpatialInformationAggregation,
    SpatialTemporalTransformer,
)
from ..layers.vector_quantizer import code_statistics
from ..video_sgg import (
    MODES,
    ObjectClassifier,
    RelationFeatures,
    VideoSGGModel,
    assign_person_labels,
    check_video_images,
    class_prior,
    gather_gt_boxes,
    inference_boxes,
    load_word_vectors,
    normalized_boxes,
    pairs_of_persons,
    predcls_persons,
    relation_losses,
    split_frames,
    training_pairs,
    video_relation_targets,
)

__all__ = ["SceneLLM", "STAGES"]

logger = logging.getLogger(__name__)

STAGES = ("vqvae", "stage1", "stage2")


# --------------------------------------------------------------------------------------------------- the model
@META_ARCH_REGISTRY.register()
class SceneLLM(VideoSGGModel):
    """SceneLLM for video SGG in PredCls, SGCls or SGDet (``TEST.RELATION.MODE``); see the module docstring.

    Input: a list of video dicts (``ActionGenomeMapper`` output). ``llm`` is a :class:`LoRALanguageModel` (``None``
    with ``use_llm=False``).
    """

    @configurable
    def __init__(self, *, features: nn.Module, mode: str, llm: Optional[nn.Module], use_llm: bool = True,
                 training_stage: str = "stage2", num_classes: int = 36, predicate_groups: Sequence[int] = (3, 6, 17),
                 pooler_resolution: int = 7, union_dim: int = 256, visual_dim: int = 512, embed_dim: int = 200,
                 word_vectors: str = "", class_names: Sequence[str] = (), enc_layers: int = 1, dec_layers: int = 3,
                 num_heads: int = 8, dim_feedforward: int = 2048, dropout: float = 0.1, temporal_window: int = 2,
                 mask_size: int = 27, multi_label_loss: str = "bce", obj_classifier_hidden: int = 1024,
                 pos_dim: int = 128, object_loss_weight: float = 1.0, detector: Optional[nn.Module] = None,
                 code_dim: int = 256, num_codes: int = 512, vq_hidden_dim: int = 0, commitment_cost: float = 0.25,
                 vq_loss_weight: float = 1.0, freeze_vqvae: bool = False, restart_dead_codes: bool = False,
                 vq_normalize: bool = False,
                 sia_layers: int = 2, sia_heads: int = 4,
                 cluster_ratio: float = 0.5, ot_frames_per_token: int = 2, ot_eps: float = 0.05, ot_iters: int = 50,
                 ot_time_weight: float = 1.0, llm_feature_dim: int = 256):
        """
        Args:
            features: the feature source (``MODEL.VIDEO_FEATURES.NAME``).
            mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"``.
            llm: the language model (``MODEL.SCENELLM.LLM_PATH``), ``None`` when ``use_llm`` is False.
            use_llm: the VQ-VAE / SIA / OT / LLM path; False = the decoder on the relation vector alone (A/B).
            training_stage: one of :data:`STAGES` (module docstring).
            num_classes ... object_loss_weight: STTran's pipeline (``MODEL.STTRAN.*``, see STTran).
            detector: SGDet only, the ``MODEL.VIDEO_DETECTOR`` detector on the feature source's backbone.
            code_dim / num_codes / vq_hidden_dim / commitment_cost: the VQ-VAE (``CODE_DIM``, ``CODEBOOK_SIZE``,
                ``VQ_HIDDEN_DIM`` (0 = code_dim), ``COMMITMENT_COST``).
            vq_loss_weight: weight of the three VQ losses in stage 1 / 2 (the vqvae stage uses 1).
            freeze_vqvae: stage 1 / 2 keep the VQ-VAE of the vqvae stage fixed (no VQ losses).
            restart_dead_codes: move rarely used codes onto current encoder outputs in training (against codebook
                collapse; ``VQ_RESTART_DEAD_CODES``).
            vq_normalize: l2-normalised encoder outputs and codes (``VQ_NORMALIZE``).
            sia_layers / sia_heads / cluster_ratio: SIA's GCN depth, cluster attention heads, clusters per box.
            ot_frames_per_token / ot_eps / ot_iters / ot_time_weight: the OT fusion.
            llm_feature_dim: width of the LLM part of each pair feature.
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"SceneLLM: TEST.RELATION.MODE must be one of {MODES}, got {mode!r}.")
        if training_stage not in STAGES:
            raise ValueError(f"MODEL.SCENELLM.TRAINING_STAGE must be one of {STAGES}, got {training_stage!r}.")
        if mode == "sgdet" and detector is None:
            raise ValueError("SceneLLM in sgdet mode needs a detector (MODEL.VIDEO_DETECTOR); none was given.")
        if use_llm and llm is None:
            raise ValueError("SceneLLM: MODEL.SCENELLM.USE_LLM is True but no language model was given.")
        if training_stage == "vqvae" and not use_llm:
            raise ValueError("MODEL.SCENELLM.TRAINING_STAGE vqvae trains the VQ-VAE of the LLM path, but "
                             "MODEL.SCENELLM.USE_LLM is False.")
        if len(predicate_groups) != 3:
            raise ValueError(f"MODEL.STTRAN.PREDICATE_GROUPS needs 3 sizes, got {tuple(predicate_groups)}.")
        self.mode, self.training_stage, self.use_llm = mode, training_stage, bool(use_llm)
        self.num_classes = num_classes
        self.groups = tuple(int(g) for g in predicate_groups)
        self.multi_label_loss = multi_label_loss
        self.object_loss_weight = object_loss_weight
        self.vq_loss_weight = float(vq_loss_weight)
        self.freeze_vqvae = bool(freeze_vqvae)
        self.features = features
        self.detector = detector

        embedding = None
        if word_vectors:
            if len(class_names) != num_classes:
                raise ValueError(f"MODEL.STTRAN.WORD_VECTORS needs {num_classes} class names, got {len(class_names)}.")
            embedding, missing = load_word_vectors(word_vectors, class_names, embed_dim)
            logger.info("SceneLLM: class embeddings from '%s' (%d / %d classes found).", word_vectors,
                        num_classes - len(missing), num_classes)
        self.relation = RelationFeatures(
            object_dim=features.object_dim, union_channels=features.union_channels, union_dim=union_dim,
            visual_dim=visual_dim, embed_dim=embed_dim, num_classes=num_classes, pooler_resolution=pooler_resolution,
            mask_size=mask_size, embedding=embedding)
        self.llm = llm
        pair_dim = self.relation.dim
        if self.use_llm:
            self.vqvae = VQVAE(in_dim=features.object_dim, dim=code_dim, num_codes=num_codes, hidden_dim=vq_hidden_dim,
                               commitment_cost=commitment_cost, restart_dead_codes=restart_dead_codes,
                               normalize=vq_normalize)
            self.sia = SpatialInformationAggregation(dim=code_dim, layers=sia_layers, num_heads=sia_heads,
                                                     cluster_ratio=cluster_ratio)
            self.fusion = OTTemporalFusion(frames_per_token=ot_frames_per_token, eps=ot_eps, iters=ot_iters,
                                           time_weight=ot_time_weight)
            self.to_llm = nn.Linear(code_dim, llm.hidden_size)
            self.from_llm = nn.Linear(llm.hidden_size, llm_feature_dim)
            self.code_proj = nn.Linear(code_dim, llm_feature_dim)
            # codes chosen over all training forwards: the running codebook usage (saved with every checkpoint)
            self.register_buffer("code_counts", torch.zeros(num_codes, dtype=torch.float64))
            pair_dim += llm_feature_dim
        if pair_dim % num_heads:
            raise ValueError(f"SceneLLM: MODEL.STTRAN.NUM_HEADS ({num_heads}) must divide the pair feature width "
                             f"{pair_dim} (relation vector {self.relation.dim} + LLM_FEATURE_DIM).")
        self.pair_dim = pair_dim
        self.transformer = SpatialTemporalTransformer(
            dim=pair_dim, enc_layers=enc_layers, dec_layers=dec_layers, num_heads=num_heads,
            dim_feedforward=dim_feedforward, dropout=dropout, window=temporal_window)
        self.attention_head = nn.Linear(pair_dim, self.groups[0])
        self.spatial_head = nn.Linear(pair_dim, self.groups[1])
        self.contacting_head = nn.Linear(pair_dim, self.groups[2])
        self.object_classifier = None
        if mode != "predcls":
            self.object_classifier = ObjectClassifier(
                feature_dim=features.object_dim, num_classes=num_classes, embed_dim=embed_dim, pos_dim=pos_dim,
                hidden_dim=obj_classifier_hidden, embedding=embedding, dropout=dropout)
        self._apply_stage()

    @classmethod
    def from_config(cls, cfg, features: Optional[nn.Module] = None, detector: Optional[nn.Module] = None) -> dict:
        """Keyword arguments from ``MODEL.SCENELLM``, ``MODEL.STTRAN``, ``MODEL.VIDEO_FEATURES``, ``TEST.RELATION``."""
        s, c = cfg.MODEL.STTRAN, cfg.MODEL.SCENELLM
        mode = cfg.TEST.RELATION.MODE
        if features is None:
            features = build_video_features(cfg)
        if mode == "sgdet" and detector is None:
            detector = build_video_detector(cfg, features.backbone)
        llm = None
        if c.USE_LLM:
            llm = LoRALanguageModel(path=c.LLM_PATH, dtype=c.LLM_DTYPE, device=cfg.MODEL.DEVICE, lora_r=c.LORA_R,
                                    lora_alpha=c.LORA_ALPHA, lora_dropout=c.LORA_DROPOUT,
                                    target_modules=tuple(c.LORA_TARGET_MODULES))
        return {
            "features": features, "mode": mode, "llm": llm, "use_llm": c.USE_LLM, "training_stage": c.TRAINING_STAGE,
            "num_classes": s.NUM_CLASSES, "predicate_groups": tuple(s.PREDICATE_GROUPS),
            "pooler_resolution": s.POOLER_RESOLUTION, "union_dim": s.UNION_DIM, "visual_dim": s.VISUAL_DIM,
            "embed_dim": s.EMBED_DIM, "word_vectors": s.WORD_VECTORS,
            "class_names": AG_OBJECT_CLASSES if s.NUM_CLASSES == len(AG_OBJECT_CLASSES) else (),
            "enc_layers": s.ENC_LAYERS, "dec_layers": s.DEC_LAYERS, "num_heads": s.NUM_HEADS,
            "dim_feedforward": s.DIM_FEEDFORWARD, "dropout": s.DROPOUT, "temporal_window": s.TEMPORAL_WINDOW,
            "mask_size": s.MASK_SIZE, "multi_label_loss": s.MULTI_LABEL_LOSS,
            "obj_classifier_hidden": s.OBJ_CLASSIFIER_HIDDEN, "pos_dim": s.POS_DIM,
            "object_loss_weight": s.OBJECT_LOSS_WEIGHT, "detector": detector,
            "code_dim": c.CODE_DIM, "num_codes": c.CODEBOOK_SIZE, "vq_hidden_dim": c.VQ_HIDDEN_DIM,
            "commitment_cost": c.COMMITMENT_COST, "vq_loss_weight": c.VQ_LOSS_WEIGHT, "freeze_vqvae": c.FREEZE_VQVAE,
            "restart_dead_codes": c.VQ_RESTART_DEAD_CODES, "vq_normalize": c.VQ_NORMALIZE,
            "sia_layers": c.SIA_LAYERS, "sia_heads": c.SIA_HEADS, "cluster_ratio": c.CLUSTER_RATIO,
            "ot_frames_per_token": c.OT_FRAMES_PER_TOKEN, "ot_eps": c.OT_EPS, "ot_iters": c.OT_ITERS,
            "ot_time_weight": c.OT_TIME_WEIGHT, "llm_feature_dim": c.LLM_FEATURE_DIM,
        }

    # ------------------------------------------------------------------------------------------ stages
    def _apply_stage(self) -> None:
        """Freeze what the training stage does not train (only ever sets ``requires_grad`` False, so a module frozen
        by its own key — a frozen backbone, the LLM's base weights — stays frozen)."""
        if self.training_stage == "vqvae":
            for name, p in self.named_parameters():
                if not name.startswith("vqvae."):
                    p.requires_grad_(False)
            return
        if self.use_llm and self.training_stage == "stage1":
            for p in self.llm.lora_parameters():
                p.requires_grad_(False)
        if self.use_llm and self.freeze_vqvae:
            self.vqvae.requires_grad_(False)

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``; in the vqvae stage everything but the VQ-VAE stays in eval mode (fixed features:
        no dropout, no BatchNorm statistics updates in the frozen parts)."""
        super().train(mode)
        if self.training_stage == "vqvae":
            for name, child in self.named_children():
                if name != "vqvae":
                    child.eval()
        return self

    @property
    def vq_trains(self) -> bool:
        """True when the VQ-VAE learns in this stage (its losses are then returned)."""
        return self.use_llm and (self.training_stage == "vqvae" or not self.freeze_vqvae)

    # ------------------------------------------------------------------------------------------ per video
    def _log_codes(self, codes: torch.Tensor) -> None:
        """Running codebook statistics: this video's perplexity / usage and the usage over all training forwards,
        as ``scenellm/vq_*`` scalars of the trainer's event storage (metrics.json, TensorBoard)."""
        self.code_counts += torch.bincount(codes, minlength=len(self.code_counts)).to(self.code_counts)
        perplexity, usage = code_statistics(codes.cpu(), len(self.code_counts))
        try:
            storage = get_event_storage()
        except RuntimeError:  # called outside a trainer (tests, scripts): nothing to log to
            return
        storage.put_scalars(**{"scenellm/vq_perplexity": float(perplexity), "scenellm/vq_usage": float(usage),
                               "scenellm/vq_usage_total": float((self.code_counts > 0).float().mean())})

    def _scene_context(self, obj_feats, boxes_norm, frame_idx, num_frames):
        """VQ-VAE -> SIA -> OT -> LLM -> per-frame context. Returns ``(vq output, frame context (T, hidden))``."""
        vq = self.vqvae(obj_feats.detach())
        frame_tokens = self.sia(vq.quantized, boxes_norm, frame_idx, num_frames)
        fused, plan = self.fusion(frame_tokens)
        hidden = self.llm(self.to_llm(fused))
        return vq, num_frames * plan @ hidden

    def _relation_heads(self, fmap, boxes, frame_idx, obj_feats, labels, pairs, num_frames, codes, context):
        """Pair features ([relation vector | LLM part]) -> STTran decoder -> attention / spatial / contacting logits."""
        union = self.features.union_features(fmap, union_box(boxes[pairs[:, 0]], boxes[pairs[:, 1]]),
                                             frame_idx[pairs[:, 0]])
        x = self.relation(obj_feats, union, boxes, labels, pairs)
        if self.use_llm:
            llm_part = self.from_llm(context[frame_idx[pairs[:, 1]]]) + self.code_proj(codes[pairs[:, 1]])
            x = torch.cat([x, llm_part], 1)
        h = self.transformer(x, frame_idx[pairs[:, 1]], num_frames)
        return self.attention_head(h), self.spatial_head(h), self.contacting_head(h)

    def _video_losses(self, video: dict) -> Dict[str, torch.Tensor]:
        images = check_video_images(video, "SceneLLM")
        num_frames = len(video["frames"])
        gt = gather_gt_boxes(video, self.device)
        losses: Dict[str, torch.Tensor] = {}
        if self.training_stage == "vqvae":  # the tokenizer alone, on fixed features
            with torch.no_grad():
                obj_feats = self.features.object_features(self.features.frame_features(images), gt.boxes,
                                                          gt.frame_idx)
            vq = self.vqvae(obj_feats)
            self._log_codes(vq.codes)
            return dict(vq.losses)
        fmap = self.features.frame_features(images)
        if self.detector is not None and self.detector.trainable:
            losses.update(self.detector.losses(fmap, images.shape[-2:], gt.boxes, gt.labels, gt.frame_idx))
        obj_feats = self.features.object_features(fmap, gt.boxes, gt.frame_idx)
        boxes_norm = normalized_boxes(gt.boxes, video)
        if self.object_classifier is not None:
            prior = class_prior(self.features, obj_feats, self.num_classes)
            logits = self.object_classifier(obj_feats, prior, boxes_norm)
            losses["loss_object"] = self.object_loss_weight * F.cross_entropy(logits, gt.labels)
        codes = context = None
        if self.use_llm:
            vq, context = self._scene_context(obj_feats, boxes_norm, gt.frame_idx, num_frames)
            codes = vq.quantized
            self._log_codes(vq.codes)
            if self.vq_trains:
                losses.update({k: self.vq_loss_weight * v for k, v in vq.losses.items()})
        pairs = training_pairs(gt)
        targets = video_relation_targets(video, gt, pairs, self.groups)
        heads = self._relation_heads(fmap, gt.boxes, gt.frame_idx, obj_feats, gt.labels, pairs, num_frames, codes,
                                     context)
        losses.update(relation_losses(heads, targets, self.multi_label_loss))
        return losses

    @torch.no_grad()
    def _video_inference(self, video: dict) -> dict:
        images = check_video_images(video, "SceneLLM")
        fmap = self.features.frame_features(images)
        num_frames = len(video["frames"])
        boxes, original, labels, frame_idx, det_dist, det_feats = inference_boxes(
            video, images, fmap, self.mode, self.detector, self.device)
        obj_feats = det_feats if det_feats is not None else self.features.object_features(fmap, boxes, frame_idx)
        boxes_norm = normalized_boxes(boxes, video)
        if self.mode == "predcls":
            scores = torch.ones(len(boxes), device=self.device)
            person, is_person = predcls_persons(frame_idx, num_frames)
        else:
            prior = det_dist if self.mode == "sgdet" else class_prior(self.features, obj_feats, self.num_classes)
            logits = self.object_classifier(obj_feats, prior, boxes_norm) \
                if len(boxes) else boxes.new_zeros((0, self.num_classes))
            labels, scores, person, is_person = assign_person_labels(logits.softmax(1), frame_idx, num_frames)
        pairs = pairs_of_persons(person, is_person, frame_idx)
        if len(pairs):
            codes = context = None
            if self.use_llm:
                vq, context = self._scene_context(obj_feats, boxes_norm, frame_idx, num_frames)
                codes = vq.quantized
            att, spa, con = self._relation_heads(fmap, boxes, frame_idx, obj_feats, labels, pairs, num_frames, codes,
                                                 context)
            att, spa, con = att.softmax(1), spa.sigmoid(), con.sigmoid()
        else:
            att, spa, con = (boxes.new_zeros((0, g)) for g in self.groups)
        return {"frames": split_frames(num_frames, frame_idx, original, labels, scores, pairs,
                                       attention=att, spatial=spa, contacting=con)}
