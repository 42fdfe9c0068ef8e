"""Components of the STTran family of video SGG models (STTran, and the models built on its pipeline).

A model of this family, per video (one dict from :class:`~sgg.data.video_mapper.ActionGenomeMapper`)::

    frames --feature source--> per-frame feature maps; object features of boxes; union-box features of pairs
    boxes: GT (PredCls / SGCls) or detections (SGDet)
    pairs (P, 2) = (person, object) in every frame
    relation vector = RelationFeatures(...)  (STTran: [subj 512 | obj 512 | union 512 | subj emb 200 | obj emb 200])
    then a model-specific relation network and heads

The pieces here are shared by every model of the family, so each model file only states what makes it different:

* :class:`BackboneRoIFeatures` — the feature source: a trainable (or frozen) backbone + torchvision RoIAlign + a
  linear box head. Its interface (``frame_features``, ``object_features``, ``union_features``, ``object_dim``,
  ``union_channels``, ``backbone``) is what a model uses, so another source (e.g. a Faster R-CNN with its own RoI
  head) can stand in.
* :class:`RelationFeatures` — STTran's relation vector from object features, union features and box masks.
* :class:`ObjectClassifier` — STTran's SGCls / SGDet object classifier.
* functions for the data side of a video: GT boxes (:func:`gather_gt_boxes`), training pairs and targets
  (:func:`training_pairs`, :func:`video_relation_targets`), PredCls persons (:func:`predcls_persons`), STTran's person
  rule for predicted labels (:func:`assign_person_labels`), the per-frame output format (:func:`split_frames`), and the
  multi-label losses (:func:`multi_label_loss`).
"""

from __future__ import annotations

import logging
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from sgg.config import configurable
from sgg.structures.boxes import box_xyxy_to_cxcywh, pairwise_iou, union_box

from .build import VIDEO_FEATURES_REGISTRY, build_backbone

__all__ = ["MODES", "VideoSGGModel", "pair_box_masks", "load_word_vectors", "relation_targets",
           "BackboneRoIFeatures", "BoxMaskConv", "RelationFeatures", "ObjectClassifier", "VideoBoxes",
           "check_video_images", "gather_gt_boxes", "inference_boxes", "class_prior", "normalized_boxes",
           "training_pairs", "sgdet_training_boxes", "detected_training_boxes", "SGDET_TRAIN_BOXES",
           "sgdet_training_options",
           "video_relation_targets", "predcls_persons", "assign_person_labels", "pairs_of_persons", "split_frames",
           "multi_label_loss", "relation_losses", "attention_loss"]

logger = logging.getLogger(__name__)

MODES = ("predcls", "sgcls", "sgdet")
SGDET_TRAIN_BOXES = ("gt", "detections")  # MODEL.STTRAN.SGDET_TRAIN_BOXES


def sgdet_training_options(cfg) -> dict:
    """``sgdet_train_boxes`` / ``sgdet_supply`` / ``sgdet_assign_iou`` from ``MODEL.STTRAN.SGDET_*`` (checked)."""
    s = cfg.MODEL.STTRAN
    if s.SGDET_TRAIN_BOXES not in SGDET_TRAIN_BOXES:
        raise ValueError(f"MODEL.STTRAN.SGDET_TRAIN_BOXES must be one of {SGDET_TRAIN_BOXES}, got "
                         f"{s.SGDET_TRAIN_BOXES!r}.")
    return {"sgdet_train_boxes": s.SGDET_TRAIN_BOXES, "sgdet_supply": bool(s.SGDET_SUPPLY),
            "sgdet_assign_iou": float(s.SGDET_ASSIGN_IOU)}


class VideoSGGModel(nn.Module):
    """What every STTran-family meta-architecture shares: the batch loop and the mode's input contract.

    A subclass sets ``self.mode`` (one of :data:`MODES`) and defines ``_video_losses(video) -> {name: loss}`` and
    ``_video_inference(video) -> {"frames": [...]}`` for one mapped video; :meth:`forward` averages the losses over
    the videos of a batch in training and returns one prediction dict per video in evaluation.
    """

    mode: str

    @property
    def needs_gt_boxes(self) -> bool:
        """True when inference scores given boxes (PredCls / SGCls), so an unannotated input cannot be predicted."""
        return self.mode != "sgdet"

    @property
    def device(self) -> torch.device:
        """The device the model's parameters live on."""
        return next(self.parameters()).device

    def forward(self, batched_inputs: List[dict]):
        """Training: dict of losses averaged over the videos. Eval: one ``{"frames": [...]}`` dict per video."""
        if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
            raise ValueError(f"{type(self).__name__} expects a non-empty list of video dicts (ActionGenomeMapper "
                             "output).")
        if self.training:
            losses: Dict[str, torch.Tensor] = {}
            for video in batched_inputs:
                for name, value in self._video_losses(video).items():
                    losses[name] = losses.get(name, 0.0) + value / len(batched_inputs)
            return losses
        return [self._video_inference(video) for video in batched_inputs]


# ------------------------------------------------------------------------------------------------ geometry, words
def pair_box_masks(sub_boxes: torch.Tensor, obj_boxes: torch.Tensor, size: int = 27,
                   rule: str = "exact") -> torch.Tensor:
    """Rasterise each (subject, object) box pair inside its union box: ``(P, 2, size, size)`` in ``[-0.5, 0.5]``.

    Cell value = the fraction of the cell covered by the box, minus 0.5 as in STTran's ``draw_union_boxes(...) - 0.5``.
    ``rule="exact"``: exact area, so small boxes still show; ``rule="sttran"``: the reference's per-axis product
    ``clip(k + 1 - x1) * clip(x2 - k)`` (identical unless a box starts and ends inside one cell). Channel 0 is the
    subject, channel 1 the object; boxes are xyxy in any common unit.
    """
    if rule not in ("exact", "sttran"):
        raise ValueError(f"pair_box_masks: rule must be 'exact' or 'sttran' (MODEL.STTRAN.BOX_MASK_RULE), "
                         f"got {rule!r}.")
    if sub_boxes.shape != obj_boxes.shape or sub_boxes.ndim != 2 or sub_boxes.shape[-1] != 4:
        raise ValueError(f"pair_box_masks: expected two (P, 4) xyxy tensors, got {tuple(sub_boxes.shape)} and "
                         f"{tuple(obj_boxes.shape)}.")
    union = union_box(sub_boxes, obj_boxes)
    origin = union[:, None, :2].repeat(1, 1, 2)  # (P, 1, 4) as (x, y, x, y)
    extent = (union[:, 2:] - union[:, :2]).clamp(min=1e-6).repeat(1, 2)[:, None]  # (P, 1, 4)
    boxes = (torch.stack([sub_boxes, obj_boxes], 1) - origin) / extent * size  # (P, 2, 4) in grid units
    cells = torch.arange(size, device=boxes.device, dtype=boxes.dtype)

    def coverage(lo, hi):  # (P, 2) -> (P, 2, size): overlap of [lo, hi] with each unit cell [k, k + 1]
        if rule == "sttran":
            return (cells + 1 - lo[..., None]).clamp(0, 1) * (hi[..., None] - cells).clamp(0, 1)
        return (torch.minimum(hi[..., None], cells + 1) - torch.maximum(lo[..., None], cells)).clamp(0, 1)

    cov_x = coverage(boxes[..., 0], boxes[..., 2])
    cov_y = coverage(boxes[..., 1], boxes[..., 3])
    return cov_y[..., :, None] * cov_x[..., None, :] - 0.5


def load_word_vectors(path: str, names: Sequence[str], dim: int) -> Tuple[torch.Tensor, List[str]]:
    """Embeddings ``(len(names), dim)`` for class names from a local GloVe-format text file (``word v1 ... vD``).

    A name made of several words (``"closet/cabinet"``, ``"paper/notebook"``, ``"sofa/couch"``, ``"looking_at"``) gets
    the mean of its words' vectors, like STTran's ``obj_edge_vectors``. Names with no known word get a small random
    vector and are returned in the second element so the caller can log them. Only the needed words are kept while the
    file is streamed, so a full ``glove.6B.200d.txt`` loads without holding it in memory.
    """
    words = {name: [w for w in re.split(r"[/_ ]+", name.lower()) if w] for name in names}
    needed = {w for ws in words.values() for w in ws}
    found: Dict[str, torch.Tensor] = {}
    try:
        with open(path, encoding="utf8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                token, _, rest = line.rstrip().partition(" ")
                if token not in needed or token in found:
                    continue
                values = rest.split(" ")
                if len(values) != dim:
                    raise ValueError(f"Word-vector file '{path}', line {line_no}: '{token}' has {len(values)} values, "
                                     f"expected {dim} (MODEL.STTRAN.EMBED_DIM).")
                found[token] = torch.tensor([float(v) for v in values])
    except FileNotFoundError:
        raise FileNotFoundError(f"Word-vector file not found: '{path}' (MODEL.STTRAN.WORD_VECTORS). Give a local "
                                "GloVe text file such as glove.6B.200d.txt, or '' for learned embeddings.") from None
    out = torch.randn(len(names), dim) * 0.1
    missing = []
    for i, name in enumerate(names):
        vecs = [found[w] for w in words[name] if w in found]
        if vecs:
            out[i] = torch.stack(vecs).mean(0)
        else:
            missing.append(name)
    return out, missing


def relation_targets(frame: dict, object_rows: torch.Tensor, groups: Sequence[int]) -> Tuple[torch.Tensor, ...]:
    """Targets of the pairs (person = row 0, ``object_rows``) of one GT frame.

    Returns ``attention`` int64 ``(P,)`` (the first attention predicate of the pair, -100 = none, ignored by the loss),
    ``spatial`` float ``(P, groups[1])`` and ``contacting`` float ``(P, groups[2])`` multi-hot. Relations follow AG's
    convention: attention / contacting ``[0, object, predicate]``, spatial ``[object, 0, predicate]``.
    """
    n_att, n_spa, n_con = groups
    p = len(object_rows)
    attention = torch.full((p,), -100, dtype=torch.long)
    spatial = torch.zeros(p, n_spa)
    contacting = torch.zeros(p, n_con)
    row_to_pair = {int(r): i for i, r in enumerate(object_rows.tolist())}
    rels = torch.as_tensor(frame["relations"]).reshape(-1, 3).tolist()
    for sub, obj, pred in rels:
        if pred < n_att:
            i = row_to_pair.get(obj)
            if i is not None and sub == 0 and attention[i] < 0:
                attention[i] = pred
        elif pred < n_att + n_spa:
            i = row_to_pair.get(sub)
            if i is not None and obj == 0:
                spatial[i, pred - n_att] = 1.0
        elif pred < n_att + n_spa + n_con:
            i = row_to_pair.get(obj)
            if i is not None and sub == 0:
                contacting[i, pred - n_att - n_spa] = 1.0
        else:
            raise ValueError(f"Frame '{frame.get('frame_key')}': predicate {pred} is outside the "
                             f"{n_att + n_spa + n_con} predicates of MODEL.STTRAN.PREDICATE_GROUPS {tuple(groups)}.")
    return attention, spatial, contacting


# ------------------------------------------------------------------------------------------------ modules
@VIDEO_FEATURES_REGISTRY.register()
class BackboneRoIFeatures(nn.Module):
    """Feature source from a backbone: frames -> feature maps; boxes -> RoIAlign -> Linear + ReLU -> object features;
    union boxes -> RoIAlign maps.

    Boxes are xyxy in the resized-frame pixels the maps were computed on; ``frame_idx`` (N,) says which frame each box
    is in. Frames arrive as the mapper gives them (uint8 RGB ``(T, 3, H, W)``) and are normalised here.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, object_dim: int, pooler_resolution: int = 7,
                 freeze_backbone: bool = False, frame_chunk: int = 10,
                 pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375)):
        """
        Args:
            backbone: ``forward(images (B, 3, H, W) normalised) -> (B, C, H/s, W/s)`` with ``out_channels``, ``stride``.
            object_dim: width of the object feature after the box head.
            pooler_resolution: RoIAlign output size (STTran: 7).
            freeze_backbone: keep the backbone fixed, in eval mode (STTran freezes its AG-trained detector).
            frame_chunk: frames per backbone forward (bounds memory on long videos).
            pixel_mean / pixel_std: RGB normalisation, in 0-255 units.
        """
        super().__init__()
        for attr in ("out_channels", "stride"):
            if not hasattr(backbone, attr):
                raise ValueError(f"The video model's backbone {type(backbone).__name__} lacks the '{attr}' attribute.")
        self.backbone = backbone
        self.pooler_resolution = pooler_resolution
        self.freeze_backbone = freeze_backbone
        self.frame_chunk = max(int(frame_chunk), 1)
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        c, r = backbone.out_channels, pooler_resolution
        self.box_head = nn.Sequential(nn.Flatten(), nn.Linear(c * r * r, object_dim), nn.ReLU())
        self.object_dim = object_dim
        self.union_channels = c

    @classmethod
    def from_config(cls, cfg) -> dict:
        """``MODEL.BACKBONE`` (built here), ``MODEL.STTRAN.{OBJ_FEATURE_DIM, POOLER_RESOLUTION, FREEZE_BACKBONE,
        FRAME_CHUNK}``, ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``."""
        s = cfg.MODEL.STTRAN
        return {"backbone": build_backbone(cfg), "object_dim": s.OBJ_FEATURE_DIM,
                "pooler_resolution": s.POOLER_RESOLUTION, "freeze_backbone": s.FREEZE_BACKBONE,
                "frame_chunk": s.FRAME_CHUNK, "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
                "pixel_std": tuple(cfg.MODEL.PIXEL_STD)}

    @property
    def stride(self) -> int:
        """Feature-map stride in resized-frame pixels."""
        return self.backbone.stride

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``, but a frozen backbone stays in eval mode (its BatchNorm statistics are fixed)."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 / float RGB frames ``(T, 3, H, W)`` (any device) -> feature maps ``(T, C, H/s, W/s)``."""
        device = self.pixel_mean.device
        maps = []
        with torch.set_grad_enabled(self.training and not self.freeze_backbone and torch.is_grad_enabled()):
            for chunk in images.split(self.frame_chunk):
                x = (chunk.to(device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std
                maps.append(self.backbone(x))
        return torch.cat(maps)

    def _roi(self, fmap: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        rois = torch.cat([frame_idx[:, None].to(boxes.dtype), boxes], 1)
        return roi_align(fmap, rois, self.pooler_resolution, spatial_scale=1.0 / self.stride, sampling_ratio=2,
                         aligned=True)

    def object_features(self, fmap: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """Object features ``(N, object_dim)`` of boxes ``(N, 4)`` in frames ``frame_idx`` ``(N,)``."""
        if len(boxes) == 0:
            return boxes.new_zeros((0, self.object_dim))
        return self.box_head(self._roi(fmap, boxes, frame_idx))

    def union_features(self, fmap: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """RoIAlign maps ``(P, union_channels, R, R)`` of (union) boxes ``(P, 4)``."""
        return self._roi(fmap, boxes, frame_idx)


class BoxMaskConv(nn.Sequential):
    """STTran's box-mask conv: ``(P, 2, 27, 27)`` subject/object masks -> ``(P, channels, 7, 7)`` (stride-2 conv,
    stride-2 max-pool, 3 x 3 conv, each conv followed by ReLU + BatchNorm as the reference)."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Conv2d(2, channels // 2, 7, stride=2, padding=3), nn.ReLU(),
            nn.BatchNorm2d(channels // 2, momentum=0.01),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(channels // 2, channels, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(channels, momentum=0.01),
        )

    @staticmethod
    def output_size(size: int) -> int:
        """Side of the output map for ``size`` x ``size`` masks (27 -> 7)."""
        after_conv = (size + 2 * 3 - 7) // 2 + 1
        return (after_conv + 2 * 1 - 3) // 2 + 1


class RelationFeatures(nn.Module):
    """STTran's relation vector of (subject, object) pairs::

        [ subj_fc(f_s) | obj_fc(f_o) | union_fc(union_proj(U) + mask_conv(M)) | subj_embed(l_s) | obj_embed(l_o) ]

    ``f`` object features, ``U`` the union box's RoI maps, ``M`` the pair's box masks, ``l`` class labels.
    Width ``dim = 3 x visual_dim + 2 x embed_dim`` (STTran: 1936).
    """

    def __init__(self, *, object_dim: int, union_channels: int, union_dim: int = 256, visual_dim: int = 512,
                 embed_dim: int = 200, num_classes: int = 36, pooler_resolution: int = 7, mask_size: int = 27,
                 embedding: Optional[torch.Tensor] = None, mask_rule: str = "exact"):
        """
        Args:
            object_dim / union_channels: widths the feature source gives (object features, union maps).
            union_dim: channels of the union map after the 1 x 1 conv and the box-mask conv (STTran: 256).
            visual_dim / embed_dim: projection and word-embedding widths (STTran: 512 / 200).
            num_classes: object classes incl. the person.
            pooler_resolution / mask_size: union RoI size and box-mask raster (7 / 27; they must agree).
            embedding: ``(num_classes, embed_dim)`` initial class embeddings (GloVe), or None for random.
            mask_rule: box-mask rasterisation of :func:`pair_box_masks` (``"exact"`` or the reference's ``"sttran"``).
        """
        super().__init__()
        self.mask_rule = mask_rule
        mask_out = BoxMaskConv.output_size(mask_size)
        if mask_out != pooler_resolution:
            raise ValueError(f"MODEL.STTRAN.MASK_SIZE {mask_size} gives {mask_out} x {mask_out} box-mask maps, but "
                             f"the union RoI features are {pooler_resolution} x {pooler_resolution} "
                             "(POOLER_RESOLUTION); use MASK_SIZE 27 with 7.")
        r = pooler_resolution
        self.mask_size = mask_size
        self.union_proj = nn.Conv2d(union_channels, union_dim, 1)
        self.mask_conv = BoxMaskConv(union_dim)
        self.subj_fc = nn.Linear(object_dim, visual_dim)
        self.obj_fc = nn.Linear(object_dim, visual_dim)
        self.union_fc = nn.Linear(union_dim * r * r, visual_dim)
        self.subj_embed = nn.Embedding(num_classes, embed_dim)
        self.obj_embed = nn.Embedding(num_classes, embed_dim)
        if embedding is not None:
            self.subj_embed.weight.data.copy_(embedding)
            self.obj_embed.weight.data.copy_(embedding)
        self.dim = 3 * visual_dim + 2 * embed_dim

    def forward(self, obj_feats: torch.Tensor, union_maps: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                pairs: torch.Tensor) -> torch.Tensor:
        """``obj_feats`` ``(N, object_dim)``, ``union_maps`` ``(P, union_channels, R, R)`` of each pair's union box,
        ``boxes`` ``(N, 4)``, ``labels`` ``(N,)``, ``pairs`` ``(P, 2)`` rows -> ``(P, dim)``."""
        sub, obj = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
        vr = self.union_proj(union_maps) + self.mask_conv(pair_box_masks(sub, obj, self.mask_size, self.mask_rule))
        visual = torch.cat([self.subj_fc(obj_feats[pairs[:, 0]]), self.obj_fc(obj_feats[pairs[:, 1]]),
                            self.union_fc(vr.flatten(1))], 1)
        semantic = torch.cat([self.subj_embed(labels[pairs[:, 0]]), self.obj_embed(labels[pairs[:, 1]])], 1)
        return torch.cat([visual, semantic], 1)


class ObjectClassifier(nn.Module):
    """STTran's object classifier (SGCls / SGDet): ``[RoI feature, p(class) @ embedding, box position] -> MLP``.

    ``forward(features (N, F), distribution (N, K) probabilities, boxes_norm (N, 4) xyxy in [0, 1]) -> logits (N, K)``.
    """

    def __init__(self, *, feature_dim: int, num_classes: int, embed_dim: int, pos_dim: int, hidden_dim: int,
                 embedding: Optional[torch.Tensor] = None, dropout: float = 0.1):
        super().__init__()
        self.class_embed = nn.Embedding(num_classes, embed_dim)
        if embedding is not None:
            self.class_embed.weight.data.copy_(embedding)
        self.pos_embed = nn.Sequential(nn.BatchNorm1d(4, momentum=0.001), nn.Linear(4, pos_dim), nn.ReLU(),
                                       nn.Dropout(dropout))
        self.decoder = nn.Sequential(nn.Linear(feature_dim + embed_dim + pos_dim, hidden_dim),
                                     nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes))

    def forward(self, features: torch.Tensor, distribution: torch.Tensor, boxes_norm: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, K)``."""
        pos = self.pos_embed(box_xyxy_to_cxcywh(boxes_norm))
        return self.decoder(torch.cat([features, distribution @ self.class_embed.weight, pos], 1))


# ------------------------------------------------------------------------------------------------ the video's data
class VideoBoxes(NamedTuple):
    """All GT boxes of a video, flattened over frames (frames ascending; row 0 of every frame is its person)."""

    boxes: torch.Tensor  # (N, 4) xyxy in resized-frame pixels (the frames the model sees)
    original: torch.Tensor  # (N, 4) xyxy in original pixels (what predictions report)
    labels: torch.Tensor  # (N,) int64
    frame_idx: torch.Tensor  # (N,) int64
    rows: torch.Tensor  # (N,) int64, row of the box within its frame


def check_video_images(video: dict, model: str) -> torch.Tensor:
    """The video's ``images`` ``(T, 3, H, W)``, checked against its frame dicts (clear error naming the video)."""
    images = video.get("images")
    if images is None or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{model}: video '{video.get('video_id')}': 'images' must be a (T, 3, H, W) tensor "
                         "(use ActionGenomeMapper).")
    if images.shape[0] != len(video["frames"]):
        raise ValueError(f"{model}: video '{video.get('video_id')}': {images.shape[0]} images for "
                         f"{len(video['frames'])} frame dicts.")
    return images


def gather_gt_boxes(video: dict, device: torch.device) -> VideoBoxes:
    """The GT boxes of every frame of a mapped video (see :class:`VideoBoxes`), on ``device``."""
    resized, original, labels, frame_idx, rows = [], [], [], [], []
    for t, frame in enumerate(video["frames"]):
        boxes = torch.as_tensor(frame["gt_boxes"], dtype=torch.float32)
        n = boxes.shape[0]
        if n == 0:
            raise ValueError(f"Frame '{frame.get('frame_key')}' has no boxes; row 0 must be the person.")
        resized.append(boxes)
        original.append(torch.as_tensor(frame["boxes"], dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.as_tensor(frame["labels"], dtype=torch.long).reshape(-1))
        frame_idx.append(torch.full((n,), t, dtype=torch.long))
        rows.append(torch.arange(n))
    return VideoBoxes(*(torch.cat(x).to(device) for x in (resized, original, labels, frame_idx, rows)))


def class_prior(features: nn.Module, obj_feats: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The input class distribution ``(N, num_classes)`` of the SGCls / SGDet object classifier for boxes with
    features ``obj_feats`` ``(N, F)``: the feature source's ``class_distribution(obj_feats)`` when it has one
    (:class:`~sgg.modeling.ag_faster_rcnn.AGFasterRCNN`: its detector's, as STTran), else uniform."""
    distribution = getattr(features, "class_distribution", None)
    if distribution is not None:
        return distribution(obj_feats)
    return obj_feats.new_full((len(obj_feats), num_classes), 1.0 / num_classes)


def inference_boxes(video: dict, images: torch.Tensor, fmap: torch.Tensor, mode: str, detector: Optional[nn.Module],
                    device: torch.device):
    """The boxes a model scores at inference: SGDet = the detector's detections, else the video's GT boxes.

    Returns ``(boxes (N, 4) resized-frame pixels, original (N, 4) original pixels, labels (N,) or None (SGDet),
    frame_idx (N,), det_dist (N, K) or None, det_feats (N, F) or None)``; ``det_feats`` are the detector's own
    features of its detections when it computes them (the AG Faster R-CNN's RoI features, as upstream uses them).
    """
    if mode == "sgdet":
        scale = float(video.get("image_scale", 1.0))
        boxes, frame_idx, det_dist, det_feats = detector.detections(fmap, images.shape[-2:], scale)
        return boxes, boxes / scale, None, frame_idx, det_dist, det_feats
    gt = gather_gt_boxes(video, device)
    return gt.boxes, gt.original, gt.labels, gt.frame_idx, None, None


def normalized_boxes(boxes: torch.Tensor, video: dict) -> torch.Tensor:
    """Boxes in resized-frame pixels -> fractions of the frame size ``[0, 1]``."""
    h, w = video["images"].shape[-2:]
    return boxes / boxes.new_tensor([w, h, w, h])


def training_pairs(gt: VideoBoxes) -> torch.Tensor:
    """(person, object) pairs ``(P, 2)`` (rows into ``gt``): the person of each frame with every other box of it
    (a frame without its person, e.g. dropped by :func:`sgdet_training_boxes`, has no pair)."""
    person = torch.nonzero(gt.rows == 0).squeeze(1)
    objects = torch.nonzero(gt.rows > 0).squeeze(1)
    if len(gt.frame_idx) == 0:
        return objects.new_zeros((0, 2))
    person_of_frame = torch.full((int(gt.frame_idx.max()) + 1,), -1, dtype=torch.long, device=gt.frame_idx.device)
    person_of_frame[gt.frame_idx[person]] = person
    subject = person_of_frame[gt.frame_idx[objects]]
    return torch.stack([subject, objects], 1)[subject >= 0]


def _assign_detections(iou: torch.Tensor, threshold: float) -> List[int]:
    """Per GT box (columns of ``iou`` ``(D, G)``, column 0 = the person), the detection it is assigned to or -1.

    Upstream's ``assign_relations``: the person takes its best detection above ``threshold``; each object, in GT order,
    takes its best one above ``threshold``, or, when that one is already taken, its next best untaken one — above
    ``threshold`` here (upstream takes the next in IoU order even below it, which pairs a GT object with a box that
    does not overlap it)."""
    taken: set = set()
    out = []
    for g in range(iou.shape[1]):
        column = iou[:, g]
        found = -1
        if len(column) and bool((column > threshold).any()):
            order = torch.argsort(-column, stable=True).tolist()
            for d in order[:1] if g == 0 else order:
                if float(column[d]) <= threshold:
                    break
                if g == 0 or d not in taken:
                    found = d
                    break
        if found >= 0:
            taken.add(found)
        out.append(found)
    return out


def sgdet_training_boxes(gt: VideoBoxes, det_boxes: torch.Tensor, det_frame_idx: torch.Tensor,
                         det_feats: Optional[torch.Tensor], gt_feats_fn, *, image_scale: float,
                         iou_threshold: float = 0.5, supply: bool = True) -> Tuple[VideoBoxes, torch.Tensor]:
    """The boxes an SGDet model trains its relations on, as upstream STTran (``object_detector.py`` in training):
    each GT box takes the detection assigned to it (:func:`_assign_detections`, IoU in original pixels with the
    reference's +1 convention) and uses that detection's box and features; a GT box no detection found is
    *supplied* (``use_SUPPLY``: its own box and features ``gt_feats_fn(boxes, frame_idx)``) or, with
    ``supply=False``, dropped (with its relations; a frame whose person is dropped loses all its pairs).

    Args:
        gt: the video's GT boxes; det_boxes ``(D, 4)`` resized-frame pixels, det_frame_idx ``(D,)``, det_feats
            ``(D, F)`` or None (then every kept box's features come from ``gt_feats_fn`` on its box).
    Returns ``(boxes, feats)``: a :class:`VideoBoxes` with the GT labels / frames / rows (so :func:`training_pairs`
    and :func:`video_relation_targets` apply unchanged) and the kept boxes (detections' or GT), and their features.
    Detections assigned to no GT box are left out: they carry no relation, and sgg's 36-way object classifier has no
    background class for upstream's label 0 (documented in docs/sttran.md).
    """
    keep, source = [], []
    for t in torch.unique(gt.frame_idx).tolist():
        g_index = torch.nonzero(gt.frame_idx == t).squeeze(1)
        d_index = torch.nonzero(det_frame_idx == t).squeeze(1)
        iou = pairwise_iou(det_boxes[d_index] / image_scale, gt.original[g_index], plus_one=True) \
            if len(d_index) else det_boxes.new_zeros((0, len(g_index)))
        assigned = _assign_detections(iou, iou_threshold)
        if not supply and assigned[0] < 0:
            continue  # no person: no pair of this frame can be trained
        for g, d in zip(g_index.tolist(), assigned):
            if d >= 0 or supply:
                keep.append(g)
                source.append(int(d_index[d]) if d >= 0 else -1)
    device = gt.boxes.device
    keep_t = torch.tensor(keep, dtype=torch.long, device=device)
    source_t = torch.tensor(source, dtype=torch.long, device=device)
    found = source_t >= 0
    boxes = gt.boxes[keep_t].clone()
    boxes[found] = det_boxes[source_t[found]]
    kept = VideoBoxes(boxes, boxes / image_scale, gt.labels[keep_t], gt.frame_idx[keep_t], gt.rows[keep_t])
    if det_feats is None:
        return kept, gt_feats_fn(kept.boxes, kept.frame_idx)
    feats = det_feats.new_zeros((len(keep), det_feats.shape[1]))
    feats[found] = det_feats[source_t[found]]
    if bool((~found).any()):
        feats[~found] = gt_feats_fn(kept.boxes[~found], kept.frame_idx[~found])
    return kept, feats


def detected_training_boxes(video: dict, images: torch.Tensor, fmap: torch.Tensor, gt: VideoBoxes, detector: nn.Module,
                            features: nn.Module, *, iou_threshold: float = 0.5,
                            supply: bool = True) -> Tuple[VideoBoxes, torch.Tensor]:
    """:func:`sgdet_training_boxes` on the ``detector``'s detections of the video's frames (computed without
    gradients, as upstream's frozen detector), supplied boxes' features from ``features.object_features``."""
    with torch.no_grad():
        boxes, frame_idx, _, det_feats = detector.detections(fmap, images.shape[-2:],
                                                             float(video.get("image_scale", 1.0)))
    return sgdet_training_boxes(gt, boxes, frame_idx, det_feats,
                                lambda b, f: features.object_features(fmap, b, f),
                                image_scale=float(video.get("image_scale", 1.0)), iou_threshold=iou_threshold,
                                supply=supply)


def video_relation_targets(video: dict, gt: VideoBoxes, pairs: torch.Tensor,
                           groups: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets of :func:`training_pairs` ``pairs``: attention ``(P,)``, spatial ``(P, S)``, contacting ``(P, C)``."""
    objects = pairs[:, 1]
    obj_frames, obj_rows = gt.frame_idx[objects].cpu(), gt.rows[objects].cpu()
    targets = [relation_targets(frame, obj_rows[obj_frames == t], groups) for t, frame in enumerate(video["frames"])]
    device = gt.boxes.device
    return tuple(torch.cat(x).to(device) for x in zip(*targets))


def predcls_persons(frame_idx: torch.Tensor, num_frames: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """GT boxes (PredCls / SGCls input): row 0 of every frame is its person. Returns ``person`` ``(T,)`` (the person's
    box index per frame, -1 for a frame without boxes) and ``is_person`` ``(N,)`` bool."""
    device = frame_idx.device
    if len(frame_idx) == 0:
        return torch.full((num_frames,), -1, dtype=torch.long, device=device), frame_idx.new_zeros(0, dtype=torch.bool)
    first = torch.cat([torch.ones(1, dtype=torch.bool, device=device), frame_idx[1:] != frame_idx[:-1]])
    person = torch.full((num_frames,), -1, dtype=torch.long, device=device)
    person[frame_idx[first]] = torch.nonzero(first).squeeze(1)
    return person, first


def assign_person_labels(probs: torch.Tensor, frame_idx: torch.Tensor, num_frames: int):
    """STTran's rule for predicted labels (SGCls / SGDet): per frame the box most likely to be the person is the person
    (score p(person)); every other box takes its best non-person class.

    ``probs`` ``(N, K)`` class probabilities (person = 0). Returns ``labels`` ``(N,)``, ``scores`` ``(N,)``,
    ``person`` ``(T,)`` (box index per frame, -1 = none) and ``is_person`` ``(N,)``.
    """
    scores, labels = probs[:, 1:].max(1)
    labels = labels + 1
    person = torch.full((num_frames,), -1, dtype=torch.long, device=probs.device)
    if len(probs):
        p_person = probs[:, 0]
        best = torch.full((num_frames,), -1.0, device=probs.device).scatter_reduce(
            0, frame_idx, p_person, reduce="amax")
        candidates = torch.nonzero(p_person == best[frame_idx]).squeeze(1)
        # Several boxes may tie; keep the first of each frame (frames without boxes stay -1).
        first = torch.full((num_frames,), len(probs), dtype=torch.long, device=probs.device).scatter_reduce(
            0, frame_idx[candidates], candidates, reduce="amin")
        person = torch.where(first < len(probs), first, person)
    is_person = torch.zeros(len(probs), dtype=torch.bool, device=probs.device)
    has = person >= 0
    is_person[person[has]] = True
    labels = torch.where(is_person, torch.zeros_like(labels), labels)
    scores = torch.where(is_person, probs[:, 0] if len(probs) else scores, scores)
    return labels, scores, person, is_person


def pairs_of_persons(person: torch.Tensor, is_person: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
    """Inference pairs ``(P, 2)``: each frame's person with every non-person box of that frame (frames ascending)."""
    objects = torch.nonzero(~is_person & (person[frame_idx] >= 0)).squeeze(1)
    return torch.stack([person[frame_idx[objects]], objects], 1)


def split_frames(num_frames: int, frame_idx: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                 scores: torch.Tensor, pairs: torch.Tensor, **pair_outputs: torch.Tensor) -> List[dict]:
    """Per-frame prediction dicts (CPU) in the format ``video_scene_graph`` evaluates.

    Box tensors are ``(N, ...)`` over the whole video with ``frame_idx`` ``(N,)``; ``pairs`` ``(P, 2)`` are re-indexed
    to the frame's boxes; every ``pair_outputs`` tensor ``(P, ...)`` (``attention``, ``spatial``, ``contacting``, any
    extra per-pair output such as uncertainties) is split with the pairs.
    """
    frame_idx = frame_idx.cpu()
    pairs = pairs.cpu()
    pair_frame = frame_idx[pairs[:, 0]] if len(pairs) else torch.zeros(0, dtype=torch.long)
    counts = torch.bincount(frame_idx, minlength=num_frames)
    starts = torch.cumsum(counts, 0) - counts
    boxes, labels, scores = boxes.cpu(), labels.cpu(), scores.cpu()
    pair_outputs = {k: v.cpu() for k, v in pair_outputs.items()}
    out = []
    for t in range(num_frames):
        sel, psel = frame_idx == t, pair_frame == t
        frame = {"boxes": boxes[sel], "labels": labels[sel], "scores": scores[sel], "pairs": pairs[psel] - starts[t]}
        frame.update({k: v[psel] for k, v in pair_outputs.items()})
        out.append(frame)
    return out


# ------------------------------------------------------------------------------------------------ losses
def multi_label_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "margin") -> torch.Tensor:
    """Spatial / contacting loss on ``logits`` ``(P, C)`` against multi-hot ``target`` ``(P, C)``.

    ``"margin"``: STTran's default MultiLabelMarginLoss on sigmoid outputs (pairs without positives add 0);
    ``"bce"``: binary cross-entropy on sigmoid outputs (STTran's ``-bce_loss``).
    """
    probs = torch.sigmoid(logits)
    if kind == "bce":
        # F.binary_cross_entropy raises on NaN input ("all elements of input should be between 0 and 1"); a NaN
        # loss instead lets the trainer's non-finite guard skip the step. Same value and gradient when finite.
        finite = torch.isfinite(probs)
        loss = F.binary_cross_entropy(torch.where(finite, probs, torch.zeros_like(probs)), target)
        return torch.where(finite.all(), loss, torch.full_like(loss, float("nan")))
    if kind != "margin":
        raise ValueError(f"multi-label loss must be 'margin' or 'bce', got {kind!r}.")
    # MultiLabelMarginLoss: positive class indices first, padded with -1.
    order = torch.argsort(target, dim=1, descending=True, stable=True)
    idx = torch.where(torch.gather(target, 1, order) > 0, order, torch.full_like(order, -1))
    return F.multilabel_margin_loss(probs, idx)


def relation_losses(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], kind: str = "margin",
                    prefix: str = "loss") -> Dict[str, torch.Tensor]:
    """``{prefix}_attention`` / ``{prefix}_spatial`` / ``{prefix}_contacting`` of one relation head set:
    ``logits`` and ``targets`` are the (attention, spatial, contacting) triples; ``kind`` the multi-label loss."""
    (att, spa, con), (att_t, spa_t, con_t) = logits, targets
    return {f"{prefix}_attention": attention_loss(att, att_t),
            f"{prefix}_spatial": multi_label_loss(spa, spa_t, kind),
            f"{prefix}_contacting": multi_label_loss(con, con_t, kind)}


def attention_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of attention logits ``(P, 3)`` against ``target`` ``(P,)`` (-100 = no attention label; a video
    without any label gives a zero that still depends on the logits, so the graph stays connected)."""
    if (target >= 0).any():
        return F.cross_entropy(logits, target, ignore_index=-100)
    return logits.sum() * 0.0
