"""Action Genome's Faster R-CNN ResNet-101 (the frozen detector of STTran, TEMPURA, STKET and DSG-DETR) in plain
PyTorch + torchvision ops: a feature source (``MODEL.VIDEO_FEATURES.NAME "AGFasterRCNN"``) and the SGDet detector on
top of the same network (``MODEL.VIDEO_DETECTOR.NAME "AGFasterRCNNDetector"``).

The network is the faster-rcnn.pytorch model STTran vendors (yrcong/STTran ``fasterRCNN/lib/model/``:
``faster_rcnn/{faster_rcnn,resnet}.py``, ``rpn/*``, ``utils/config.py``), with its attribute names, so its state
dict is the one of the released ``faster_rcnn_ag.pth`` (``model`` entry) under the prefix the model gives it
(``features.``)::

    RCNN_base      = Sequential(conv1, bn1, relu, maxpool, layer1..layer3): (T, 3, H, W) -> (T, 1024, H/16, W/16)
    RCNN_rpn       = RPN_Conv 3x3 (1024 -> 512) + ReLU, RPN_cls_score 1x1 (-> 2 A), RPN_bbox_pred 1x1 (-> 4 A),
                     A = 12 anchors (scales 4, 8, 16, 32 x ratios 0.5, 1, 2 of a 16-pixel base, stride 16)
    RoIAlign 7x7 at 1/16 (legacy, not pixel-aligned; adaptive sampling)
    RCNN_top       = Sequential(layer4); object feature = mean over the 4x4 map -> 2048
    RCNN_cls_score = Linear(2048, 37)  (background + AG's 36 classes)
    RCNN_bbox_pred = Linear(2048, 4 x 37)  (class-specific deltas, normalised by stds 0.1, 0.1, 0.2, 0.2)

Its ResNet is the Caffe layout (stride of a stage's first block in its 1x1 ``conv1``, max-pool without padding and
``ceil_mode``), unlike torchvision's (stride in the 3x3 ``conv2``), so sgg's torchvision ``ResNet`` backbone does not
fit it; the blocks are restated here with the same module names. Every BatchNorm is a
:class:`torchvision.ops.FrozenBatchNorm2d` (upstream freezes their parameters and keeps them in eval mode; the
converter drops ``num_batches_tracked``).

Preprocessing as upstream (``dataloader/action_genome.py``, ``prep_im_for_blob``): BGR, pixel means (102.9801,
115.9465, 122.7717) subtracted, no std; frames arrive resized by :class:`~sgg.data.video_mapper.ActionGenomeMapper`
(short side ``INPUT.MIN_SIZE_TEST``). Upstream's long-side cap is commented out in its code (every frame gets short
side 600), so the AG configs set ``INPUT.MAX_SIZE_TEST 0``.

What it gives an STTran-family model, as upstream's ``lib/object_detector.py`` gives STTran:

* PredCls / SGCls: :meth:`AGFasterRCNN.object_features` = 2048-d RoI features of GT boxes (``FINAL_FEATURES``),
  :meth:`~AGFasterRCNN.union_features` = the 1024 x 7 x 7 RoIAlign of the base map (``union_feat``),
  :meth:`~AGFasterRCNN.class_distribution` = softmax over the 36 non-background classes (``FINAL_DISTRIBUTIONS``,
  the SGCls object classifier's input).
* SGDet (:class:`AGFasterRCNNDetector`): RPN proposals (6000 before / 100 after NMS 0.7), class-specific boxes,
  per-class NMS 0.4 over scores > 0.1, only the best person box per frame, features of the proposals; then STTran's
  test-time clean-up of ``ObjectClassifier`` (``clean_class`` for book, chair, food: each such box is duplicated
  with its second-best class; NMS 0.6 per arg-max class). The person rule (per frame the box most likely to be a
  person is the person) is applied by the model (:func:`~sgg.modeling.video_sgg.assign_person_labels`).

NMS follows the compiled op's "+1" pixel convention (area = (x2 - x1 + 1)(y2 - y1 + 1)), obtained from torchvision's
NMS by adding 1 to x2 and y2; the only difference left is that an IoU exactly equal to the threshold suppresses
upstream (``>=``) and not in torchvision (``>``).
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, batched_nms, roi_align

from sgg.checkpoint.convert import load_upstream_file, unwrap_state_dict
from sgg.config import ConfigError, configurable

from .build import VIDEO_DETECTOR_REGISTRY, VIDEO_FEATURES_REGISTRY

__all__ = ["AGFasterRCNN", "AGFasterRCNNDetector", "generate_anchors", "bbox_transform_inv", "clip_boxes",
           "nms_plus_one", "ag_state_dict_keys"]

logger = logging.getLogger(__name__)

BGR_PIXEL_MEANS = (102.9801, 115.9465, 122.7717)  # faster-rcnn.pytorch's cfg.PIXEL_MEANS (BGR, 0-255)


# ------------------------------------------------------------------------------------------------ box utilities
def generate_anchors(base_size: int = 16, ratios: Sequence[float] = (0.5, 1.0, 2.0),
                     scales: Sequence[float] = (4, 8, 16, 32)) -> torch.Tensor:
    """faster-rcnn.pytorch's reference anchors ``(len(ratios) x len(scales), 4)`` xyxy around the (0, 0, 15, 15) cell,
    ratio-major (all scales of ratio 0.5 first), with its rounding of widths/heights and its "+1" sizes."""
    size = float(base_size)
    ctr = (size - 1) / 2.0  # centre of the (0, 0, base-1, base-1) window
    rows = []
    for ratio in ratios:
        ws = torch.round(torch.sqrt(torch.tensor(size * size / ratio, dtype=torch.float64)))
        hs = torch.round(ws * ratio)
        for scale in scales:
            w, h = ws * scale, hs * scale
            half_w, half_h = 0.5 * (w - 1), 0.5 * (h - 1)
            rows.append(torch.stack([ctr - half_w, ctr - half_h, ctr + half_w, ctr + half_h]))
    return torch.stack(rows).float()


def bbox_transform_inv(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Apply ``deltas`` ``(N, 4k)`` (dx, dy, dw, dh per class) to ``boxes`` ``(N, 4)`` xyxy, with the reference's
    "+1" widths (w = x2 - x1 + 1) and no clamping of dw / dh -> ``(N, 4k)``."""
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx, dy, dw, dh = deltas[:, 0::4], deltas[:, 1::4], deltas[:, 2::4], deltas[:, 3::4]
    pcx = dx * widths[:, None] + ctr_x[:, None]
    pcy = dy * heights[:, None] + ctr_y[:, None]
    pw = torch.exp(dw) * widths[:, None]
    ph = torch.exp(dh) * heights[:, None]
    out = torch.empty_like(deltas)
    out[:, 0::4], out[:, 1::4] = pcx - 0.5 * pw, pcy - 0.5 * ph
    out[:, 2::4], out[:, 3::4] = pcx + 0.5 * pw, pcy + 0.5 * ph
    return out


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Clamp xyxy coordinates (any multiple of 4 columns) into ``[0, width - 1]`` / ``[0, height - 1]``."""
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, width - 1)
    out[:, 1::2] = out[:, 1::2].clamp(0, height - 1)
    return out


def _plus_one(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes[:, :2], boxes[:, 2:] + 1.0], 1)


def nms_plus_one(boxes: torch.Tensor, scores: torch.Tensor, threshold: float,
                 groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """NMS with the compiled faster-rcnn op's "+1" areas (indices kept, by decreasing score); per group if given."""
    boxes = _plus_one(boxes)
    if groups is None:
        groups = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    return batched_nms(boxes, scores, groups, threshold)


# ------------------------------------------------------------------------------------------------ the ResNet parts
class _Bottleneck(nn.Module):
    """faster-rcnn.pytorch's Caffe-style bottleneck: the stride sits in the first 1 x 1 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * 4:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                   FrozenBatchNorm2d(planes * 4))
    layers = [_Bottleneck(inplanes, planes, stride, downsample)]
    layers += [_Bottleneck(planes * 4, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class _RPN(nn.Module):
    """faster-rcnn.pytorch's ``_RPN`` parameters (``RPN_Conv``, ``RPN_cls_score``, ``RPN_bbox_pred``)."""

    def __init__(self, in_channels: int, num_anchors: int, hidden: int = 512):
        super().__init__()
        self.RPN_Conv = nn.Conv2d(in_channels, hidden, 3, 1, 1)
        self.RPN_cls_score = nn.Conv2d(hidden, 2 * num_anchors, 1)
        self.RPN_bbox_pred = nn.Conv2d(hidden, 4 * num_anchors, 1)

    def forward(self, fmap: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(T, C, h, w)`` -> fg probabilities ``(T, h*w*A)`` and deltas ``(T, h*w*A, 4)`` in anchor order."""
        a = self.RPN_cls_score.out_channels // 2
        x = F.relu(self.RPN_Conv(fmap))
        logits = self.RPN_cls_score(x)  # channels [0, A) background, [A, 2A) foreground of anchor a
        t, _, h, w = logits.shape
        probs = F.softmax(logits.view(t, 2, a, h, w), dim=1)[:, 1]  # (T, A, h, w)
        scores = probs.permute(0, 2, 3, 1).reshape(t, -1)
        deltas = self.RPN_bbox_pred(x).permute(0, 2, 3, 1).reshape(t, -1, 4)
        return scores, deltas


def ag_state_dict_keys(blocks: Sequence[int] = (3, 4, 23, 3)) -> List[str]:
    """The parameter / buffer names of faster-rcnn.pytorch's ResNet Faster R-CNN (``faster_rcnn_ag.pth``'s ``model``)
    for ``blocks`` residual blocks per stage, BatchNorm ``num_batches_tracked`` excluded. Used by the converter check
    and the tests."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = ["RCNN_base.0.weight"] + [f"RCNN_base.1.{s}" for s in bn]
    stages = [("RCNN_base.4", blocks[0]), ("RCNN_base.5", blocks[1]), ("RCNN_base.6", blocks[2]),
              ("RCNN_top.0", blocks[3])]
    for prefix, n in stages:
        for b in range(n):
            for i in (1, 2, 3):
                keys.append(f"{prefix}.{b}.conv{i}.weight")
                keys += [f"{prefix}.{b}.bn{i}.{s}" for s in bn]
            if b == 0:
                keys.append(f"{prefix}.0.downsample.0.weight")
                keys += [f"{prefix}.0.downsample.1.{s}" for s in bn]
    for name in ("RPN_Conv", "RPN_cls_score", "RPN_bbox_pred"):
        keys += [f"RCNN_rpn.{name}.weight", f"RCNN_rpn.{name}.bias"]
    keys += ["RCNN_cls_score.weight", "RCNN_cls_score.bias", "RCNN_bbox_pred.weight", "RCNN_bbox_pred.bias"]
    return keys


# ------------------------------------------------------------------------------------------------ feature source
@VIDEO_FEATURES_REGISTRY.register()
class AGFasterRCNN(nn.Module):
    """The Action Genome Faster R-CNN ResNet-101 as a video feature source (see the module docstring).

    Interface of :class:`~sgg.modeling.video_sgg.BackboneRoIFeatures`: ``frame_features(images)`` ->
    ``(T, 1024, H/16, W/16)`` base maps; ``object_features(fmap, boxes, frame_idx)`` -> ``(N, 2048)``;
    ``union_features(fmap, boxes, frame_idx)`` -> ``(P, 1024, 7, 7)``; ``class_distribution(object_features)`` ->
    ``(N, 36)``; ``object_dim``, ``union_channels``, ``stride`` (16) and ``backbone`` (this module: the SGDet
    :class:`AGFasterRCNNDetector` runs its RPN and box head). Boxes are xyxy in resized-frame pixels.
    """

    @configurable
    def __init__(self, *, num_classes: int = 37, blocks: Sequence[int] = (3, 4, 23, 3), width: int = 64,
                 anchor_scales: Sequence[float] = (4, 8, 16, 32), anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 pooler_resolution: int = 7, frozen: bool = True, frame_chunk: int = 10,
                 pixel_means_bgr: Sequence[float] = BGR_PIXEL_MEANS, weights: str = ""):
        """
        Args:
            num_classes: detector classes incl. background (AG: 37).
            blocks / width: residual blocks per stage and stem width (ResNet-101: (3, 4, 23, 3), 64; smaller values
                only for tests: a released file needs the defaults).
            anchor_scales / anchor_ratios: RPN anchors (upstream cfg.ANCHOR_SCALES / ANCHOR_RATIOS).
            pooler_resolution: RoIAlign size (7).
            frozen: keep every parameter fixed (STTran never trains its detector).
            frame_chunk: frames per base-network forward (upstream: 10).
            pixel_means_bgr: subtracted from BGR frames (0-255).
            weights: local ``faster_rcnn_ag.pth`` (its ``model`` entry) or a file written by
                ``tools/convert_checkpoint.py --from ag_detector``; "" = random init (to be filled by MODEL.WEIGHTS).
        """
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1 or width < 1:
            raise ValueError(f"MODEL.AG_DETECTOR.BLOCKS must be 4 positive counts and WIDTH > 0, got "
                             f"{tuple(blocks)} / {width}.")
        w = int(width)
        stem = [nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False), FrozenBatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)]
        self.RCNN_base = nn.Sequential(*stem, _stage(w, w, blocks[0], 1), _stage(4 * w, 2 * w, blocks[1], 2),
                                       _stage(8 * w, 4 * w, blocks[2], 2))
        self.RCNN_top = nn.Sequential(_stage(16 * w, 8 * w, blocks[3], 2))
        self.register_buffer("anchors", generate_anchors(16, anchor_ratios, anchor_scales), persistent=False)
        self.RCNN_rpn = _RPN(16 * w, len(self.anchors))
        self.RCNN_cls_score = nn.Linear(32 * w, num_classes)
        self.RCNN_bbox_pred = nn.Linear(32 * w, 4 * num_classes)
        self.register_buffer("pixel_mean", torch.tensor(pixel_means_bgr, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.num_classes = num_classes
        self.pooler_resolution = pooler_resolution
        self.frame_chunk = max(int(frame_chunk), 1)
        self.object_dim = 32 * w
        self.union_channels = 16 * w
        self.frozen = bool(frozen)
        self._init_weights()
        if weights:
            self.load_weights(weights)
        elif self.frozen:
            logger.warning("AGFasterRCNN: frozen with random weights (MODEL.AG_DETECTOR.WEIGHTS is empty); fine when "
                           "MODEL.WEIGHTS holds its features.* tensors (a converted release), useless for training.")
        if self.frozen:
            self.requires_grad_(False)
        else:  # upstream's cfg.RESNET.FIXED_BLOCKS = 1: conv1 and layer1 stay fixed even when the rest trains
            self.RCNN_base[0].requires_grad_(False)
            self.RCNN_base[4].requires_grad_(False)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """``MODEL.AG_DETECTOR.*``; the class count is ``MODEL.STTRAN.NUM_CLASSES`` + background."""
        d = cfg.MODEL.AG_DETECTOR
        return {"num_classes": cfg.MODEL.STTRAN.NUM_CLASSES + 1, "blocks": tuple(d.BLOCKS), "width": d.WIDTH,
                "anchor_scales": tuple(d.ANCHOR_SCALES), "anchor_ratios": tuple(d.ANCHOR_RATIOS),
                "pooler_resolution": cfg.MODEL.STTRAN.POOLER_RESOLUTION, "frozen": d.FREEZE,
                "frame_chunk": cfg.MODEL.STTRAN.FRAME_CHUNK, "pixel_means_bgr": tuple(d.PIXEL_MEANS_BGR),
                "weights": d.WEIGHTS}

    def _init_weights(self) -> None:
        # upstream's _init_weights: N(0, 0.01) for the RPN and the class score, N(0, 0.001) for the box deltas
        for m, std in ((self.RCNN_rpn.RPN_Conv, 0.01), (self.RCNN_rpn.RPN_cls_score, 0.01),
                       (self.RCNN_rpn.RPN_bbox_pred, 0.01), (self.RCNN_cls_score, 0.01), (self.RCNN_bbox_pred, 0.001)):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)

    def load_weights(self, path: str) -> None:
        """Load ``faster_rcnn_ag.pth`` (safely: ``weights_only``) or its ``--from ag_detector`` conversion; every
        network tensor must be there (a clear error names the first missing ones)."""
        state = unwrap_state_dict(load_upstream_file(path), source=path)
        if any(k.startswith("features.RCNN_") for k in state):  # a converted file (model-level names)
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or shapes:
            raise ConfigError(
                f"MODEL.AG_DETECTOR.WEIGHTS '{path}' is not an Action Genome Faster R-CNN of this size: "
                f"{len(missing)} tensor(s) missing (e.g. {missing[:3]}), {len(shapes)} with another shape "
                f"(e.g. {shapes[:2]}); give fasterRCNN/models/faster_rcnn_ag.pth or its conversion "
                "(tools/convert_checkpoint.py --from ag_detector), with MODEL.AG_DETECTOR.BLOCKS / WIDTH at "
                "ResNet-101's (3, 4, 23, 3) / 64.")
        unexpected = [k for k in state if k not in own]
        self.load_state_dict({k: state[k] for k in own})
        logger.info("AGFasterRCNN: loaded '%s'%s.", path,
                    f" ({len(unexpected)} other entries ignored)" if unexpected else "")

    @property
    def backbone(self) -> nn.Module:
        """The module an SGDet detector shares: this network (its RPN and box head)."""
        return self

    @property
    def stride(self) -> int:
        """Base-map stride in resized-frame pixels (16)."""
        return 16

    @property
    def out_channels(self) -> int:
        """Channels of the base map (1024 for ResNet-101)."""
        return self.union_channels

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``; a frozen network stays in eval mode (as upstream's ``detector.eval()``)."""
        super().train(mode)
        if self.frozen:
            super().train(False)
        return self

    def _grad(self) -> bool:
        return self.training and not self.frozen and torch.is_grad_enabled()

    # -------------------------------------------------------------------------------------- feature-source interface
    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 / float RGB frames ``(T, 3, H, W)`` -> base maps ``(T, 1024, ceil(H/16), ceil(W/16))``."""
        device = self.pixel_mean.device
        maps = []
        with torch.set_grad_enabled(self._grad()):
            for chunk in images.split(self.frame_chunk):
                x = chunk.to(device, non_blocking=True).float().flip(1) - self.pixel_mean  # RGB -> BGR, minus means
                maps.append(self.RCNN_base(x))
        return torch.cat(maps)

    def roi_pool(self, fmap: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """Upstream's ``RCNN_roi_align``: legacy RoIAlign (not aligned, adaptive sampling) ``(K, C, 7, 7)``."""
        rois = torch.cat([frame_idx[:, None].to(boxes.dtype), boxes], 1)
        return roi_align(fmap, rois, self.pooler_resolution, spatial_scale=1.0 / self.stride, sampling_ratio=0,
                         aligned=False)

    def head_to_tail(self, pooled: torch.Tensor) -> torch.Tensor:
        """``RCNN_top`` then the mean over the map: ``(K, 1024, 7, 7)`` -> ``(K, 2048)``."""
        with torch.set_grad_enabled(self._grad()):
            return self.RCNN_top(pooled).mean(3).mean(2)

    def object_features(self, fmap: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """2048-d features ``(N, object_dim)`` of boxes ``(N, 4)`` in frames ``frame_idx`` (``FINAL_FEATURES``)."""
        if len(boxes) == 0:
            return boxes.new_zeros((0, self.object_dim))
        return self.head_to_tail(self.roi_pool(fmap, boxes, frame_idx))

    def union_features(self, fmap: torch.Tensor, boxes: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """RoIAlign maps ``(P, 1024, 7, 7)`` of (union) boxes (upstream ``union_feat``)."""
        return self.roi_pool(fmap, boxes, frame_idx)

    def class_distribution(self, object_features: torch.Tensor) -> torch.Tensor:
        """Softmax of ``RCNN_cls_score`` over the non-background classes ``(N, num_classes - 1)`` (upstream
        ``FINAL_DISTRIBUTIONS``; class 0 = person, as sgg's labels)."""
        return F.softmax(self.RCNN_cls_score(object_features)[:, 1:], dim=1)

    # -------------------------------------------------------------------------------------- detection
    def proposals(self, fmap: torch.Tensor, image_size, pre_nms_top_n: int = 6000, post_nms_top_n: int = 100,
                  nms_thresh: float = 0.7) -> torch.Tensor:
        """Upstream's ``_ProposalLayer`` (test settings): ``(T, post_nms_top_n, 4)`` xyxy proposals per frame.

        Anchors shifted over the map, deltas applied, clipped to the frame, sorted by foreground score, the top
        ``pre_nms_top_n`` through NMS ``nms_thresh``, the first ``post_nms_top_n`` kept; as upstream, a frame with
        fewer survivors is padded with (0, 0, 0, 0) boxes (they are scored like the others). No minimum-size filter
        (commented out upstream).
        """
        h_img, w_img = float(image_size[0]), float(image_size[1])
        scores, deltas = self.RCNN_rpn(fmap)
        t, _, h, w = fmap.shape
        sy, sx = torch.meshgrid(torch.arange(h, device=fmap.device) * 16.0,
                                torch.arange(w, device=fmap.device) * 16.0, indexing="ij")
        shifts = torch.stack([sx.reshape(-1), sy.reshape(-1), sx.reshape(-1), sy.reshape(-1)], 1)
        anchors = (self.anchors.to(fmap.dtype)[None] + shifts[:, None]).reshape(-1, 4)  # (h*w*A, 4), A fastest
        out = fmap.new_zeros((t, post_nms_top_n, 4))
        for i in range(t):
            boxes = clip_boxes(bbox_transform_inv(anchors, deltas[i]), h_img, w_img)
            order = torch.sort(scores[i], descending=True, stable=True)[1]
            if 0 < pre_nms_top_n < len(order):
                order = order[:pre_nms_top_n]
            keep = order[nms_plus_one(boxes[order], scores[i][order], nms_thresh)][:post_nms_top_n]
            out[i, :len(keep)] = boxes[keep]
        return out


# ------------------------------------------------------------------------------------------------ SGDet detector
@VIDEO_DETECTOR_REGISTRY.register()
class AGFasterRCNNDetector(nn.Module):
    """STTran's SGDet detections from an :class:`AGFasterRCNN` feature source (sharing its modules; it holds no
    parameters of its own, so a checkpoint stores the network once, under ``features.``).

    ``detections(fmap, image_size, image_scale)`` -> ``(boxes (N, 4) resized-frame xyxy, frame_idx (N,) ascending,
    distribution (N, 36), features (N, 2048))``; ``detect()`` returns the first three (the common detector interface).
    Inference only (``trainable`` False): upstream trains this detector separately, with faster-rcnn.pytorch.
    """

    trainable = False

    @configurable
    def __init__(self, *, network: AGFasterRCNN, score_thresh: float = 0.1, nms_thresh: float = 0.4,
                 clean_classes: Sequence[int] = (4, 7, 16), class_nms_thresh: float = 0.6,
                 rpn_pre_nms_top_n: int = 6000, rpn_post_nms_top_n: int = 100, rpn_nms_thresh: float = 0.7,
                 bbox_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2), clip_first_frame_only: bool = False):
        """
        Args:
            network: the model's :class:`AGFasterRCNN` feature source (``features.backbone``).
            score_thresh / nms_thresh: per-class score threshold and NMS IoU (upstream 0.1 / 0.4).
            clean_classes: 0-based classes duplicated with their second-best class (upstream ``clean_class(5, 8,
                17)`` in 1-based indices: book, chair, food); () = off.
            class_nms_thresh: NMS IoU per arg-max class after that (upstream 0.6; <= 0 = off).
            rpn_*: proposal settings (upstream cfg.TEST: 6000 / 100 / 0.7).
            bbox_stds: de-normalisation of the box deltas (cfg.TRAIN.BBOX_NORMALIZE_STDS).
            clip_first_frame_only: reproduce upstream's ``clip_boxes(..., batch_size=1)`` over a batch of 10 frames,
                which clips the detections of only the first frame of each batch to the image (the others keep
                boxes past the right / bottom edge); False clips every frame.
        """
        super().__init__()
        if not isinstance(network, AGFasterRCNN):
            raise ConfigError(f"MODEL.VIDEO_DETECTOR.NAME 'AGFasterRCNNDetector' runs on the AGFasterRCNN feature "
                              f"source, but the model's feature source is {type(network).__name__}; set "
                              "MODEL.VIDEO_FEATURES.NAME 'AGFasterRCNN'.")
        # A plain attribute, not a submodule: the network belongs to (and is saved with) the feature source.
        self.__dict__["network"] = network
        self.num_classes = network.num_classes - 1
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.clean_classes = tuple(int(c) for c in clean_classes)
        self.class_nms_thresh = float(class_nms_thresh)
        self.rpn = (int(rpn_pre_nms_top_n), int(rpn_post_nms_top_n), float(rpn_nms_thresh))
        self.register_buffer("bbox_stds", torch.tensor(bbox_stds, dtype=torch.float32), persistent=False)
        self.clip_first_frame_only = bool(clip_first_frame_only)

    @classmethod
    def from_config(cls, cfg, backbone: nn.Module = None) -> dict:
        """``MODEL.AG_DETECTOR.*``; ``backbone`` = the feature source's ``backbone`` (the AGFasterRCNN)."""
        if cfg.MODEL.VIDEO_DETECTOR.TRAIN:
            raise ConfigError("MODEL.VIDEO_DETECTOR.NAME 'AGFasterRCNNDetector' is inference-only (upstream trains it "
                              "separately, then freezes it); set MODEL.VIDEO_DETECTOR.TRAIN False.")
        d = cfg.MODEL.AG_DETECTOR
        return {"network": backbone, "score_thresh": d.SCORE_THRESH, "nms_thresh": d.NMS_THRESH,
                "clean_classes": tuple(d.CLEAN_CLASSES), "class_nms_thresh": d.CLASS_NMS_THRESH,
                "rpn_pre_nms_top_n": d.RPN_PRE_NMS_TOP_N, "rpn_post_nms_top_n": d.RPN_POST_NMS_TOP_N,
                "rpn_nms_thresh": d.RPN_NMS_THRESH, "bbox_stds": tuple(d.BBOX_STDS),
                "clip_first_frame_only": d.CLIP_FIRST_FRAME_ONLY}

    def losses(self, *args, **kwargs):
        """Not available: the detector is frozen (see the class docstring)."""
        raise ConfigError("AGFasterRCNNDetector is inference-only; set MODEL.VIDEO_DETECTOR.TRAIN False.")

    def _frame_detections(self, boxes: torch.Tensor, probs: torch.Tensor, feats: torch.Tensor):
        """Upstream's per-class loop of ``object_detector.py`` for one frame: boxes ``(R, 4 x K1)`` in original
        pixels, probs ``(R, K1)`` with background 0. Returns kept (boxes, features) ordered by class, then score."""
        k1 = probs.shape[1]
        fg = probs[:, 1:]
        rows, cls = torch.nonzero(fg > self.score_thresh, as_tuple=True)
        if len(rows) == 0:
            return boxes.new_zeros((0, 4)), feats[:0]
        cls1 = cls + 1
        cand = boxes.view(-1, k1, 4)[rows, cls1]
        score = fg[rows, cls]
        keep = nms_plus_one(cand, score, self.nms_thresh, groups=cls)
        # upstream order: classes ascending, each by decreasing score (NMS keep order)
        keep = keep[torch.sort(cls[keep], stable=True)[1]]
        person = keep[cls[keep] == 0][:1]  # only the highest-scoring person box
        keep = torch.cat([person, keep[cls[keep] != 0]])
        return cand[keep], feats[rows[keep]]

    def _clean_class(self, frame_lists, c: int):
        """STTran's ``clean_class``: per frame, boxes whose arg-max class is ``c`` are appended again with class
        ``c`` zeroed in their distribution (so their next-best class is used); distributions are not renormalised."""
        out = []
        for boxes, dist, feats in frame_lists:
            sel = dist.argmax(1) == c
            new = dist[sel].clone()
            new[:, c] = 0
            out.append((torch.cat([boxes, boxes[sel]]), torch.cat([dist, new]), torch.cat([feats, feats[sel]])))
        return out

    def _class_nms(self, boxes, dist, feats):
        """STTran's test-time NMS per arg-max class (IoU ``class_nms_thresh``), classes ascending."""
        if self.class_nms_thresh <= 0 or len(boxes) == 0:
            return boxes, dist, feats
        cls = dist.argmax(1)
        keep = nms_plus_one(boxes, dist.gather(1, cls[:, None]).squeeze(1), self.class_nms_thresh, groups=cls)
        keep = keep[torch.sort(cls[keep], stable=True)[1]]
        return boxes[keep], dist[keep], feats[keep]

    @torch.no_grad()
    def detections(self, fmap: torch.Tensor, image_size, image_scale: float = 1.0):
        """Detections of every frame (see the class docstring); NMS runs in original-frame pixels
        (``resized / image_scale``), as upstream."""
        net = self.network
        scale = float(image_scale)
        pre, post, thresh = self.rpn
        proposals = net.proposals(fmap, image_size, pre, post, thresh)  # (T, R, 4) resized pixels
        t, r, _ = proposals.shape
        frame_of = torch.arange(t, device=fmap.device).repeat_interleave(r)
        flat = proposals.reshape(-1, 4)
        step = net.frame_chunk * r  # layer4 on the RoIs of a few frames at a time (upstream: 10 frames per batch)
        feats = torch.cat([net.head_to_tail(net.roi_pool(fmap, flat[s:s + step], frame_of[s:s + step]))
                           for s in range(0, len(flat), step)]) if len(flat) else fmap.new_zeros((0, net.object_dim))
        probs = F.softmax(net.RCNN_cls_score(feats), 1)
        deltas = net.RCNN_bbox_pred(feats) * self.bbox_stds.repeat(net.num_classes)
        boxes = bbox_transform_inv(proposals.reshape(-1, 4), deltas)
        clipped = clip_boxes(boxes, float(image_size[0]), float(image_size[1]))
        if self.clip_first_frame_only:
            first = (frame_of % net.frame_chunk == 0)[:, None]
            clipped = torch.where(first, clipped, boxes)
        boxes = clipped / scale
        frames = []
        for i in range(t):
            sl = slice(i * r, (i + 1) * r)
            b, f = self._frame_detections(boxes[sl], probs[sl], feats[sl])
            frames.append((b.clamp(min=0), net.class_distribution(f), f))
        for c in self.clean_classes:
            frames = self._clean_class(frames, c)
        frames = [self._class_nms(*x) for x in frames]
        out_boxes = torch.cat([b for b, _, _ in frames]) * scale
        frame_idx = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=fmap.device)
                               for i, (b, _, _) in enumerate(frames)])
        return out_boxes, frame_idx, torch.cat([d for _, d, _ in frames]), torch.cat([f for _, _, f in frames])

    def detect(self, fmap: torch.Tensor, image_size, image_scale: float = 1.0):
        """``(boxes, frame_idx, distribution)`` of :meth:`detections`."""
        return self.detections(fmap, image_size, image_scale)[:3]
