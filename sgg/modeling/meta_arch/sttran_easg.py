"""STTran-EASG (Rodin et al., CVPR 2024; fpv-iplab/EASG ``lib/sttran_EASG.py``): STTran's spatial-temporal
transformer on egocentric action scene graphs — one camera-wearer verb per graph, its objects grounded in the PRE /
PNR / POST frames, 13 sigmoid relation edges between the verb and each object.

Per graph (one dict from :class:`~sgg.data.easg_mapper.EASGMapper`; a batch holds several graphs)::

    pairs (P)          = (frame t, object j) for every frame in which object j has a box, frames ascending
    object features    = MODEL.EASG.OBJECT_FEATURES "frames": the feature source on the jpg frames (RoIAlign of the
                         object's boxes in that frame -> box head, averaged over its boxes; upstream: its R101
                         detector, 2048-d), or "roi": the released roi_feats_* (1024-d) of that frame
    object classifier  (sgcls / easgcls): STTran's [feature, uniform class prior @ embedding, box position] -> MLP
    verb classifier    (easgcls): verb feature -> Linear -> ReLU -> Linear (upstream: 2304 -> 1024 -> 198)
    relation vector    = [ obj_fc(f_o) (VISUAL_DIM) | verb_fc(f_v) (VISUAL_DIM) | obj_embed(l_o) (EMBED_DIM) |
                           verb_embed(l_v) (EMBED_DIM) ]          (upstream: 512 + 512 + 200 + 200 = 1424)
    transformer        : STTran's spatial encoder (pairs of one frame) + temporal decoder over the graph's frames
    head               : Linear -> R relation logits (sigmoid), multi-label margin loss (upstream) or BCE

Labels fed to the embeddings are the GT in training and in the modes that give them (edgecls: both; sgcls: the
verb), else the classifiers' arg-max per pair (as upstream). Training returns ``{"loss_relation"}`` (+
``"loss_object"`` in sgcls / easgcls, + ``"loss_verb"`` in easgcls); evaluation returns per graph ``{"relation_scores"
(N, R): sigmoid averaged over the object's pairs, "object_scores" (N, C): softmax averaged (edgecls: one-hot GT),
"verb_scores" (V,): softmax (edgecls / sgcls: one-hot GT)}``, what ``easg_graph`` evaluates.

Differences from upstream (docs/easg.md): a "video" is one graph (its <= 3 frames), not a chunk of <= 100 frames of
consecutive graphs of a clip, so temporal attention stays inside the graph; the verb classifier has no BatchNorm
(upstream's normalises over the chunk's copies of one feature); no detector: the object classifier starts from a
uniform class prior (STTran's sgg port does the same without a detector).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sgg.config import ConfigError, configurable
from sgg.data.datasets.easg import easg_vocabulary

from ..build import META_ARCH_REGISTRY, build_video_features
from ..layers import SpatialTemporalTransformer
from ..video_sgg import ObjectClassifier, load_word_vectors, multi_label_loss

__all__ = ["STTranEASG", "EASGRelationFeatures", "graph_pairs"]

logger = logging.getLogger(__name__)

OBJECT_SOURCES = ("frames", "roi")
EASG_MODES = ("edgecls", "sgcls", "easgcls")


class EASGRelationFeatures(nn.Module):
    """STTran-EASG's relation vector ``[obj_fc(f_o) | verb_fc(f_v) | obj_embed(l_o) | verb_embed(l_v)]``, width
    ``dim = 2 x visual_dim + 2 x embed_dim``. (``obj_fc`` / ``obj_embed`` carry STTran's parameter names, so an
    Action Genome STTran checkpoint fills what fits.)"""

    def __init__(self, *, object_dim: int, verb_dim: int, visual_dim: int, embed_dim: int, num_objects: int,
                 num_verbs: int, object_embedding: Optional[torch.Tensor] = None,
                 verb_embedding: Optional[torch.Tensor] = None):
        super().__init__()
        self.obj_fc = nn.Linear(object_dim, visual_dim)
        self.verb_fc = nn.Linear(verb_dim, visual_dim)
        self.obj_embed = nn.Embedding(num_objects, embed_dim)
        self.verb_embed = nn.Embedding(num_verbs, embed_dim)
        if object_embedding is not None:
            self.obj_embed.weight.data.copy_(object_embedding)
        if verb_embedding is not None:
            self.verb_embed.weight.data.copy_(verb_embedding)
        self.dim = 2 * visual_dim + 2 * embed_dim

    def forward(self, obj_feats: torch.Tensor, verb_feats: torch.Tensor, obj_labels: torch.Tensor,
                verb_labels: torch.Tensor) -> torch.Tensor:
        """``(P, D_o)``, ``(P, D_v)``, ``(P,)``, ``(P,)`` -> ``(P, dim)``."""
        return torch.cat([self.obj_fc(obj_feats), self.verb_fc(verb_feats), self.obj_embed(obj_labels),
                          self.verb_embed(verb_labels)], 1)


def graph_pairs(graph: dict) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(frame (P,), object (P,), boxes (P, 4))`` of a graph's (frame, object) pairs, frames ascending: every frame
    in which the object has a box; ``boxes`` = the mean of its boxes there, normalised xyxy clipped to [0, 1]."""
    frames, objs, boxes = [], [], []
    for t, fr in enumerate(graph["frames"]):
        for j, o in enumerate(graph["objects"]):
            b = o["boxes"].get(fr["frame_type"])
            if b is not None and len(b):
                frames.append(t)
                objs.append(j)
                boxes.append(torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4).clamp(0, 1).mean(0))
    if not frames:
        raise ValueError(f"EASG graph '{graph.get('graph_id')}' has no box in any frame.")
    return torch.tensor(frames), torch.tensor(objs), torch.stack(boxes)


@META_ARCH_REGISTRY.register()
class STTranEASG(nn.Module):
    """STTran on EASG graphs (see the module docstring)."""

    @configurable
    def __init__(self, *, mode: str, features: Optional[nn.Module], object_source: str, num_objects: int,
                 num_relations: int, num_verbs: int, verb_dim: int, roi_dim: int = 1024, visual_dim: int = 512,
                 embed_dim: int = 200, object_embedding: Optional[torch.Tensor] = None,
                 verb_embedding: Optional[torch.Tensor] = None, enc_layers: int = 1, dec_layers: int = 3,
                 num_heads: int = 8, dim_feedforward: int = 2048, dropout: float = 0.1, temporal_window: int = 2,
                 multi_label_loss: str = "margin", obj_classifier_hidden: int = 1024, pos_dim: int = 128,
                 object_loss_weight: float = 1.0, verb_hidden: int = 1024):
        """
        Args:
            mode: "edgecls", "sgcls" or "easgcls".
            features: the video feature source (``object_source`` "frames"), or None ("roi").
            object_source: "frames" (features on the jpgs) or "roi" (the released RoI features, ``roi_dim`` wide).
            num_objects / num_relations / num_verbs: class counts (EASG: 391 / 13 / 198).
            verb_dim: verb-feature width (EASG: 2304).
            visual_dim / embed_dim: projection and embedding widths (upstream: 512 / 200).
            object_embedding / verb_embedding: initial embeddings (GloVe) or None (random).
            enc_layers / dec_layers / num_heads / dim_feedforward / dropout / temporal_window: STTran's transformer.
            multi_label_loss: "margin" (upstream) or "bce".
            obj_classifier_hidden / pos_dim: STTran's object classifier.
            object_loss_weight: weight of the object cross-entropy.
            verb_hidden: hidden width of the easgcls verb classifier.
        """
        super().__init__()
        if mode not in EASG_MODES:
            raise ConfigError(f"STTranEASG: TEST.RELATION.MODE must be one of {EASG_MODES}, got {mode!r}.")
        if object_source not in OBJECT_SOURCES:
            raise ConfigError(f"MODEL.EASG.OBJECT_FEATURES must be one of {OBJECT_SOURCES}, got {object_source!r}.")
        if object_source == "frames" and features is None:
            raise ConfigError("STTranEASG with MODEL.EASG.OBJECT_FEATURES frames needs a feature source.")
        self.mode, self.object_source = mode, object_source
        self.features = features if object_source == "frames" else None
        object_dim = features.object_dim if self.features is not None else roi_dim
        self.num_objects, self.num_verbs = num_objects, num_verbs
        self.multi_label_loss = multi_label_loss
        self.object_loss_weight = object_loss_weight
        self.relation = EASGRelationFeatures(object_dim=object_dim, verb_dim=verb_dim, visual_dim=visual_dim,
                                             embed_dim=embed_dim, num_objects=num_objects, num_verbs=num_verbs,
                                             object_embedding=object_embedding, verb_embedding=verb_embedding)
        self.transformer = SpatialTemporalTransformer(
            dim=self.relation.dim, enc_layers=enc_layers, dec_layers=dec_layers, num_heads=num_heads,
            dim_feedforward=dim_feedforward, dropout=dropout, window=temporal_window)
        self.relation_head = nn.Linear(self.relation.dim, num_relations)
        self.object_classifier = None
        if mode != "edgecls":
            self.object_classifier = ObjectClassifier(feature_dim=object_dim, num_classes=num_objects,
                                                      embed_dim=embed_dim, pos_dim=pos_dim,
                                                      hidden_dim=obj_classifier_hidden, embedding=object_embedding,
                                                      dropout=dropout)
        self.verb_classifier = None
        if mode == "easgcls":
            self.verb_classifier = nn.Sequential(nn.Linear(verb_dim, verb_hidden), nn.ReLU(),
                                                 nn.Linear(verb_hidden, num_verbs))

    @classmethod
    def from_config(cls, cfg, features: Optional[nn.Module] = None) -> dict:
        """``TEST.RELATION.MODE``, ``MODEL.EASG.*`` and STTran's widths ``MODEL.STTRAN.*``."""
        s, e = cfg.MODEL.STTRAN, cfg.MODEL.EASG
        source = str(e.OBJECT_FEATURES)
        if source == "frames" and features is None:
            features = build_video_features(cfg)
        obj_emb = verb_emb = None
        if s.WORD_VECTORS:
            vocab = easg_vocabulary(cfg.DATASETS.TRAIN[0])
            obj_emb, missing_o = load_word_vectors(s.WORD_VECTORS, vocab["objects"], s.EMBED_DIM)
            verb_emb, missing_v = load_word_vectors(s.WORD_VECTORS, vocab["verbs"], s.EMBED_DIM)
            logger.info("STTranEASG: word vectors from '%s' (%d objects, %d verbs without a known word).",
                        s.WORD_VECTORS, len(missing_o), len(missing_v))
        return {"mode": cfg.TEST.RELATION.MODE, "features": features, "object_source": source,
                "num_objects": e.NUM_OBJECTS, "num_relations": e.NUM_RELATIONS, "num_verbs": e.NUM_VERBS,
                "verb_dim": e.VERB_FEATURE_DIM, "roi_dim": e.ROI_FEATURE_DIM, "visual_dim": s.VISUAL_DIM,
                "embed_dim": s.EMBED_DIM, "object_embedding": obj_emb, "verb_embedding": verb_emb,
                "enc_layers": s.ENC_LAYERS, "dec_layers": s.DEC_LAYERS, "num_heads": s.NUM_HEADS,
                "dim_feedforward": s.DIM_FEEDFORWARD, "dropout": s.DROPOUT, "temporal_window": s.TEMPORAL_WINDOW,
                "multi_label_loss": s.MULTI_LABEL_LOSS, "obj_classifier_hidden": s.OBJ_CLASSIFIER_HIDDEN,
                "pos_dim": s.POS_DIM, "object_loss_weight": s.OBJECT_LOSS_WEIGHT,
                "verb_hidden": e.VERB_CLASSIFIER_HIDDEN}

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return self.relation_head.weight.device

    # ------------------------------------------------------------------------------------------ per graph
    def _object_features(self, graph: dict, frame: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """``(P, D_o)`` features of the pairs ``(frame, obj)``."""
        if self.object_source == "roi":
            if "roi_frame_features" not in graph:
                raise ValueError(f"STTranEASG (MODEL.EASG.OBJECT_FEATURES roi): graph '{graph.get('graph_id')}' has "
                                 "no RoI features; put roi_feats_{split}.pkl in the dataset root.")
            roi = graph["roi_frame_features"]
            if roi.shape[-1] != self.relation.obj_fc.in_features:
                raise ValueError(f"STTranEASG: the RoI features of graph '{graph.get('graph_id')}' are "
                                 f"{roi.shape[-1]}-d, the model expects MODEL.EASG.ROI_FEATURE_DIM "
                                 f"{self.relation.obj_fc.in_features}; set it to the width of roi_feats_{{split}}.pkl.")
            return roi.to(self.device)[frame, obj]
        if "images" not in graph:
            raise ValueError(f"STTranEASG (MODEL.EASG.OBJECT_FEATURES frames): graph '{graph.get('graph_id')}' has no "
                             "images; keep INPUT.EASG.LOAD_FRAMES True and the frames/ folder in the dataset root.")
        fmap = self.features.frame_features(graph["images"])
        index = graph["box_index"].to(self.device)
        per_box = self.features.object_features(fmap, graph["gt_boxes"].to(self.device), index[:, 0])
        # mean over the boxes of each (frame, object) pair (EASG has 1-4 boxes per noun and frame)
        n_obj = len(graph["objects"])
        key = index[:, 0] * n_obj + index[:, 1]
        pair_key = frame.to(self.device) * n_obj + obj.to(self.device)
        slot = torch.searchsorted(pair_key, key)
        sums = per_box.new_zeros(len(pair_key), per_box.shape[1]).index_add_(0, slot, per_box)
        counts = torch.bincount(slot, minlength=len(pair_key)).clamp(min=1).to(per_box.dtype)
        return sums / counts[:, None]

    def _verb_feature(self, graph: dict) -> torch.Tensor:
        if graph.get("verb_feature") is None:
            raise ValueError(f"STTranEASG: graph '{graph.get('graph_id')}' has no verb feature; put "
                             "verb_features.pt in the dataset root (or DATASETS.EASG.FEATURES_DIR).")
        verb = graph["verb_feature"].reshape(-1)
        if verb.numel() != self.relation.verb_fc.in_features:
            raise ValueError(f"STTranEASG: the verb feature of graph '{graph.get('graph_id')}' is {verb.numel()}-d, "
                             f"the model expects MODEL.EASG.VERB_FEATURE_DIM {self.relation.verb_fc.in_features}; "
                             "set it to the width of verb_features.pt (EASG's SlowFast features: 2304).")
        return verb.to(self.device)

    def _classify_objects(self, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        # Uniform prior: a feature source's own class distribution (the AG detector's 36 classes) is not EASG's.
        prior = feats.new_full((len(feats), self.num_objects), 1.0 / self.num_objects)
        if self.training and len(feats) == 1:
            # BatchNorm cannot train on one row (a one-object, one-frame graph alone in its batch): score it twice.
            return self.object_classifier(feats.repeat(2, 1), prior.repeat(2, 1), boxes.repeat(2, 1))[:1]
        return self.object_classifier(feats, prior, boxes)

    def _run(self, graphs: Sequence[dict]):
        """Everything both training and inference need, for a batch of graphs."""
        pairs = [graph_pairs(g) for g in graphs]
        feats = torch.cat([self._object_features(g, f, o) for g, (f, o, _) in zip(graphs, pairs)])
        boxes = torch.cat([b for _, _, b in pairs]).to(self.device)
        graph_of_pair = torch.cat([torch.full((len(f),), i, dtype=torch.int64) for i, (f, _, _) in
                                   enumerate(pairs)]).to(self.device)
        gt_obj = torch.cat([g["object_labels"][o] for g, (_, o, _) in zip(graphs, pairs)]).to(self.device)
        gt_verb = torch.tensor([int(g["verb"]) for g in graphs], device=self.device)
        verb_feats = torch.stack([self._verb_feature(g) for g in graphs])
        obj_logits = self._classify_objects(feats, boxes) if self.object_classifier is not None else None
        verb_logits = self.verb_classifier(verb_feats) if self.verb_classifier is not None else None
        obj_labels = gt_obj if self.training or obj_logits is None else obj_logits.argmax(1)
        verb_labels = gt_verb if self.training or verb_logits is None else verb_logits.argmax(1)
        x = self.relation(feats, verb_feats[graph_of_pair], obj_labels, verb_labels[graph_of_pair])
        out = torch.empty_like(x)
        start = 0
        for (f, _, _), g in zip(pairs, graphs):
            sl = slice(start, start + len(f))
            out[sl] = self.transformer(x[sl], f.to(self.device), len(g["frames"]))
            start += len(f)
        return pairs, self.relation_head(out), obj_logits, verb_logits, gt_obj, gt_verb

    def forward(self, batched_inputs: List[dict]):
        """Training: losses over the batch's pairs (relation, object) and graphs (verb). Eval: one score dict per
        graph (see the module docstring)."""
        if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
            raise ValueError("STTranEASG expects a non-empty list of graph dicts (EASGMapper output).")
        pairs, rel_logits, obj_logits, verb_logits, gt_obj, gt_verb = self._run(batched_inputs)
        if self.training:
            targets = torch.cat([g["relation_targets"][o] for g, (_, o, _) in zip(batched_inputs, pairs)])
            losses: Dict[str, torch.Tensor] = {
                "loss_relation": multi_label_loss(rel_logits, targets.to(self.device), self.multi_label_loss)}
            if obj_logits is not None:
                losses["loss_object"] = self.object_loss_weight * F.cross_entropy(obj_logits, gt_obj)
            if verb_logits is not None:
                losses["loss_verb"] = F.cross_entropy(verb_logits, gt_verb)
            return losses
        rel_probs = rel_logits.sigmoid()
        obj_probs = obj_logits.softmax(1) if obj_logits is not None else F.one_hot(gt_obj, self.num_objects).float()
        results, start = [], 0
        for i, (g, (f, o, _)) in enumerate(zip(batched_inputs, pairs)):
            sl = slice(start, start + len(f))
            start += len(f)
            n = len(g["objects"])
            o = o.to(self.device)
            counts = torch.bincount(o, minlength=n).clamp(min=1).to(rel_probs.dtype)[:, None]
            rel = rel_probs.new_zeros(n, rel_probs.shape[1]).index_add_(0, o, rel_probs[sl]) / counts
            obj = obj_probs.new_zeros(n, obj_probs.shape[1]).index_add_(0, o, obj_probs[sl]) / counts
            verb = (verb_logits[i].softmax(0) if verb_logits is not None
                    else F.one_hot(gt_verb[i], self.num_verbs).float())
            results.append({"relation_scores": rel, "object_scores": obj, "verb_scores": verb})
        return results
