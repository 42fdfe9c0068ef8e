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
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from sgg.config import configurable
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES
from sgg.structures.boxes import box_xyxy_to_cxcywh, union_box

from ..build import META_ARCH_REGISTRY, build_backbone, build_video_detector

__all__ = ["STTran", "SpatialTemporalTransformer", "TemporalDecoderLayer", "ObjectClassifier", "pair_box_masks",
           "load_word_vectors", "relation_targets", "MODES"]

logger = logging.getLogger(__name__)

MODES = ("predcls", "sgcls", "sgdet")


# ------------------------------------------------------------------------------------------------ helpers
def pair_box_masks(sub_boxes: torch.Tensor, obj_boxes: torch.Tensor, size: int = 27) -> torch.Tensor:
    """Rasterise each (subject, object) box pair inside its union box: ``(P, 2, size, size)`` in ``[-0.5, 0.5]``.

    Cell value = the fraction of the cell covered by the box (exact area, so small boxes still show), minus 0.5 as in
    STTran's ``draw_union_boxes(...) - 0.5``. Channel 0 is the subject, channel 1 the object; boxes are xyxy in any
    common unit.
    """
    if sub_boxes.shape != obj_boxes.shape or sub_boxes.ndim != 2 or sub_boxes.shape[-1] != 4:
        raise ValueError(f"pair_box_masks: expected two (P, 4) xyxy tensors, got {tuple(sub_boxes.shape)} and "
                         f"{tuple(obj_boxes.shape)}.")
    union = union_box(sub_boxes, obj_boxes)
    origin = union[:, None, :2].repeat(1, 1, 2)  # (P, 1, 4) as (x, y, x, y)
    extent = (union[:, 2:] - union[:, :2]).clamp(min=1e-6).repeat(1, 2)[:, None]  # (P, 1, 4)
    boxes = (torch.stack([sub_boxes, obj_boxes], 1) - origin) / extent * size  # (P, 2, 4) in grid units
    cells = torch.arange(size, device=boxes.device, dtype=boxes.dtype)

    def coverage(lo, hi):  # (P, 2) -> (P, 2, size): overlap of [lo, hi] with each unit cell [k, k + 1]
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


def _segment_index(counts: torch.Tensor, starts: torch.Tensor, length: int,
                   total: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For segments ``[starts[i], starts[i] + counts[i])`` of ``total`` rows: index ``(S, length)`` (padding slots
    clamped to a valid row) and padding mask ``(S, length)`` (True = padding)."""
    offs = torch.arange(length, device=counts.device)
    index = starts[:, None] + offs[None, :]
    pad = offs[None, :] >= counts[:, None]
    return index.clamp(max=total - 1), pad


def _unblock_empty(pad: torch.Tensor) -> torch.Tensor:
    """Let empty segments attend to their (padding) first slot, which is never read, so attention has no NaN."""
    pad = pad.clone()
    pad[pad.all(dim=1), 0] = False
    return pad


# ---------------------------------------------------------------------------------------- transformer blocks
class TemporalDecoderLayer(nn.Module):
    """STTran's temporal decoder layer: self-attention with the frame encoding added to queries and keys (not values),
    residual + LayerNorm, then a ReLU feed-forward with a residual (the reference has no norm after it).

    Inputs are batch-first ``(B, L, D)``; ``pad`` ``(B, L)`` is True at padding.
    """

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim_feedforward), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim_feedforward, dim))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``x``, ``pos`` ``(B, L, D)``, ``pad`` ``(B, L)`` -> ``(B, L, D)``."""
        q = x + pos
        out, _ = self.attn(q, q, x, key_padding_mask=pad, need_weights=False)
        x = self.norm(x + self.drop1(out))
        return x + self.drop2(self.ffn(x))


class SpatialTemporalTransformer(nn.Module):
    """Spatial encoder within each frame + temporal decoder over sliding windows of frames (see module docstring).

    ``forward(x (P, D), frame_of_pair (P,) sorted, num_frames) -> (P, D)``.
    """

    def __init__(self, *, dim: int, enc_layers: int, dec_layers: int, num_heads: int, dim_feedforward: int,
                 dropout: float, window: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"STTran relation dim {dim} (3 x VISUAL_DIM + 2 x EMBED_DIM) is not divisible by "
                             f"NUM_HEADS={num_heads}; pick sizes with dim % heads == 0 (STTran: 1936 / 8).")
        if window < 1:
            raise ValueError(f"MODEL.STTRAN.TEMPORAL_WINDOW must be >= 1, got {window}.")
        self.window = window
        self.encoder = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward, dropout, batch_first=True)
            for _ in range(enc_layers)
        ])
        self.decoder = nn.ModuleList([TemporalDecoderLayer(dim, num_heads, dim_feedforward, dropout)
                                      for _ in range(dec_layers)])
        self.frame_embedding = nn.Embedding(window, dim)
        nn.init.uniform_(self.frame_embedding.weight)  # as the reference

    def forward(self, x: torch.Tensor, frame_of_pair: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Contextualise pair features ``x`` ``(P, D)`` (pairs grouped by frame, frames ascending)."""
        if x.shape[0] == 0:
            return x
        counts = torch.bincount(frame_of_pair, minlength=num_frames)
        starts = torch.cumsum(counts, 0) - counts
        # Spatial encoder: one sequence per frame.
        index, pad = _segment_index(counts, starts, int(counts.max()), x.shape[0])
        h = x[index]
        pad_ok = _unblock_empty(pad)
        for layer in self.encoder:
            h = layer(h, src_key_padding_mask=pad_ok)
        x = h[~pad]  # back to (P, D) in the original order (frames ascending, pairs in order)
        if not self.decoder:
            return x
        # Temporal decoder: windows of `window` consecutive frames with stride 1.
        num_windows = max(num_frames - self.window + 1, 1)
        w_first = torch.arange(num_windows, device=x.device)
        w_last = (w_first + self.window - 1).clamp(max=num_frames - 1)
        ends = starts + counts
        w_starts, w_counts = starts[w_first], ends[w_last] - starts[w_first]
        index, pad = _segment_index(w_counts, w_starts, int(w_counts.max()), x.shape[0])
        h = x[index]
        pos = self.frame_embedding((frame_of_pair[index] - w_first[:, None]).clamp(0, self.window - 1))
        pad_ok = _unblock_empty(pad)
        for layer in self.decoder:
            h = layer(h, pos, pad_ok)
        # Frame t reads the window ending at t ("latter"); the first window also serves frames 0 .. window - 2.
        window_of_pair = (frame_of_pair - self.window + 1).clamp(0, num_windows - 1)
        slot = torch.arange(x.shape[0], device=x.device) - w_starts[window_of_pair]
        return h[window_of_pair, slot]


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


# --------------------------------------------------------------------------------------------------- the model
@META_ARCH_REGISTRY.register()
class STTran(nn.Module):
    """Spatial-temporal transformer for video SGG in PredCls, SGCls or SGDet (``TEST.RELATION.MODE``).

    Input: a list of video dicts (``ActionGenomeMapper`` output: ``images`` uint8 ``(T, 3, H', W')``,
    ``image_scale``, ``frames`` with ``boxes`` / ``gt_boxes`` / ``labels`` / ``relations``). See the module docstring
    for the architecture, outputs and the differences from the reference code.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, mode: str, num_classes: int = 36,
                 predicate_groups: Sequence[int] = (3, 6, 17), pooler_resolution: int = 7,
                 obj_feature_dim: int = 2048, union_dim: int = 256, visual_dim: int = 512, embed_dim: int = 200,
                 word_vectors: str = "", class_names: Sequence[str] = (), enc_layers: int = 1,
                 dec_layers: int = 3, num_heads: int = 8, dim_feedforward: int = 2048, dropout: float = 0.1,
                 temporal_window: int = 2, mask_size: int = 27, multi_label_loss: str = "margin",
                 obj_classifier_hidden: int = 1024, pos_dim: int = 128, object_loss_weight: float = 1.0,
                 freeze_backbone: bool = False, frame_chunk: int = 10, detector: Optional[nn.Module] = None,
                 pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375)):
        """
        Args:
            backbone: ``forward(images (B, 3, H, W) normalised) -> (B, C, H/s, W/s)`` with ``out_channels``, ``stride``.
            mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"``.
            num_classes: object classes incl. the person (AG: 36, person = 0).
            predicate_groups: sizes of the attention / spatial / contacting groups (AG: 3, 6, 17).
            pooler_resolution: RoIAlign output size (7; the box-mask conv produces 7 x 7 from ``mask_size`` 27).
            obj_feature_dim: width of the per-box feature after the RoI head.
            union_dim: channels of the union-box map (STTran: 256).
            visual_dim: width of the subject / object / union projections (STTran: 512).
            embed_dim: word-embedding width (STTran: 200, GloVe 6B 200d).
            word_vectors: local GloVe text file initialising the embeddings; "" = learned from random init.
            class_names: object class names (for ``word_vectors``).
            enc_layers / dec_layers: spatial encoder / temporal decoder depth (STTran: 1 / 3).
            temporal_window: frames per sliding window of the temporal decoder (STTran: 2).
            multi_label_loss: ``"margin"`` (STTran's default MultiLabelMarginLoss on sigmoid outputs) or ``"bce"``.
            freeze_backbone: keep the backbone fixed (STTran freezes its AG-trained Faster R-CNN).
            frame_chunk: frames per backbone forward (bounds memory on long videos).
            detector: SGDet only, a ``MODEL.VIDEO_DETECTOR.NAME`` detector (:mod:`sgg.modeling.video_detector`)
                sharing ``backbone``.
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"STTran: TEST.RELATION.MODE must be one of {MODES}, got {mode!r}.")
        if mode == "sgdet" and detector is None:
            raise ValueError("STTran in sgdet mode needs a detector (MODEL.VIDEO_DETECTOR); none was given.")
        if multi_label_loss not in ("margin", "bce"):
            raise ValueError(f"MODEL.STTRAN.MULTI_LABEL_LOSS must be 'margin' or 'bce', got {multi_label_loss!r}.")
        if len(predicate_groups) != 3:
            raise ValueError(f"MODEL.STTRAN.PREDICATE_GROUPS needs 3 sizes (attention, spatial, contacting), "
                             f"got {tuple(predicate_groups)}.")
        for attr in ("out_channels", "stride"):
            if not hasattr(backbone, attr):
                raise ValueError(f"STTran's backbone {type(backbone).__name__} lacks the '{attr}' attribute.")
        self.mode = mode
        self.num_classes = num_classes
        self.groups = tuple(int(g) for g in predicate_groups)
        self.pooler_resolution = pooler_resolution
        self.mask_size = mask_size
        self.multi_label_loss = multi_label_loss
        self.object_loss_weight = object_loss_weight
        self.frame_chunk = max(int(frame_chunk), 1)
        self.freeze_backbone = freeze_backbone
        self.backbone = backbone
        self.detector = detector
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)

        c, r = backbone.out_channels, pooler_resolution
        self.box_head = nn.Sequential(nn.Flatten(), nn.Linear(c * r * r, obj_feature_dim), nn.ReLU())
        self.union_proj = nn.Conv2d(c, union_dim, 1)
        # Box-mask conv: 2 x 27 x 27 -> union_dim x 7 x 7 (stride 2 conv, then stride 2 max-pool), as STTran.
        self.mask_conv = nn.Sequential(
            nn.Conv2d(2, union_dim // 2, 7, stride=2, padding=3), nn.ReLU(),
            nn.BatchNorm2d(union_dim // 2, momentum=0.01),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(union_dim // 2, union_dim, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(union_dim, momentum=0.01),
        )
        mask_out = self._mask_conv_size(mask_size)
        if mask_out != r:
            raise ValueError(f"MODEL.STTRAN.MASK_SIZE {mask_size} gives {mask_out} x {mask_out} box-mask maps, but "
                             f"the union RoI features are {r} x {r} (POOLER_RESOLUTION); use MASK_SIZE 27 with 7.")
        self.subj_fc = nn.Linear(obj_feature_dim, visual_dim)
        self.obj_fc = nn.Linear(obj_feature_dim, visual_dim)
        self.union_fc = nn.Linear(union_dim * r * r, visual_dim)

        embedding = None
        if word_vectors:
            if len(class_names) != num_classes:
                raise ValueError(f"MODEL.STTRAN.WORD_VECTORS needs {num_classes} class names, got {len(class_names)}.")
            embedding, missing = load_word_vectors(word_vectors, class_names, embed_dim)
            logger.info("STTran: class embeddings from '%s' (%d / %d classes found%s).", word_vectors,
                        num_classes - len(missing), num_classes, f"; random: {missing}" if missing else "")
        self.subj_embed = nn.Embedding(num_classes, embed_dim)
        self.obj_embed = nn.Embedding(num_classes, embed_dim)
        if embedding is not None:
            self.subj_embed.weight.data.copy_(embedding)
            self.obj_embed.weight.data.copy_(embedding)
        self.rel_dim = 3 * visual_dim + 2 * embed_dim
        self.transformer = SpatialTemporalTransformer(
            dim=self.rel_dim, enc_layers=enc_layers, dec_layers=dec_layers, num_heads=num_heads,
            dim_feedforward=dim_feedforward, dropout=dropout, window=temporal_window)
        self.attention_head = nn.Linear(self.rel_dim, self.groups[0])
        self.spatial_head = nn.Linear(self.rel_dim, self.groups[1])
        self.contacting_head = nn.Linear(self.rel_dim, self.groups[2])
        self.object_classifier = None
        if mode != "predcls":
            self.object_classifier = ObjectClassifier(
                feature_dim=obj_feature_dim, num_classes=num_classes, embed_dim=embed_dim, pos_dim=pos_dim,
                hidden_dim=obj_classifier_hidden, embedding=embedding, dropout=dropout)

    @classmethod
    def from_config(cls, cfg, backbone: Optional[nn.Module] = None, detector: Optional[nn.Module] = None) -> dict:
        """Keyword arguments from ``MODEL.STTRAN``, ``MODEL.BACKBONE``, ``TEST.RELATION.MODE`` (+ the detector).

        ``backbone`` / ``detector`` given explicitly replace the ones the config would build.
        """
        s = cfg.MODEL.STTRAN
        mode = cfg.TEST.RELATION.MODE
        if backbone is None:
            backbone = build_backbone(cfg)
        if mode == "sgdet" and detector is None:
            detector = build_video_detector(cfg, backbone)
        return {
            "backbone": backbone, "mode": mode, "num_classes": s.NUM_CLASSES,
            "predicate_groups": tuple(s.PREDICATE_GROUPS), "pooler_resolution": s.POOLER_RESOLUTION,
            "obj_feature_dim": s.OBJ_FEATURE_DIM, "union_dim": s.UNION_DIM, "visual_dim": s.VISUAL_DIM,
            "embed_dim": s.EMBED_DIM, "word_vectors": s.WORD_VECTORS,
            "class_names": AG_OBJECT_CLASSES if s.NUM_CLASSES == len(AG_OBJECT_CLASSES) else (),
            "enc_layers": s.ENC_LAYERS, "dec_layers": s.DEC_LAYERS, "num_heads": s.NUM_HEADS,
            "dim_feedforward": s.DIM_FEEDFORWARD, "dropout": s.DROPOUT, "temporal_window": s.TEMPORAL_WINDOW,
            "mask_size": s.MASK_SIZE, "multi_label_loss": s.MULTI_LABEL_LOSS,
            "obj_classifier_hidden": s.OBJ_CLASSIFIER_HIDDEN, "pos_dim": s.POS_DIM,
            "object_loss_weight": s.OBJECT_LOSS_WEIGHT, "freeze_backbone": s.FREEZE_BACKBONE,
            "frame_chunk": s.FRAME_CHUNK, "detector": detector,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN), "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
        }

    @staticmethod
    def _mask_conv_size(size: int) -> int:
        after_conv = (size + 2 * 3 - 7) // 2 + 1
        return (after_conv + 2 * 1 - 3) // 2 + 1

    @property
    def needs_gt_boxes(self) -> bool:
        """True when inference scores given boxes (PredCls / SGCls), so an unannotated input cannot be predicted."""
        return self.mode != "sgdet"

    @property
    def device(self) -> torch.device:
        """The device the model's parameters live on."""
        return self.pixel_mean.device

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``, but a frozen backbone stays in eval mode (its BatchNorm statistics are fixed)."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[dict]):
        """Training: dict of losses averaged over the videos. Eval: one ``{"frames": [...]}`` dict per video."""
        if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
            raise ValueError("STTran expects a non-empty list of video dicts (ActionGenomeMapper output).")
        if self.training:
            losses: Dict[str, torch.Tensor] = {}
            for video in batched_inputs:
                for name, value in self._video_losses(video).items():
                    losses[name] = losses.get(name, 0.0) + value / len(batched_inputs)
            return losses
        return [self._video_inference(video) for video in batched_inputs]

    def _features(self, video: dict) -> torch.Tensor:
        images = video.get("images")
        if images is None or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Video '{video.get('video_id')}': 'images' must be a (T, 3, H, W) tensor "
                             "(use ActionGenomeMapper).")
        if images.shape[0] != len(video["frames"]):
            raise ValueError(f"Video '{video.get('video_id')}': {images.shape[0]} images for "
                             f"{len(video['frames'])} frame dicts.")
        maps = []
        with torch.set_grad_enabled(self.training and not self.freeze_backbone):
            for chunk in images.split(self.frame_chunk):
                x = (chunk.to(self.device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std
                maps.append(self.backbone(x))
        return torch.cat(maps)

    def _roi(self, fmap: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        rois = torch.cat([frame_idx[:, None].to(boxes.dtype), boxes], 1)
        return roi_align(fmap, rois, self.pooler_resolution, spatial_scale=1.0 / self.backbone.stride,
                         sampling_ratio=2, aligned=True)

    def _gt_boxes(self, video: dict):
        """All GT boxes of the video: resized-frame boxes (N, 4), original boxes, labels, frame index, row in frame."""
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
        cat = [torch.cat(x).to(self.device) for x in (resized, original, labels, frame_idx, rows)]
        return tuple(cat)

    def _relation_features(self, fmap, boxes, frame_idx, obj_feats, labels, pairs) -> torch.Tensor:
        """The relation vector ``(P, rel_dim)`` of every (person, object) pair."""
        sub, obj = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
        union = self._roi(fmap, union_box(sub, obj), frame_idx[pairs[:, 0]])
        masks = pair_box_masks(sub, obj, self.mask_size)
        vr = self.union_proj(union) + self.mask_conv(masks)
        visual = torch.cat([self.subj_fc(obj_feats[pairs[:, 0]]), self.obj_fc(obj_feats[pairs[:, 1]]),
                            self.union_fc(vr.flatten(1))], 1)
        semantic = torch.cat([self.subj_embed(labels[pairs[:, 0]]), self.obj_embed(labels[pairs[:, 1]])], 1)
        return torch.cat([visual, semantic], 1)

    def _heads(self, rel: torch.Tensor, pair_frames: torch.Tensor, num_frames: int):
        h = self.transformer(rel, pair_frames, num_frames)
        return self.attention_head(h), self.spatial_head(h), self.contacting_head(h)

    def _multi_label_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(logits)
        if self.multi_label_loss == "bce":
            # F.binary_cross_entropy raises on NaN input ("all elements of input should be between 0 and 1"); a NaN
            # loss instead lets the trainer's non-finite guard skip the step. Same value and gradient when finite.
            finite = torch.isfinite(probs)
            loss = F.binary_cross_entropy(torch.where(finite, probs, torch.zeros_like(probs)), target)
            return torch.where(finite.all(), loss, torch.full_like(loss, float("nan")))
        # MultiLabelMarginLoss: positive class indices first, padded with -1 (pairs without positives add 0).
        order = torch.argsort(target, dim=1, descending=True, stable=True)
        idx = torch.where(torch.gather(target, 1, order) > 0, order, torch.full_like(order, -1))
        return F.multilabel_margin_loss(probs, idx)

    def _normalized(self, boxes: torch.Tensor, video: dict) -> torch.Tensor:
        h, w = video["images"].shape[-2:]
        return boxes / boxes.new_tensor([w, h, w, h])

    def _video_losses(self, video: dict) -> Dict[str, torch.Tensor]:
        fmap = self._features(video)
        boxes, _, labels, frame_idx, rows = self._gt_boxes(video)
        losses: Dict[str, torch.Tensor] = {}
        if self.detector is not None and self.detector.trainable:
            det_losses = self.detector.losses(fmap, video["images"].shape[-2:], boxes, labels, frame_idx)
            losses.update(det_losses)
        obj_feats = self.box_head(self._roi(fmap, boxes, frame_idx))
        if self.object_classifier is not None:
            uniform = torch.full((len(boxes), self.num_classes), 1.0 / self.num_classes, device=self.device)
            logits = self.object_classifier(obj_feats, uniform, self._normalized(boxes, video))
            losses["loss_object"] = self.object_loss_weight * F.cross_entropy(logits, labels)
        # Pairs: the person (row 0) with every object of the frame; GT labels feed the embeddings (as STTran).
        person = torch.nonzero(rows == 0).squeeze(1)
        objects = torch.nonzero(rows > 0).squeeze(1)
        pairs = torch.stack([person[frame_idx[objects]], objects], 1)
        targets = [relation_targets(frame, rows[objects][frame_idx[objects] == t].cpu(), self.groups)
                   for t, frame in enumerate(video["frames"])]
        att_t, spa_t, con_t = (torch.cat(x).to(self.device) for x in zip(*targets))
        rel = self._relation_features(fmap, boxes, frame_idx, obj_feats, labels, pairs)
        att, spa, con = self._heads(rel, frame_idx[objects], len(video["frames"]))
        if (att_t >= 0).any():
            losses["loss_attention"] = F.cross_entropy(att, att_t, ignore_index=-100)
        else:
            losses["loss_attention"] = att.sum() * 0.0
        losses["loss_spatial"] = self._multi_label_loss(spa, spa_t)
        losses["loss_contacting"] = self._multi_label_loss(con, con_t)
        return losses

    @torch.no_grad()
    def _video_inference(self, video: dict) -> dict:
        fmap = self._features(video)
        num_frames = len(video["frames"])
        scale = float(video.get("image_scale", 1.0))
        if self.mode == "sgdet":
            boxes, frame_idx, det_dist = self.detector.detect(fmap, video["images"].shape[-2:])
            original = boxes / scale
        else:
            boxes, original, labels, frame_idx, _ = self._gt_boxes(video)
        obj_feats = self.box_head(self._roi(fmap, boxes, frame_idx)) if len(boxes) else \
            boxes.new_zeros((0, self.subj_fc.in_features))
        if self.mode == "predcls":
            scores = torch.ones(len(boxes), device=self.device)
            # GT row 0 of every frame is its person.
            first = torch.cat([torch.ones(1, dtype=torch.bool, device=self.device), frame_idx[1:] != frame_idx[:-1]])
            person = torch.full((num_frames,), -1, dtype=torch.long, device=self.device)
            person[frame_idx[first]] = torch.nonzero(first).squeeze(1)
            is_person = first
        else:
            prior = det_dist if self.mode == "sgdet" else \
                torch.full((len(boxes), self.num_classes), 1.0 / self.num_classes, device=self.device)
            logits = self.object_classifier(obj_feats, prior, self._normalized(boxes, video)) if len(boxes) else \
                boxes.new_zeros((0, self.num_classes))
            labels, scores, person, is_person = self._assign_labels(logits.softmax(1), frame_idx, num_frames)
        objects = torch.nonzero(~is_person & (person[frame_idx] >= 0)).squeeze(1)
        pairs = torch.stack([person[frame_idx[objects]], objects], 1)
        if len(pairs):
            rel = self._relation_features(fmap, boxes, frame_idx, obj_feats, labels, pairs)
            att, spa, con = self._heads(rel, frame_idx[objects], num_frames)
            att, spa, con = att.softmax(1), spa.sigmoid(), con.sigmoid()
        else:
            att, spa, con = (boxes.new_zeros((0, g)) for g in self.groups)
        return {"frames": self._split_frames(num_frames, frame_idx, original, labels, scores, pairs, att, spa, con)}

    def _assign_labels(self, probs: torch.Tensor, frame_idx: torch.Tensor, num_frames: int):
        """SGCls / SGDet labels: per frame the box most likely to be the person is the person (score p(person));
        every other box takes its best non-person class (STTran's rule)."""
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

    @staticmethod
    def _split_frames(num_frames, frame_idx, boxes, labels, scores, pairs, att, spa, con) -> List[dict]:
        """Per-frame prediction dicts; ``pairs`` are re-indexed to the frame's boxes."""
        frame_idx, pair_frame = frame_idx.cpu(), frame_idx[pairs[:, 0]].cpu() if len(pairs) else \
            torch.zeros(0, dtype=torch.long)
        counts = torch.bincount(frame_idx, minlength=num_frames)
        starts = torch.cumsum(counts, 0) - counts
        pairs = pairs.cpu()
        out = []
        for t in range(num_frames):
            sel, psel = frame_idx == t, pair_frame == t
            out.append({
                "boxes": boxes[sel.to(boxes.device)].cpu(), "labels": labels[sel.to(labels.device)].cpu(),
                "scores": scores[sel.to(scores.device)].cpu(), "pairs": pairs[psel] - starts[t],
                "attention": att[psel.to(att.device)].cpu(), "spatial": spa[psel.to(spa.device)].cpu(),
                "contacting": con[psel.to(con.device)].cpu(),
            })
        return out
