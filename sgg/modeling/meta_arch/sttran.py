"""STTran (Cong et al., ICCV 2021): spatial-temporal transformer for video scene graph generation on Action Genome.

Per video (one dict from :class:`~sgg.data.video_mapper.ActionGenomeMapper`)::

    frames (T, 3, H', W') --backbone--> feature maps (T, C, H'/s, W'/s)
    boxes: GT (PredCls / SGCls) or detections (SGDet, :class:`~sgg.modeling.video_detector.VideoObjectDetector`)
    object features   = RoIAlign(box) -> Linear -> (N, OBJ_FEATURE_DIM)
    object classifier (SGCls / SGDet): [feature, class-distribution @ word embedding, box position] -> MLP -> 36 logits
    pairs (P, 2) = (person, object) in every frame
    relation vector   = [ subject fc (VISUAL_DIM) | object fc (VISUAL_DIM) |
                          union fc(conv1x1(RoIAlign(union box)) + conv(2 x 27 x 27 box masks)) (VISUAL_DIM) |
                          subject word embedding (EMBED_DIM) | object word embedding (EMBED_DIM) ]
                        (STTran: 3 x 512 + 2 x 200 = 1936)
    spatial encoder   : ENC_LAYERS transformer encoder layers over the pairs of one frame
    temporal decoder  : DEC_LAYERS layers over sliding windows of TEMPORAL_WINDOW consecutive frames (stride 1), with
                        a learned frame encoding per window position added to queries and keys; frame t takes its
                        output from the window that ends at t (STTran's "latter" mode; the first frames from window 0)
    heads             : attention (3, softmax, cross-entropy), spatial (6) and contacting (17) (sigmoid, multi-label
                        margin loss as STTran's default, or BCE)

Training returns ``{"loss_attention", "loss_spatial", "loss_contacting"}`` (+ ``"loss_object"`` in SGCls / SGDet, +
the detector's losses in SGDet when it is trained). Evaluation returns per video ``{"frames": [{boxes (N, 4) xyxy
ORIGINAL pixels, labels, scores, pairs (P, 2) [person, object], attention (P, 3), spatial (P, 6),
contacting (P, 17)}, ...]}``, the format ``video_scene_graph`` evaluates.

Differences from the reference implementation (on purpose, documented in docs/sttran.md): the backbone and RoIAlign
come from torchvision (no compiled ops of our own); without a detector the SGCls object classifier starts from a
uniform class distribution instead of Faster R-CNN's; box positions fed to the object classifier are normalised by the
frame size; SGDet training uses the GT boxes for the relation heads (STTran's "SUPPLY" of every GT box) while the
detector learns from its own losses; SGCls / SGDet evaluation use the object classifier's labels (the reference uses
the detector's labels in SGDet evaluation and its ad-hoc duplicate-class suppression in SGCls).
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

from ..build import META_ARCH_REGISTRY, build_video_detector, build_video_features
from ..layers import SpatialTemporalTransformer
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

__all__ = ["STTran", "suppress_duplicate_classes"]

logger = logging.getLogger(__name__)


def suppress_duplicate_classes(probs: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                               is_person: torch.Tensor, frame_idx: torch.Tensor, num_frames: int):
    """The reference's SGCls test-time rule ("drop repeat overlap"): per frame, among the boxes carrying the frame's
    most frequent label (the smallest on ties), all but the most confident one get that class zeroed and take their
    next-best class (the person class included; such a box then leaves the pairs, the frame's person stays).

    ``probs`` ``(N, K)`` class probabilities, ``labels`` / ``scores`` / ``is_person`` ``(N,)`` from
    :func:`~sgg.modeling.video_sgg.assign_person_labels`. Returns new ``labels``, ``scores``, ``is_person`` (the
    latter marks every box to keep out of pairs).
    """
    probs, labels, scores = probs.clone(), labels.clone(), scores.clone()
    excluded = is_person.clone()
    for t in range(num_frames):
        rows = torch.nonzero(frame_idx == t).squeeze(1)
        if len(rows) < 2:
            continue
        mode = int(torch.bincount(labels[rows]).argmax())
        same = rows[labels[rows] == mode]
        for j in same[torch.argsort(probs[same, mode])[:-1]].tolist():
            probs[j, mode] = 0
            scores[j], labels[j] = probs[j].max(0)
            if labels[j] == 0:
                excluded[j] = True
    return labels, scores, excluded


# --------------------------------------------------------------------------------------------------- the model
@META_ARCH_REGISTRY.register()
class STTran(VideoSGGModel):
    """Spatial-temporal transformer for video SGG in PredCls, SGCls or SGDet (``TEST.RELATION.MODE``).

    Input: a list of video dicts (``ActionGenomeMapper`` output: ``images`` uint8 ``(T, 3, H', W')``,
    ``image_scale``, ``frames`` with ``boxes`` / ``gt_boxes`` / ``labels`` / ``relations``). See the module docstring
    for the architecture, outputs and the differences from the reference code.
    """

    @configurable
    def __init__(self, *, features: nn.Module, mode: str, num_classes: int = 36,
                 predicate_groups: Sequence[int] = (3, 6, 17), pooler_resolution: int = 7, union_dim: int = 256,
                 visual_dim: int = 512, embed_dim: int = 200,
                 word_vectors: str = "", class_names: Sequence[str] = (), enc_layers: int = 1,
                 dec_layers: int = 3, num_heads: int = 8, dim_feedforward: int = 2048, dropout: float = 0.1,
                 temporal_window: int = 2, mask_size: int = 27, multi_label_loss: str = "margin",
                 obj_classifier_hidden: int = 1024, pos_dim: int = 128, object_loss_weight: float = 1.0,
                 detector: Optional[nn.Module] = None, box_mask_rule: str = "exact",
                 obj_box_position: str = "normalized", sgdet_labels: str = "classifier", sgcls_dedup: bool = False,
                 sgdet_train_boxes: str = "gt", sgdet_supply: bool = True, sgdet_assign_iou: float = 0.5):
        """
        Args:
            features: the feature source (``MODEL.VIDEO_FEATURES.NAME``, e.g.
                :class:`~sgg.modeling.video_sgg.BackboneRoIFeatures`): frame maps, object and union-box features.
            mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"``.
            num_classes: object classes incl. the person (AG: 36, person = 0).
            predicate_groups: sizes of the attention / spatial / contacting groups (AG: 3, 6, 17).
            pooler_resolution: union RoI size of the feature source (7; the box-mask conv gives 7 x 7 from 27).
            union_dim: channels of the union-box map (STTran: 256).
            visual_dim: width of the subject / object / union projections (STTran: 512).
            embed_dim: word-embedding width (STTran: 200, GloVe 6B 200d).
            word_vectors: local GloVe text file initialising the embeddings; "" = learned from random init.
            class_names: object class names (for ``word_vectors``).
            enc_layers / dec_layers: spatial encoder / temporal decoder depth (STTran: 1 / 3).
            temporal_window: frames per sliding window of the temporal decoder (STTran: 2).
            multi_label_loss: ``"margin"`` (STTran's default MultiLabelMarginLoss on sigmoid outputs) or ``"bce"``.
            detector: SGDet only, a ``MODEL.VIDEO_DETECTOR.NAME`` detector (:mod:`sgg.modeling.video_detector`)
                sharing the feature source's ``backbone``.
            box_mask_rule: box-mask rasterisation, ``"exact"`` area or the reference's ``"sttran"`` rule.
            obj_box_position: object-classifier box input, ``"normalized"`` (cx, cy, w, h as fractions of the frame)
                or ``"pixels"`` (the reference's ``center_size``: original-frame pixels, w = x2 - x1 + 1).
            sgdet_labels: SGDet evaluation labels from the object ``"classifier"`` or (the reference) from the
                ``"detector"``'s distribution, with the person rule.
            sgcls_dedup: SGCls evaluation with the reference's duplicate-class suppression (per frame, the boxes of
                the most frequent label but its most confident one move to their next-best class).
            sgdet_train_boxes: SGDet training on the ``"gt"`` boxes, or (the reference) on the ``"detections"``
                assigned to them (IoU > ``sgdet_assign_iou``), GT boxes no detection found being supplied
                (``sgdet_supply``, upstream's ``use_SUPPLY``) or dropped
                (:func:`~sgg.modeling.video_sgg.sgdet_training_boxes`).
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"STTran: TEST.RELATION.MODE must be one of {MODES}, got {mode!r}.")
        if mode == "sgdet" and detector is None:
            raise ValueError("STTran in sgdet mode needs a detector (MODEL.VIDEO_DETECTOR); none was given.")
        if multi_label_loss not in ("margin", "bce"):
            raise ValueError(f"MODEL.STTRAN.MULTI_LABEL_LOSS must be 'margin' or 'bce', got {multi_label_loss!r}.")
        for name, value, allowed in (("BOX_MASK_RULE", box_mask_rule, ("exact", "sttran")),
                                     ("OBJ_BOX_POSITION", obj_box_position, ("normalized", "pixels")),
                                     ("SGDET_LABELS", sgdet_labels, ("classifier", "detector")),
                                     ("SGDET_TRAIN_BOXES", sgdet_train_boxes, ("gt", "detections"))):
            if value not in allowed:
                raise ValueError(f"MODEL.STTRAN.{name} must be one of {allowed}, got {value!r}.")
        self.obj_box_position = obj_box_position
        self.sgdet_labels = sgdet_labels
        self.sgcls_dedup = bool(sgcls_dedup)
        self.sgdet_train_boxes, self.sgdet_supply = sgdet_train_boxes, bool(sgdet_supply)
        self.sgdet_assign_iou = float(sgdet_assign_iou)
        if len(predicate_groups) != 3:
            raise ValueError(f"MODEL.STTRAN.PREDICATE_GROUPS needs 3 sizes (attention, spatial, contacting), "
                             f"got {tuple(predicate_groups)}.")
        self.mode = mode
        self.num_classes = num_classes
        self.groups = tuple(int(g) for g in predicate_groups)
        self.multi_label_loss = multi_label_loss
        self.object_loss_weight = object_loss_weight
        self.features = features
        self.detector = detector

        embedding = None
        if word_vectors:
            if len(class_names) != num_classes:
                raise ValueError(f"MODEL.STTRAN.WORD_VECTORS needs {num_classes} class names, got {len(class_names)}.")
            embedding, missing = load_word_vectors(word_vectors, class_names, embed_dim)
            logger.info("STTran: class embeddings from '%s' (%d / %d classes found%s).", word_vectors,
                        num_classes - len(missing), num_classes, f"; random: {missing}" if missing else "")
        self.relation = RelationFeatures(
            object_dim=self.features.object_dim, union_channels=self.features.union_channels, union_dim=union_dim,
            visual_dim=visual_dim, embed_dim=embed_dim, num_classes=num_classes, pooler_resolution=pooler_resolution,
            mask_size=mask_size, embedding=embedding, mask_rule=box_mask_rule)
        self.rel_dim = self.relation.dim
        self.transformer = SpatialTemporalTransformer(
            dim=self.rel_dim, enc_layers=enc_layers, dec_layers=dec_layers, num_heads=num_heads,
            dim_feedforward=dim_feedforward, dropout=dropout, window=temporal_window)
        self.attention_head = nn.Linear(self.rel_dim, self.groups[0])
        self.spatial_head = nn.Linear(self.rel_dim, self.groups[1])
        self.contacting_head = nn.Linear(self.rel_dim, self.groups[2])
        self.object_classifier = None
        if mode != "predcls":
            self.object_classifier = ObjectClassifier(
                feature_dim=self.features.object_dim, num_classes=num_classes, embed_dim=embed_dim, pos_dim=pos_dim,
                hidden_dim=obj_classifier_hidden, embedding=embedding, dropout=dropout)

    @classmethod
    def from_config(cls, cfg, features: Optional[nn.Module] = None, detector: Optional[nn.Module] = None) -> dict:
        """Keyword arguments from ``MODEL.STTRAN``, ``MODEL.VIDEO_FEATURES``, ``TEST.RELATION.MODE`` (+ the detector).

        ``features`` / ``detector`` given explicitly replace the ones the config would build.
        """
        s = cfg.MODEL.STTRAN
        mode = cfg.TEST.RELATION.MODE
        if features is None:
            features = build_video_features(cfg)
        if mode == "sgdet" and detector is None:
            detector = build_video_detector(cfg, features.backbone)
        return {
            "features": features, "mode": mode, "num_classes": s.NUM_CLASSES,
            "predicate_groups": tuple(s.PREDICATE_GROUPS), "pooler_resolution": s.POOLER_RESOLUTION,
            "union_dim": s.UNION_DIM, "visual_dim": s.VISUAL_DIM,
            "embed_dim": s.EMBED_DIM, "word_vectors": s.WORD_VECTORS,
            "class_names": AG_OBJECT_CLASSES if s.NUM_CLASSES == len(AG_OBJECT_CLASSES) else (),
            "enc_layers": s.ENC_LAYERS, "dec_layers": s.DEC_LAYERS, "num_heads": s.NUM_HEADS,
            "dim_feedforward": s.DIM_FEEDFORWARD, "dropout": s.DROPOUT, "temporal_window": s.TEMPORAL_WINDOW,
            "mask_size": s.MASK_SIZE, "multi_label_loss": s.MULTI_LABEL_LOSS,
            "obj_classifier_hidden": s.OBJ_CLASSIFIER_HIDDEN, "pos_dim": s.POS_DIM,
            "object_loss_weight": s.OBJECT_LOSS_WEIGHT, "detector": detector, "box_mask_rule": s.BOX_MASK_RULE,
            "obj_box_position": s.OBJ_BOX_POSITION, "sgdet_labels": s.SGDET_LABELS, "sgcls_dedup": s.SGCLS_DEDUP,
            **sgdet_training_options(cfg),
        }

    # ------------------------------------------------------------------------------------------ per video

    def _box_position(self, boxes: torch.Tensor, original: torch.Tensor, video: dict) -> torch.Tensor:
        """The object classifier's box input (``OBJ_BOX_POSITION``): normalised boxes, or the reference's original
        pixels with "+1" sizes (its ``center_size`` = cx, cy, w, h of (x1, y1, x2 + 1, y2 + 1))."""
        if self.obj_box_position == "pixels":
            return original + original.new_tensor([0.0, 0.0, 1.0, 1.0])
        return normalized_boxes(boxes, video)

    def _relation_heads(self, fmap, boxes, frame_idx, obj_feats, labels, pairs, num_frames: int):
        """Relation vector of each pair -> spatial-temporal transformer -> attention / spatial / contacting logits."""
        union = self.features.union_features(fmap, union_box(boxes[pairs[:, 0]], boxes[pairs[:, 1]]),
                                             frame_idx[pairs[:, 0]])
        rel = self.relation(obj_feats, union, boxes, labels, pairs)
        h = self.transformer(rel, frame_idx[pairs[:, 1]], num_frames)
        return self.attention_head(h), self.spatial_head(h), self.contacting_head(h)

    def _video_losses(self, video: dict) -> Dict[str, torch.Tensor]:
        images = check_video_images(video, "STTran")
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
        if self.object_classifier is not None and len(gt.boxes):
            prior = class_prior(self.features, obj_feats, self.num_classes)
            logits = self.object_classifier(obj_feats, prior, self._box_position(gt.boxes, gt.original, video))
            losses["loss_object"] = self.object_loss_weight * F.cross_entropy(logits, gt.labels)
        # Pairs: the person (row 0) with every object of the frame; GT labels feed the embeddings (as STTran).
        pairs = training_pairs(gt)
        targets = video_relation_targets(video, gt, pairs, self.groups)
        heads = self._relation_heads(fmap, gt.boxes, gt.frame_idx, obj_feats, gt.labels, pairs, len(video["frames"]))
        losses.update(relation_losses(heads, targets, self.multi_label_loss))
        return losses

    @torch.no_grad()
    def _video_inference(self, video: dict) -> dict:
        images = check_video_images(video, "STTran")
        fmap = self.features.frame_features(images)
        num_frames = len(video["frames"])
        boxes, original, labels, frame_idx, det_dist, det_feats = inference_boxes(
            video, images, fmap, self.mode, self.detector, self.device)
        # The detector's own features of its detections when it has them (STTran: the proposals' RoI features).
        obj_feats = det_feats if det_feats is not None else self.features.object_features(fmap, boxes, frame_idx)
        if self.mode == "predcls":
            scores = torch.ones(len(boxes), device=self.device)
            person, is_person = predcls_persons(frame_idx, num_frames)
        elif self.mode == "sgdet" and self.sgdet_labels == "detector":
            labels, scores, person, is_person = assign_person_labels(det_dist, frame_idx, num_frames)
        else:
            prior = det_dist if self.mode == "sgdet" else class_prior(self.features, obj_feats, self.num_classes)
            logits = self.object_classifier(obj_feats, prior, self._box_position(boxes, original, video)) \
                if len(boxes) else boxes.new_zeros((0, self.num_classes))
            probs = logits.softmax(1)
            labels, scores, person, is_person = assign_person_labels(probs, frame_idx, num_frames)
            if self.mode == "sgcls" and self.sgcls_dedup:
                labels, scores, is_person = suppress_duplicate_classes(probs, labels, scores, is_person, frame_idx,
                                                                       num_frames)
        pairs = pairs_of_persons(person, is_person, frame_idx)
        if len(pairs):
            att, spa, con = self._relation_heads(fmap, boxes, frame_idx, obj_feats, labels, pairs, num_frames)
            att, spa, con = att.softmax(1), spa.sigmoid(), con.sigmoid()
        else:
            att, spa, con = (boxes.new_zeros((0, g)) for g in self.groups)
        return {"frames": split_frames(num_frames, frame_idx, original, labels, scores, pairs,
                                       attention=att, spatial=spa, contacting=con)}
