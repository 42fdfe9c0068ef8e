"""STKET (Pu et al., TIP 2024): spatial-temporal knowledge-embedded transformer for video scene graph generation.

Per video (one dict from :class:`~sgg.data.video_mapper.ActionGenomeMapper`), on STTran's pipeline::

    frames --feature source--> maps; boxes (GT, or detections in SGDet); object features; SGCls/SGDet object classifier
    pairs (P, 2) = (person, object) per frame; relation vector x = RelationFeatures(...)   (STTran: 1936-d)
    repeated N_LAYER times (the same modules):
      spatial encoder  : ENC_LAYERS knowledge-embedded layers over the pairs of a frame,
                         prior p_s = state_fc_s(initialPrior[object class])                    -> spatial heads
      contact set C    : from the spatial branch's contacting probabilities: {not_contacting} if it is their argmax,
                         else {c : p_c >= CONTACT_THRESHOLD} - {not_contacting}  (predicted, never the GT)
      temporal decoder : DEC_LAYERS knowledge-embedded layers over windows of TEMPORAL_WINDOW frames; tokens of the
                         window's last frame (and of frame 0) get state_fc_t(initialPrior[o]), the others the
                         transition prior state_fc_t(mean_{c in C} specificPrior[o][c])       -> temporal heads
    ensemble decoder : ENSEMBLE_LAYERS decoder layers (no prior) over up to WINDOW_SIZE frames of the same object
                       class, chained back with gaps <= MAX_GAP frames, each slot (spatial + temporal) / 2 with a
                       learned slot embedding; the current slot is the output                  -> ensemble heads
    prior heads      : the spatial heads on p_s, the temporal heads on the transition prior of the pair's previous
                       contact set (same class, <= MAX_GAP frames back, else its own)

Priors are trainable parameters initialised from a prior file (:mod:`sgg.data.stket_priors`, upstream's
``TrainPrior.json`` layout); the encoder and the decoder have their own copies and their own ``state_fc``. The object
class history is keyed by class (one representative per class and frame: the last pair of the class in training and
PredCls, the highest-scoring one in SGCls / SGDet evaluation), as upstream.

Training returns ``loss_{spatial,temporal,ensemble}_{attention,spatial,contacting}`` (+ ``loss_spatial_prior_*`` /
``loss_temporal_prior_*`` when enabled, + ``loss_object`` in SGCls / SGDet, + the detector's losses). Evaluation returns
STTran's per-frame format with the ``OUTPUT_BRANCH`` probabilities as ``attention`` / ``spatial`` / ``contacting`` and
every branch's as ``<branch>/attention`` etc. (the evaluator's ``TEST.VIDEO_RELATION.BRANCHES``).

Differences from upstream (docs/stket.md): the contact set is always predicted (upstream's test script feeds the GT
contacting labels with threshold 1.0); upstream's raw head set (computed on the relation vector, in no loss and in no
evaluation) is not built; a pair's own-frame transition prior uses its own contact set (upstream: the representative
of its class so far, which differs only for duplicate classes in SGCls / SGDet evaluation); all loops over pairs are
vectorised.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sgg.config import configurable
from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES, AG_PREDICATES
from sgg.data.stket_priors import compute_stket_priors, load_stket_priors, prior_tensors, save_stket_priors
from sgg.structures.boxes import union_box

from ..build import META_ARCH_REGISTRY, build_video_detector, build_video_features
from ..layers import segment_index, unblock_empty
from ..layers.knowledge_attention import KnowledgeDecoderLayer, KnowledgeEncoderLayer, prior_embedding
from ..video_sgg import (
    MODES,
    ObjectClassifier,
    RelationFeatures,
    VideoSGGModel,
    assign_person_labels,
    check_video_images,
    class_prior,
    detected_training_boxes,
    gather_gt_boxes,
    inference_boxes,
    load_word_vectors,
    normalized_boxes,
    pairs_of_persons,
    predcls_persons,
    relation_losses,
    sgdet_training_options,
    split_frames,
    training_pairs,
    video_relation_targets,
)

__all__ = ["STKET", "BRANCHES", "stket_priors_from_config"]

logger = logging.getLogger(__name__)

BRANCHES = ("spatial", "temporal", "ensemble")


def stket_priors_from_config(cfg) -> Tuple[torch.Tensor, torch.Tensor, str]:
    """``initial (K, 26)``, ``specific (K, 17, 26)`` and their source, from ``MODEL.STKET.PRIOR_FILE`` or, when it is
    "", counted on the training split ``DATASETS.TRAIN[0]`` and cached as ``OUTPUT_DIR/stket_priors_<dataset>.json``
    (reused when present)."""
    s = cfg.MODEL.STKET
    name = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else ""
    meta = MetadataCatalog.get(name) if name else None
    class_names = list(meta.get("thing_classes", AG_OBJECT_CLASSES)) if meta is not None else list(AG_OBJECT_CLASSES)
    path = s.PRIOR_FILE
    if not path:
        if not name:
            raise ValueError("STKET needs priors: set MODEL.STKET.PRIOR_FILE or DATASETS.TRAIN (the priors are "
                             "counted on the training split).")
        path = os.path.join(cfg.OUTPUT_DIR or ".", f"stket_priors_{name}.json")
        if not os.path.isfile(path):
            DatasetCatalog.check_configured(cfg, [name])  # count on the dicts the trainer will see
            predicates = list(meta.get("predicate_classes", AG_PREDICATES))
            priors = compute_stket_priors(DatasetCatalog.get(name), class_names, predicates,
                                          tuple(cfg.MODEL.STTRAN.PREDICATE_GROUPS))
            save_stket_priors(priors, path)
            logger.info("STKET: priors of %s (%d classes) written to %s", name, len(priors), path)
    initial, specific = prior_tensors(load_stket_priors(path), class_names, tuple(cfg.MODEL.STTRAN.PREDICATE_GROUPS),
                                      source=path)
    if len(class_names) != cfg.MODEL.STTRAN.NUM_CLASSES:
        raise ValueError(f"STKET: the training set has {len(class_names)} classes but MODEL.STTRAN.NUM_CLASSES is "
                         f"{cfg.MODEL.STTRAN.NUM_CLASSES}.")
    return torch.from_numpy(initial), torch.from_numpy(specific), path


class _Heads(nn.Module):
    """One head set: attention / spatial / contacting logits of ``(P, D)`` features."""

    def __init__(self, dim: int, groups: Sequence[int]):
        super().__init__()
        self.attention = nn.Linear(dim, groups[0])
        self.spatial = nn.Linear(dim, groups[1])
        self.contacting = nn.Linear(dim, groups[2])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.attention(x), self.spatial(x), self.contacting(x)


# --------------------------------------------------------------------------------------------------- the model
@META_ARCH_REGISTRY.register()
class STKET(VideoSGGModel):
    """Spatial-temporal knowledge-embedded transformer in PredCls, SGCls or SGDet (``TEST.RELATION.MODE``).

    Input: a list of video dicts (``ActionGenomeMapper`` output). See the module docstring for the architecture,
    outputs and the differences from the reference code.
    """

    @configurable
    def __init__(self, *, features: nn.Module, mode: str, initial_prior: Optional[torch.Tensor] = None,
                 specific_prior: Optional[torch.Tensor] = None, num_classes: int = 36,
                 predicate_groups: Sequence[int] = (3, 6, 17), pooler_resolution: int = 7, union_dim: int = 256,
                 visual_dim: int = 512, embed_dim: int = 200, word_vectors: str = "",
                 class_names: Sequence[str] = (), enc_layers: int = 2, dec_layers: int = 2, ensemble_layers: int = 2,
                 n_layer: int = 1, num_heads: int = 8, dim_feedforward: int = 2048, dropout: float = 0.1,
                 temporal_window: int = 2, window_size: int = 4, max_gap: int = 2, contact_threshold: float = 0.8,
                 not_contacting: int = 8, use_spatial_prior: bool = True, use_temporal_prior: bool = True,
                 spatial_prior_loss: bool = True, temporal_prior_loss: bool = True, output_branch: str = "ensemble",
                 mask_size: int = 27, multi_label_loss: str = "bce", obj_classifier_hidden: int = 1024,
                 pos_dim: int = 128, object_loss_weight: float = 1.0, detector: Optional[nn.Module] = None,
                 sgdet_train_boxes: str = "gt", sgdet_supply: bool = True, sgdet_assign_iou: float = 0.5):
        """
        Args:
            features: the feature source (``MODEL.VIDEO_FEATURES.NAME``).
            mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"``.
            sgdet_train_boxes / sgdet_supply / sgdet_assign_iou: SGDet training boxes, as STTran's
                (``MODEL.STTRAN.SGDET_*``: GT boxes, or the detections assigned to them + supplied GT boxes).
            initial_prior: ``(num_classes, 26)`` marginal priors (needed when a prior is used).
            specific_prior: ``(num_classes, 17, 26)`` transition priors (needed with the temporal prior).
            enc_layers / dec_layers / ensemble_layers: depths of the spatial encoder, temporal decoder and ensemble
                decoder (upstream: 2 / 2 / 2); n_layer: repeats of spatial -> temporal (upstream: 1).
            temporal_window: frames per temporal-decoder window (upstream: 2).
            window_size: frames per ensemble window (upstream: 4); max_gap: largest frame gap inside it (2).
            contact_threshold: probability for a contacting predicate to join the contact set (upstream: 0.8).
            not_contacting: index of ``not_contacting`` in the contacting group (AG: 8).
            use_spatial_prior / use_temporal_prior: inject the priors; *_prior_loss: train the prior heads.
            output_branch: the branch whose probabilities are the plain ``attention`` / ``spatial`` / ``contacting``.
            Other arguments: as :class:`~sgg.modeling.meta_arch.sttran.STTran`.
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"STKET: TEST.RELATION.MODE must be one of {MODES}, got {mode!r}.")
        if mode == "sgdet" and detector is None:
            raise ValueError("STKET in sgdet mode needs a detector (MODEL.VIDEO_DETECTOR); none was given.")
        if len(predicate_groups) != 3:
            raise ValueError(f"MODEL.STTRAN.PREDICATE_GROUPS needs 3 sizes, got {tuple(predicate_groups)}.")
        if min(enc_layers, dec_layers, ensemble_layers, n_layer) < 1:
            raise ValueError("STKET needs MODEL.STTRAN.ENC_LAYERS, DEC_LAYERS and MODEL.STKET.ENSEMBLE_LAYERS, "
                             f"N_LAYER >= 1 (got {enc_layers}, {dec_layers}, {ensemble_layers}, {n_layer}).")
        if window_size < 1 or temporal_window < 1 or max_gap < 1:
            raise ValueError("MODEL.STKET.WINDOW_SIZE, MAX_GAP and MODEL.STTRAN.TEMPORAL_WINDOW must be >= 1.")
        if not 0.0 < contact_threshold <= 1.0:
            raise ValueError(f"MODEL.STKET.CONTACT_THRESHOLD must be in (0, 1], got {contact_threshold}.")
        if output_branch not in BRANCHES:
            raise ValueError(f"MODEL.STKET.OUTPUT_BRANCH must be one of {BRANCHES}, got {output_branch!r}.")
        self.mode = mode
        self.num_classes = num_classes
        self.groups = tuple(int(g) for g in predicate_groups)
        self.num_predicates = sum(self.groups)
        self.multi_label_loss = multi_label_loss
        self.object_loss_weight = object_loss_weight
        # SGDet training boxes (MODEL.STTRAN.SGDET_*, as STTran): GT boxes, or the detections assigned to them
        self.sgdet_train_boxes, self.sgdet_supply = sgdet_train_boxes, bool(sgdet_supply)
        self.sgdet_assign_iou = float(sgdet_assign_iou)
        self.n_layer, self.temporal_window, self.window_size, self.max_gap = n_layer, temporal_window, window_size, \
            max_gap
        self.contact_threshold, self.not_contacting = float(contact_threshold), int(not_contacting)
        self.use_spatial_prior, self.use_temporal_prior = bool(use_spatial_prior), bool(use_temporal_prior)
        self.spatial_prior_loss = bool(spatial_prior_loss and use_spatial_prior)
        self.temporal_prior_loss = bool(temporal_prior_loss and use_temporal_prior)
        self.output_branch = output_branch
        self.features = features
        self.detector = detector

        embedding = None
        if word_vectors:
            if len(class_names) != num_classes:
                raise ValueError(f"MODEL.STTRAN.WORD_VECTORS needs {num_classes} class names, got {len(class_names)}.")
            embedding, missing = load_word_vectors(word_vectors, class_names, embed_dim)
            logger.info("STKET: class embeddings from '%s' (%d missing).", word_vectors, len(missing))
        self.relation = RelationFeatures(
            object_dim=features.object_dim, union_channels=features.union_channels, union_dim=union_dim,
            visual_dim=visual_dim, embed_dim=embed_dim, num_classes=num_classes, pooler_resolution=pooler_resolution,
            mask_size=mask_size, embedding=embedding)
        d = self.rel_dim = self.relation.dim
        if d % num_heads:
            raise ValueError(f"Relation dim {d} is not divisible by NUM_HEADS={num_heads}.")

        # Priors: trainable, initialised from the prior file; the encoder and the decoder own separate copies.
        shape = (num_classes, self.num_predicates)
        if self.use_spatial_prior or self.use_temporal_prior:
            if initial_prior is None or tuple(initial_prior.shape) != shape:
                raise ValueError(f"STKET: the priors need an initial_prior of shape {shape}, got "
                                 f"{None if initial_prior is None else tuple(initial_prior.shape)}.")
        if self.use_spatial_prior:
            self.spatial_initial_prior = nn.Parameter(initial_prior.detach().clone().float())
            self.spatial_state_fc = prior_embedding(self.num_predicates, d)
        if self.use_temporal_prior:
            if specific_prior is None or tuple(specific_prior.shape) != (num_classes, self.groups[2],
                                                                         self.num_predicates):
                raise ValueError("STKET: the temporal prior needs a specific_prior of shape "
                                 f"{(num_classes, self.groups[2], self.num_predicates)}.")
            self.temporal_initial_prior = nn.Parameter(initial_prior.detach().clone().float())
            self.temporal_specific_prior = nn.Parameter(specific_prior.detach().clone().float())
            self.temporal_state_fc = prior_embedding(self.num_predicates, d)
        self.encoder = nn.ModuleList([KnowledgeEncoderLayer(d, num_heads, dim_feedforward, dropout)
                                      for _ in range(enc_layers)])
        self.decoder = nn.ModuleList([KnowledgeDecoderLayer(d, num_heads, dim_feedforward, dropout)
                                      for _ in range(dec_layers)])
        self.ensemble = nn.ModuleList([KnowledgeDecoderLayer(d, num_heads, dim_feedforward, dropout)
                                       for _ in range(ensemble_layers)])
        self.frame_embedding = nn.Embedding(temporal_window, d)
        self.slot_embedding = nn.Embedding(window_size, d)
        nn.init.uniform_(self.frame_embedding.weight)  # as upstream
        nn.init.uniform_(self.slot_embedding.weight)
        self.heads = nn.ModuleDict({b: _Heads(d, self.groups) for b in BRANCHES})
        self.object_classifier = None
        if mode != "predcls":
            self.object_classifier = ObjectClassifier(
                feature_dim=features.object_dim, num_classes=num_classes, embed_dim=embed_dim, pos_dim=pos_dim,
                hidden_dim=obj_classifier_hidden, embedding=embedding, dropout=dropout)

    @classmethod
    def from_config(cls, cfg, features: Optional[nn.Module] = None, detector: Optional[nn.Module] = None) -> dict:
        """Keyword arguments from ``MODEL.STKET``, ``MODEL.STTRAN`` (shared pipeline), ``TEST.RELATION.MODE``; the
        priors from :func:`stket_priors_from_config` (only when a prior is used)."""
        s, k = cfg.MODEL.STTRAN, cfg.MODEL.STKET
        mode = cfg.TEST.RELATION.MODE
        if features is None:
            features = build_video_features(cfg)
        if mode == "sgdet" and detector is None:
            detector = build_video_detector(cfg, features.backbone)
        initial = specific = None
        if k.USE_SPATIAL_PRIOR or k.USE_TEMPORAL_PRIOR:
            initial, specific, source = stket_priors_from_config(cfg)
            logger.info("STKET: priors from %s", source)
        return {
            "features": features, "mode": mode, "initial_prior": initial, "specific_prior": specific,
            "num_classes": s.NUM_CLASSES, "predicate_groups": tuple(s.PREDICATE_GROUPS),
            "pooler_resolution": s.POOLER_RESOLUTION, "union_dim": s.UNION_DIM, "visual_dim": s.VISUAL_DIM,
            "embed_dim": s.EMBED_DIM, "word_vectors": s.WORD_VECTORS,
            "class_names": AG_OBJECT_CLASSES if s.NUM_CLASSES == len(AG_OBJECT_CLASSES) else (),
            "enc_layers": s.ENC_LAYERS, "dec_layers": s.DEC_LAYERS, "ensemble_layers": k.ENSEMBLE_LAYERS,
            "n_layer": k.N_LAYER, "num_heads": s.NUM_HEADS, "dim_feedforward": s.DIM_FEEDFORWARD,
            "dropout": s.DROPOUT, "temporal_window": s.TEMPORAL_WINDOW, "window_size": k.WINDOW_SIZE,
            "max_gap": k.MAX_GAP, "contact_threshold": k.CONTACT_THRESHOLD, "not_contacting": k.NOT_CONTACTING,
            "use_spatial_prior": k.USE_SPATIAL_PRIOR, "use_temporal_prior": k.USE_TEMPORAL_PRIOR,
            "spatial_prior_loss": k.SPATIAL_PRIOR_LOSS, "temporal_prior_loss": k.TEMPORAL_PRIOR_LOSS,
            "output_branch": k.OUTPUT_BRANCH, "mask_size": s.MASK_SIZE, "multi_label_loss": s.MULTI_LABEL_LOSS,
            "obj_classifier_hidden": s.OBJ_CLASSIFIER_HIDDEN, "pos_dim": s.POS_DIM,
            "object_loss_weight": s.OBJECT_LOSS_WEIGHT, "detector": detector, **sgdet_training_options(cfg),
        }

    # ------------------------------------------------------------------------------------------ per video

    # ------------------------------------------------------------------------------------------ priors
    def _contact_sets(self, contacting_logits: torch.Tensor) -> torch.Tensor:
        """Predicted contact set of each pair as a ``(P, 17)`` 0/1 mask (no gradient): ``{not_contacting}`` when it
        is the argmax, else the predicates with probability >= threshold, without ``not_contacting``."""
        probs = contacting_logits.detach().sigmoid()
        mask = probs >= self.contact_threshold
        mask[:, self.not_contacting] = False
        is_none = probs.argmax(1) == self.not_contacting
        mask[is_none] = False
        mask[is_none, self.not_contacting] = True
        return mask.float()

    def _transition_prior(self, sets: torch.Tensor, obj_labels: torch.Tensor) -> torch.Tensor:
        """``state_fc_t`` of the mean transition prior over each pair's contact set (the marginal when empty)."""
        spec = self.temporal_specific_prior[obj_labels]  # (P, 17, 26)
        count = sets.sum(1, keepdim=True)
        mean = (sets[:, :, None] * spec).sum(1) / count.clamp(min=1)
        vec = torch.where(count > 0, mean, self.temporal_initial_prior[obj_labels])
        return self.temporal_state_fc(vec)

    def _class_history(self, obj_labels, frame_of_pair, scores, num_frames: int, by_score: bool):
        """Per (class, frame) representative pair and the previous frame the class was seen in.

        Returns ``cls`` ``(P,)`` (row of each pair's class), ``rep`` ``(L, T)`` (pair index, -1 = class absent) and
        ``prev`` ``(L, T)`` (last frame < t with the class, -1 = none).
        """
        uniq, cls = torch.unique(obj_labels, return_inverse=True)
        n = len(uniq) * num_frames
        key = cls * num_frames + frame_of_pair
        idx = torch.arange(len(key), device=key.device)
        rep = torch.full((n,), -1, dtype=torch.long, device=key.device)
        if by_score:  # SGCls / SGDet evaluation: the highest-scoring instance (first on ties)
            best = torch.full((n,), -float("inf"), device=key.device).scatter_reduce(0, key, scores.float(), "amax")
            cand = scores.float() == best[key]
            first = torch.full((n,), len(key), dtype=torch.long, device=key.device).scatter_reduce(
                0, key[cand], idx[cand], "amin")
            rep = torch.where(first < len(key), first, rep)
        else:  # the last pair of the class in the frame (upstream overwrites its history)
            rep = rep.scatter_reduce(0, key, idx, "amax")
        rep = rep.view(len(uniq), num_frames)
        frames = torch.arange(num_frames, device=key.device).expand_as(rep)
        last_seen = torch.where(rep >= 0, frames, torch.full_like(frames, -1)).cummax(1).values
        prev = torch.cat([torch.full_like(last_seen[:, :1], -1), last_seen[:, :-1]], 1)
        return cls, rep, prev

    # ------------------------------------------------------------------------------------------ encoders
    def _spatial(self, x, prior, frame_of_pair, num_frames: int):
        counts = torch.bincount(frame_of_pair, minlength=num_frames)
        starts = torch.cumsum(counts, 0) - counts
        index, pad = segment_index(counts, starts, int(counts.max()), x.shape[0])
        h, p, pad_ok = x[index], prior[index], unblock_empty(pad)
        for layer in self.encoder:
            h = layer(h, p, pad_ok)
        return h[~pad]

    def _temporal(self, x, own_prior, marginal_prior, frame_of_pair, num_frames: int):
        """Windows of ``temporal_window`` frames (stride 1); frame t reads the window ending at t (upstream with
        window 2: frame 0 from window 0). Tokens of a window's last frame and of frame 0 carry the marginal prior,
        the others the transition prior of their own contact set."""
        counts = torch.bincount(frame_of_pair, minlength=num_frames)
        starts = torch.cumsum(counts, 0) - counts
        num_windows = max(num_frames - self.temporal_window + 1, 1)
        w_first = torch.arange(num_windows, device=x.device)
        w_last = (w_first + self.temporal_window - 1).clamp(max=num_frames - 1)
        w_starts, w_counts = starts[w_first], starts[w_last] + counts[w_last] - starts[w_first]
        index, pad = segment_index(w_counts, w_starts, int(w_counts.max()), x.shape[0])
        f = frame_of_pair[index]
        pos = self.frame_embedding((f - w_first[:, None]).clamp(0, self.temporal_window - 1))
        marginal = (f == w_last[:, None]) | (f == 0)
        prior = torch.where(marginal[..., None], marginal_prior[index], own_prior[index])
        h, pad_ok = x[index], unblock_empty(pad)
        for layer in self.decoder:
            h = layer(h, prior, pad_ok, pos)
        window_of_pair = (frame_of_pair - self.temporal_window + 1).clamp(0, num_windows - 1)
        slot = torch.arange(x.shape[0], device=x.device) - w_starts[window_of_pair]
        return h[window_of_pair, slot]

    def _ensemble(self, feats, cls, rep, prev, frame_of_pair):
        """Up to ``window_size`` frames of the pair's class ending at its own frame, chained back through the
        previous frames the class was seen in while the gap is <= ``max_gap``; slot features = the representative's
        (spatial + temporal) / 2, the pair's own in the current slot."""
        p, w = feats.shape[0], self.window_size
        chain = [frame_of_pair]
        alive = torch.ones(p, dtype=torch.bool, device=feats.device)
        for _ in range(w - 1):
            back = prev[cls, chain[-1].clamp(min=0)]
            alive = alive & (back >= 0) & (chain[-1] - back <= self.max_gap)
            chain.append(torch.where(alive, back, torch.full_like(back, -1)))
        frames = torch.stack(chain[::-1], 1)  # (P, W), oldest first, -1 = empty (all at the front)
        length = (frames >= 0).sum(1)
        # Left-align the filled slots: slot j of a pair holds frames[-length + j].
        offs = torch.arange(w, device=feats.device)[None, :]
        src = (w - length)[:, None] + offs
        valid = offs < length[:, None]
        frames = torch.gather(frames, 1, src.clamp(max=w - 1))
        index = torch.where(valid, rep[cls[:, None], frames.clamp(min=0)], torch.zeros_like(frames))
        last = length - 1
        index[torch.arange(p, device=feats.device), last] = torch.arange(p, device=feats.device)
        h = feats[index]
        pos = self.slot_embedding(offs.expand(p, w))
        pad = ~valid
        zero = torch.zeros_like(h)
        for layer in self.ensemble:
            h = layer(h, zero, pad, pos)
        return h[torch.arange(p, device=feats.device), last]

    def _relation_branches(self, fmap, boxes, frame_idx, obj_feats, labels, scores, pairs, num_frames: int,
                           by_score: bool):
        """Relation vectors -> per-branch logits ``{branch: (att, spa, con)}`` and the prior heads' logits."""
        union = self.features.union_features(fmap, union_box(boxes[pairs[:, 0]], boxes[pairs[:, 1]]),
                                             frame_idx[pairs[:, 0]])
        x = self.relation(obj_feats, union, boxes, labels, pairs)
        fp, ol = frame_idx[pairs[:, 1]], labels[pairs[:, 1]]
        zeros = torch.zeros_like(x)
        p_spatial = self.spatial_state_fc(self.spatial_initial_prior[ol]) if self.use_spatial_prior else zeros
        cls, rep, prev = self._class_history(ol, fp, scores[pairs[:, 1]], num_frames, by_score)
        out: Dict[str, Tuple[torch.Tensor, ...]] = {}
        for _ in range(self.n_layer):
            spatial = self._spatial(x, p_spatial, fp, num_frames)
            out["spatial"] = self.heads["spatial"](spatial)
            sets = self._contact_sets(out["spatial"][2])
            if self.use_temporal_prior:
                own = self._transition_prior(sets, ol)
                marginal = self.temporal_state_fc(self.temporal_initial_prior[ol])
            else:
                own = marginal = zeros
            temporal = self._temporal(spatial, own, marginal, fp, num_frames)
            out["temporal"] = self.heads["temporal"](temporal)
            x = spatial
        ensemble = self._ensemble((spatial + temporal) / 2, cls, rep, prev, fp)
        out["ensemble"] = self.heads["ensemble"](ensemble)
        if self.training and self.spatial_prior_loss:
            out["spatial_prior"] = self.heads["spatial"](p_spatial)
        if self.training and self.temporal_prior_loss:
            # The transition prior of the class's previous contact set (<= max_gap frames back), else its own.
            back = prev[cls, fp]
            use_prev = (back >= 0) & (fp - back <= self.max_gap)
            src = torch.where(use_prev, rep[cls, back.clamp(min=0)], torch.arange(len(fp), device=fp.device))
            out["temporal_prior"] = self.heads["temporal"](self._transition_prior(sets[src], ol))
        return out

    # ------------------------------------------------------------------------------------------ training
    def _video_losses(self, video: dict) -> Dict[str, torch.Tensor]:
        images = check_video_images(video, "STKET")
        fmap = self.features.frame_features(images)
        gt = gather_gt_boxes(video, self.device)
        losses: Dict[str, torch.Tensor] = {}
        if self.detector is not None and self.detector.trainable:
            losses.update(self.detector.losses(fmap, images.shape[-2:], gt.boxes, gt.labels, gt.frame_idx))
        if self.mode == "sgdet" and self.sgdet_train_boxes == "detections":
            gt, obj_feats = detected_training_boxes(video, images, fmap, gt, self.detector, self.features,
                                                    iou_threshold=self.sgdet_assign_iou, supply=self.sgdet_supply)
        else:
            obj_feats = self.features.object_features(fmap, gt.boxes, gt.frame_idx)
        if self.object_classifier is not None:
            prior = class_prior(self.features, obj_feats, self.num_classes)
            logits = self.object_classifier(obj_feats, prior, normalized_boxes(gt.boxes, video))
            losses["loss_object"] = self.object_loss_weight * F.cross_entropy(logits, gt.labels)
        pairs = training_pairs(gt)
        targets = video_relation_targets(video, gt, pairs, self.groups)
        scores = torch.ones(len(gt.boxes), device=self.device)
        out = self._relation_branches(fmap, gt.boxes, gt.frame_idx, obj_feats, gt.labels, scores, pairs,
                                      len(video["frames"]), by_score=False)
        for name, heads in out.items():
            losses.update(relation_losses(heads, targets, self.multi_label_loss, prefix=f"loss_{name}"))
        return losses

    # ------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def _video_inference(self, video: dict) -> dict:
        images = check_video_images(video, "STKET")
        fmap = self.features.frame_features(images)
        num_frames = len(video["frames"])
        boxes, original, labels, frame_idx, det_dist, det_feats = inference_boxes(
            video, images, fmap, self.mode, self.detector, self.device)
        obj_feats = det_feats if det_feats is not None else self.features.object_features(fmap, boxes, frame_idx)
        if self.mode == "predcls":
            scores = torch.ones(len(boxes), device=self.device)
            person, is_person = predcls_persons(frame_idx, num_frames)
        else:
            prior = det_dist if self.mode == "sgdet" else class_prior(self.features, obj_feats, self.num_classes)
            logits = self.object_classifier(obj_feats, prior, normalized_boxes(boxes, video)) if len(boxes) else \
                boxes.new_zeros((0, self.num_classes))
            labels, scores, person, is_person = assign_person_labels(logits.softmax(1), frame_idx, num_frames)
        pairs = pairs_of_persons(person, is_person, frame_idx)
        outputs: Dict[str, torch.Tensor] = {}
        if len(pairs):
            out = self._relation_branches(fmap, boxes, frame_idx, obj_feats, labels, scores, pairs, num_frames,
                                          by_score=self.mode != "predcls")
            for branch in BRANCHES:
                att, spa, con = out[branch]
                outputs.update({f"{branch}/attention": att.softmax(1), f"{branch}/spatial": spa.sigmoid(),
                                f"{branch}/contacting": con.sigmoid()})
        else:
            for branch in BRANCHES:
                for key, g in zip(("attention", "spatial", "contacting"), self.groups):
                    outputs[f"{branch}/{key}"] = boxes.new_zeros((0, g))
        for key in ("attention", "spatial", "contacting"):
            outputs[key] = outputs[f"{self.output_branch}/{key}"]
        return {"frames": split_frames(num_frames, frame_idx, original, labels, scores, pairs, **outputs)}
