"""DSG-DETR (Feng et al., WACV 2023): tracklets of objects + a tracklet transformer on STTran's pipeline.

Per video (one dict from :class:`~sgg.data.video_mapper.ActionGenomeMapper`)::

    frames (T, 3, H', W') --feature source--> feature maps
    boxes: GT (PredCls / SGCls) or detections (SGDet)           object RoI features f (N, F)
    class distribution p: PredCls one-hot GT; SGCls / SGDet STTran's object classifier on f (it stands in for the
                          class scores of upstream's frozen AG detector), fed the detector's scores in SGDet
    tracking (MODEL.DSGDETR.TRACKING): "hungarian" = sgg.modeling.tracking.HungarianTracker on (boxes, argmax p, f),
                          "class" = one tracklet per class, "none" = every box alone     -> track id per box
    object vector     x = [ f | p @ class embedding (EMBED_DIM) | box MLP(cxcywh / frame size) (BOX_DIM) ]
    tracklet transformer: OBJECT_LAYERS encoder layers within each tracklet, sinusoidal positions = frame index
    object head (SGCls / SGDet): Linear -> BN -> ReLU -> Linear on the refined x -> 36 logits
    pairs (P, 2) = (person, object) in every frame
    relation vector   = RelationFeatures on the refined x (subject fc | object fc | union fc | 2 word embeddings)
    spatial encoder   : ENC_LAYERS encoder layers over the pairs of one frame
    temporal encoder  : DEC_LAYERS encoder layers over the pairs of the object's whole tracklet (sinusoidal positions =
                        frame index; tracklets longer than TRACKLET_CHUNK pairs are cut into consecutive pieces)
    heads             : attention (3, softmax, CE), spatial (6) and contacting (17) (sigmoid, margin loss or BCE)

Training returns ``{"loss_attention", "loss_spatial", "loss_contacting"}`` (+ ``"loss_object"`` (after the
tracklet transformer) and ``"loss_object_prior"`` (the classifier before it) in SGCls / SGDet, + the detector's losses
in SGDet when it is trained). Evaluation returns per video ``{"frames": [{boxes (N, 4) xyxy ORIGINAL pixels, labels,
scores, pairs (P, 2), attention (P, 3), spatial (P, 6), contacting (P, 17), track_ids (N,)}, ...]}``.

Differences from the reference implementation (on purpose, docs/dsgdetr.md): the tracker runs in every mode (upstream
only in SGCls; ``TRACKING: "class"`` is upstream's grouping elsewhere); the relation temporal encoder runs over the
object's tracklet (upstream: over all pairs of the object's class, i.e. ``"class"``); positions are frame indices in
every mode (upstream: rank inside the sequence, frame rank in SGDet); without an AG detector the SGCls class
distribution comes from STTran's object classifier, trained with its own loss; SGDet training uses the GT boxes for
the relation heads (STTran's SUPPLY) like sgg's STTran; predicted labels in training give the person row its GT label
(upstream's index arithmetic there is off by one class).
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sgg.config import configurable
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES
from sgg.structures.boxes import box_xyxy_to_cxcywh, union_box

from ..build import META_ARCH_REGISTRY, build_video_detector, build_video_features
from ..layers import GroupTransformerEncoder
from ..tracking import TRACKING_METHODS, HungarianTracker, track_boxes
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

__all__ = ["DSGDETR", "frame_numbers"]

logger = logging.getLogger(__name__)


def frame_numbers(video: dict) -> List[int]:
    """Original frame numbers of a video's frames (AG keys ``<vid>.mp4/<frame:06d>.png``), for the tracker's expiry;
    the frame indices 0 .. T-1 when a key has no number or the numbers do not increase."""
    numbers = []
    for t, frame in enumerate(video["frames"]):
        stem = os.path.splitext(str(frame.get("frame_key", "")).split("/")[-1])[0]
        numbers.append(int(stem) if stem.isdigit() else None)
    if any(n is None for n in numbers) or any(b <= a for a, b in zip(numbers, numbers[1:])):
        return list(range(len(numbers)))
    return numbers


# --------------------------------------------------------------------------------------------------- the model
@META_ARCH_REGISTRY.register()
class DSGDETR(VideoSGGModel):
    """DSG-DETR for video SGG in PredCls, SGCls or SGDet (``TEST.RELATION.MODE``); see the module docstring.

    Input: a list of video dicts (``ActionGenomeMapper`` output: ``images`` uint8 ``(T, 3, H', W')``,
    ``image_scale``, ``frames`` with ``boxes`` / ``gt_boxes`` / ``labels`` / ``relations`` / ``frame_key``).
    """

    @configurable
    def __init__(self, *, features: nn.Module, mode: str, num_classes: int = 36,
                 predicate_groups: Sequence[int] = (3, 6, 17), pooler_resolution: int = 7, union_dim: int = 256,
                 visual_dim: int = 512, embed_dim: int = 200, word_vectors: str = "", class_names: Sequence[str] = (),
                 enc_layers: int = 1, dec_layers: int = 3, num_heads: int = 8, dim_feedforward: int = 2048,
                 dropout: float = 0.1, mask_size: int = 27, multi_label_loss: str = "margin",
                 obj_classifier_hidden: int = 1024, pos_dim: int = 128, object_loss_weight: float = 1.0,
                 tracking: str = "hungarian", track_costs: Sequence[float] = (0.5, 1.0, 1.0, 0.5),
                 track_accept: float = 0.5, track_max_age: int = 50, object_layers: int = 3, object_heads: int = 8,
                 object_feedforward: int = 1024, box_dim: int = 128, tracklet_chunk: int = 400,
                 predicted_labels_in_training: bool = True, detector: Optional[nn.Module] = None):
        """
        Args:
            features: the feature source (``MODEL.VIDEO_FEATURES.NAME``): frame maps, object and union-box features.
            mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"``.
            num_classes / predicate_groups / pooler_resolution / union_dim / visual_dim / embed_dim / word_vectors /
                class_names / mask_size / multi_label_loss / obj_classifier_hidden / pos_dim / object_loss_weight:
                STTran's pipeline (``MODEL.STTRAN.*``, see :class:`~sgg.modeling.meta_arch.sttran.STTran`).
            enc_layers / dec_layers: spatial encoder / temporal (tracklet) encoder depth (DSG-DETR: 1 / 3).
            num_heads / dim_feedforward / dropout: sizes of the relation encoders (DSG-DETR: 8 / 2048 / 0.1).
            tracking: one of :data:`~sgg.modeling.tracking.TRACKING_METHODS`.
            track_costs: Hungarian cost weights (class, feature, L1, GIoU); track_accept / track_max_age: the
                acceptance threshold and the expiry in frame numbers (:class:`~sgg.modeling.tracking.HungarianTracker`).
            object_layers / object_heads / object_feedforward: the tracklet transformer (DSG-DETR: 3 / 8 / 1024).
            box_dim: width of the box MLP in the object vector (DSG-DETR: 128).
            tracklet_chunk: max rows per attention sequence of the tracklet / temporal encoders (0 = whole tracklet).
            predicted_labels_in_training: SGCls / SGDet training feeds predicted object labels to the relation
                embeddings (DSG-DETR) instead of the GT labels.
            detector: SGDet only, a ``MODEL.VIDEO_DETECTOR.NAME`` detector sharing the feature source's ``backbone``.
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"DSGDETR: TEST.RELATION.MODE must be one of {MODES}, got {mode!r}.")
        if mode == "sgdet" and detector is None:
            raise ValueError("DSGDETR in sgdet mode needs a detector (MODEL.VIDEO_DETECTOR); none was given.")
        if tracking not in TRACKING_METHODS:
            raise ValueError(f"MODEL.DSGDETR.TRACKING must be one of {TRACKING_METHODS}, got {tracking!r}.")
        if len(track_costs) != 4:
            raise ValueError(f"MODEL.DSGDETR.TRACK_COSTS needs 4 weights (class, feature, L1, GIoU), got "
                             f"{tuple(track_costs)}.")
        if multi_label_loss not in ("margin", "bce"):
            raise ValueError(f"MODEL.STTRAN.MULTI_LABEL_LOSS must be 'margin' or 'bce', got {multi_label_loss!r}.")
        if len(predicate_groups) != 3:
            raise ValueError(f"MODEL.STTRAN.PREDICATE_GROUPS needs 3 sizes (attention, spatial, contacting), "
                             f"got {tuple(predicate_groups)}.")
        self.mode = mode
        self.num_classes = num_classes
        self.groups = tuple(int(g) for g in predicate_groups)
        self.multi_label_loss = multi_label_loss
        self.object_loss_weight = object_loss_weight
        self.tracking = tracking
        self.predicted_labels_in_training = predicted_labels_in_training
        self.tracker = HungarianTracker(cost_class=track_costs[0], cost_feature=track_costs[1],
                                        cost_l1=track_costs[2], cost_giou=track_costs[3],
                                        accept_threshold=track_accept, max_age=track_max_age,
                                        num_classes=num_classes)
        self.features = features
        self.detector = detector

        embedding = None
        if word_vectors:
            if len(class_names) != num_classes:
                raise ValueError(f"MODEL.STTRAN.WORD_VECTORS needs {num_classes} class names, got {len(class_names)}.")
            embedding, missing = load_word_vectors(word_vectors, class_names, embed_dim)
            logger.info("DSGDETR: class embeddings from '%s' (%d / %d classes found%s).", word_vectors,
                        num_classes - len(missing), num_classes, f"; random: {missing}" if missing else "")
        # Object stage: the class distribution before the tracklets (SGCls / SGDet), the object vector, the tracklet
        # transformer and the object head after it.
        self.prior_classifier = None
        if mode != "predcls":
            self.prior_classifier = ObjectClassifier(
                feature_dim=features.object_dim, num_classes=num_classes, embed_dim=embed_dim, pos_dim=pos_dim,
                hidden_dim=obj_classifier_hidden, embedding=embedding, dropout=dropout)
        self.class_embed = nn.Embedding(num_classes, embed_dim)
        if embedding is not None:
            self.class_embed.weight.data.copy_(embedding)
        self.box_embed = nn.Sequential(nn.BatchNorm1d(4, momentum=0.001), nn.Linear(4, box_dim), nn.ReLU(),
                                       nn.Dropout(dropout))
        self.object_dim = features.object_dim + embed_dim + box_dim
        if self.object_dim % object_heads or self.object_dim % 2:
            raise ValueError(f"DSGDETR: the object vector is {self.object_dim} wide (OBJ_FEATURE_DIM + EMBED_DIM + "
                             f"BOX_DIM); it must be even and divisible by MODEL.DSGDETR.OBJECT_HEADS={object_heads}.")
        self.tracklet_encoder = GroupTransformerEncoder(
            dim=self.object_dim, layers=object_layers, num_heads=object_heads, dim_feedforward=object_feedforward,
            dropout=dropout, use_positions=True, chunk=tracklet_chunk)
        self.object_head = None
        if mode != "predcls":
            self.object_head = nn.Sequential(nn.Linear(self.object_dim, obj_classifier_hidden),
                                             nn.BatchNorm1d(obj_classifier_hidden), nn.ReLU(),
                                             nn.Linear(obj_classifier_hidden, num_classes))
        # Relation stage.
        self.relation = RelationFeatures(
            object_dim=self.object_dim, union_channels=features.union_channels, union_dim=union_dim,
            visual_dim=visual_dim, embed_dim=embed_dim, num_classes=num_classes, pooler_resolution=pooler_resolution,
            mask_size=mask_size, embedding=embedding)
        self.rel_dim = self.relation.dim
        if self.rel_dim % num_heads or self.rel_dim % 2:
            raise ValueError(f"DSGDETR: relation dim {self.rel_dim} (3 x VISUAL_DIM + 2 x EMBED_DIM) must be even and "
                             f"divisible by NUM_HEADS={num_heads} (DSG-DETR: 1936 / 8).")
        self.spatial_encoder = GroupTransformerEncoder(
            dim=self.rel_dim, layers=enc_layers, num_heads=num_heads, dim_feedforward=dim_feedforward,
            dropout=dropout, use_positions=False)
        self.temporal_encoder = GroupTransformerEncoder(
            dim=self.rel_dim, layers=dec_layers, num_heads=num_heads, dim_feedforward=dim_feedforward,
            dropout=dropout, use_positions=True, chunk=tracklet_chunk)
        self.attention_head = nn.Linear(self.rel_dim, self.groups[0])
        self.spatial_head = nn.Linear(self.rel_dim, self.groups[1])
        self.contacting_head = nn.Linear(self.rel_dim, self.groups[2])

    @classmethod
    def from_config(cls, cfg, features: Optional[nn.Module] = None, detector: Optional[nn.Module] = None) -> dict:
        """Keyword arguments from ``MODEL.STTRAN``, ``MODEL.DSGDETR``, ``MODEL.VIDEO_FEATURES``,
        ``TEST.RELATION.MODE`` (+ the detector). ``features`` / ``detector`` given explicitly replace the config's."""
        s, d = cfg.MODEL.STTRAN, cfg.MODEL.DSGDETR
        mode = cfg.TEST.RELATION.MODE
        if features is None:
            features = build_video_features(cfg)
        if mode == "sgdet" and detector is None:
            detector = build_video_detector(cfg, features.backbone)
        return {
            "features": features, "mode": mode, "num_classes": s.NUM_CLASSES,
            "predicate_groups": tuple(s.PREDICATE_GROUPS), "pooler_resolution": s.POOLER_RESOLUTION,
            "union_dim": s.UNION_DIM, "visual_dim": s.VISUAL_DIM, "embed_dim": s.EMBED_DIM,
            "word_vectors": s.WORD_VECTORS,
            "class_names": AG_OBJECT_CLASSES if s.NUM_CLASSES == len(AG_OBJECT_CLASSES) else (),
            "enc_layers": s.ENC_LAYERS, "dec_layers": s.DEC_LAYERS, "num_heads": s.NUM_HEADS,
            "dim_feedforward": s.DIM_FEEDFORWARD, "dropout": s.DROPOUT, "mask_size": s.MASK_SIZE,
            "multi_label_loss": s.MULTI_LABEL_LOSS, "obj_classifier_hidden": s.OBJ_CLASSIFIER_HIDDEN,
            "pos_dim": s.POS_DIM, "object_loss_weight": s.OBJECT_LOSS_WEIGHT,
            "tracking": d.TRACKING, "track_costs": tuple(d.TRACK_COSTS), "track_accept": d.TRACK_ACCEPT,
            "track_max_age": d.TRACK_MAX_AGE, "object_layers": d.OBJECT_LAYERS, "object_heads": d.OBJECT_HEADS,
            "object_feedforward": d.OBJECT_FEEDFORWARD, "box_dim": d.BOX_DIM, "tracklet_chunk": d.TRACKLET_CHUNK,
            "predicted_labels_in_training": d.PREDICTED_LABELS_IN_TRAINING, "detector": detector,
        }

    # ------------------------------------------------------------------------------------------ per video

    def _object_stage(self, video: dict, fmap, boxes, frame_idx, gt_labels=None, base_dist=None):
        """Object features -> class distribution -> tracking -> tracklet transformer (-> object head).

        Returns ``refined`` ``(N, object_dim)``, ``track_ids`` ``(N,)`` (on the model's device), ``prior_logits`` and
        ``logits`` ``(N, K)`` (None in PredCls).
        """
        feats = self.features.object_features(fmap, boxes, frame_idx)
        norm = normalized_boxes(boxes, video)
        prior_logits = None
        if self.mode == "predcls":
            dist = F.one_hot(gt_labels, self.num_classes).to(feats.dtype)
            track_labels = gt_labels
        else:
            if base_dist is None:  # no detector scores (GT boxes): the feature source's distribution, as STTran
                base_dist = class_prior(self.features, feats, self.num_classes)
            prior_logits = self.prior_classifier(feats, base_dist, norm) if len(boxes) else \
                feats.new_zeros((0, self.num_classes))
            dist = prior_logits.softmax(1)
            track_labels = dist.argmax(1)
        track_ids = track_boxes(self.tracking, boxes=norm, frame_idx=frame_idx, labels=track_labels, features=feats,
                                frame_numbers=frame_numbers(video), tracker=self.tracker).to(feats.device)
        x = torch.cat([feats, dist @ self.class_embed.weight, self.box_embed(box_xyxy_to_cxcywh(norm))], 1) \
            if len(boxes) else feats.new_zeros((0, self.object_dim))
        refined = self.tracklet_encoder(x, track_ids, frame_idx)
        logits = None
        if self.object_head is not None:
            logits = self.object_head(refined) if len(boxes) else feats.new_zeros((0, self.num_classes))
        return refined, track_ids, prior_logits, logits

    def _relation_heads(self, fmap, boxes, frame_idx, refined, labels, pairs, track_ids):
        """Relation vector of each pair -> spatial encoder per frame -> temporal encoder per tracklet -> logits."""
        union = self.features.union_features(fmap, union_box(boxes[pairs[:, 0]], boxes[pairs[:, 1]]),
                                             frame_idx[pairs[:, 0]])
        rel = self.relation(refined, union, boxes, labels, pairs)
        pair_frame = frame_idx[pairs[:, 1]]
        h = self.spatial_encoder(rel, pair_frame)
        h = self.temporal_encoder(h, track_ids[pairs[:, 1]], pair_frame)
        return self.attention_head(h), self.spatial_head(h), self.contacting_head(h)

    def _video_losses(self, video: dict) -> Dict[str, torch.Tensor]:
        images = check_video_images(video, "DSGDETR")
        fmap = self.features.frame_features(images)
        gt = gather_gt_boxes(video, self.device)
        losses: Dict[str, torch.Tensor] = {}
        if self.detector is not None and self.detector.trainable:
            losses.update(self.detector.losses(fmap, images.shape[-2:], gt.boxes, gt.labels, gt.frame_idx))
        refined, track_ids, prior_logits, logits = self._object_stage(video, fmap, gt.boxes, gt.frame_idx,
                                                                      gt_labels=gt.labels)
        labels = gt.labels
        if logits is not None:
            losses["loss_object"] = self.object_loss_weight * F.cross_entropy(logits, gt.labels)
            losses["loss_object_prior"] = self.object_loss_weight * F.cross_entropy(prior_logits, gt.labels)
            if self.predicted_labels_in_training:
                # The person row keeps its label; objects take their best non-person class.
                predicted = logits.detach()[:, 1:].argmax(1) + 1
                labels = torch.where(gt.rows == 0, gt.labels, predicted)
        pairs = training_pairs(gt)
        targets = video_relation_targets(video, gt, pairs, self.groups)
        heads = self._relation_heads(fmap, gt.boxes, gt.frame_idx, refined, labels, pairs, track_ids)
        losses.update(relation_losses(heads, targets, self.multi_label_loss))
        return losses

    @torch.no_grad()
    def _video_inference(self, video: dict) -> dict:
        images = check_video_images(video, "DSGDETR")
        fmap = self.features.frame_features(images)
        num_frames = len(video["frames"])
        # The tracker and tracklet stage pool their own object features, so a detector's are not used here.
        boxes, original, gt_labels, frame_idx, det_dist, _ = inference_boxes(
            video, images, fmap, self.mode, self.detector, self.device)
        refined, track_ids, _, logits = self._object_stage(video, fmap, boxes, frame_idx, gt_labels=gt_labels,
                                                           base_dist=det_dist)
        if self.mode == "predcls":
            labels, scores = gt_labels, torch.ones(len(boxes), device=boxes.device)
            person, is_person = predcls_persons(frame_idx, num_frames)
        else:
            labels, scores, person, is_person = assign_person_labels(logits.softmax(1), frame_idx, num_frames)
        pairs = pairs_of_persons(person, is_person, frame_idx)
        if len(pairs):
            att, spa, con = self._relation_heads(fmap, boxes, frame_idx, refined, labels, pairs, track_ids)
            att, spa, con = att.softmax(1), spa.sigmoid(), con.sigmoid()
        else:
            att, spa, con = (boxes.new_zeros((0, g)) for g in self.groups)
        frames = split_frames(num_frames, frame_idx, original, labels, scores, pairs,
                              attention=att, spatial=spa, contacting=con)
        frame_cpu, ids_cpu = frame_idx.cpu(), track_ids.cpu()
        for t, frame in enumerate(frames):
            frame["track_ids"] = ids_cpu[frame_cpu == t]
        return {"frames": frames}
