"""``VideoObjectDetector``: the SGDet object detector of video SGG models (STTran's role of its AG Faster R-CNN).

It is torchvision's Faster R-CNN detection heads (``RegionProposalNetwork`` + ``RoIHeads`` with a two-layer MLP box
head), run on the feature maps the SGG model already computed with its backbone, so backbone features are shared
between detection and relation prediction as in STTran. No compiled ops of our own: anchors, NMS and RoIAlign are
torchvision's.

Weights: ``MODEL.VIDEO_DETECTOR.WEIGHTS`` is a local file holding this module's state dict (keys ``rpn.*``,
``roi_heads.*``; a checkpoint dict with a ``"model"`` entry whose keys start with ``detector.`` works too, e.g. a
``model_final.pth`` of an STTran SGDet run). With ``MODEL.VIDEO_DETECTOR.TRAIN False`` the detector is frozen (STTran
freezes its detector); with ``True`` its losses (``loss_det_*``) are added to the SGG model's losses, so the demo can
train detection and relations together from scratch. Classes: the SGG dataset's classes, 0-based (torchvision's
background 0 is added internally).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from sgg.config import configurable

__all__ = ["VideoObjectDetector"]

logger = logging.getLogger(__name__)


class VideoObjectDetector(nn.Module):
    """Faster R-CNN heads over precomputed per-frame feature maps ``(T, C, H/s, W/s)``.

    ``losses(fmap, image_size, boxes, labels, frame_idx)`` -> ``{"loss_det_*": scalar}`` (training; boxes in the
    resized-frame pixels the feature maps were computed on). ``detect(fmap, image_size)`` ->
    ``(boxes (N, 4), frame_idx (N,) ascending, distribution (N, num_classes))`` where ``distribution`` is the one-hot
    class of each detection (the SGG object classifier's prior).
    """

    @configurable
    def __init__(self, *, in_channels: int, num_classes: int, anchor_sizes: Sequence[int] = (16, 32, 64, 128),
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), representation_dim: int = 1024,
                 score_thresh: float = 0.1, nms_thresh: float = 0.4, detections_per_frame: int = 16,
                 rpn_pre_nms_top_n: Tuple[int, int] = (2000, 600), rpn_post_nms_top_n: Tuple[int, int] = (300, 100),
                 box_batch_size_per_image: int = 256, trainable: bool = True, weights: str = ""):
        """
        Args:
            in_channels: channels of the feature maps (the backbone's ``out_channels``).
            num_classes: object classes without background (AG: 36).
            anchor_sizes / aspect_ratios: anchors on the single feature level, in resized-frame pixels.
            score_thresh / nms_thresh: per-class detection score threshold and NMS IoU (STTran: 0.1 / 0.4).
            detections_per_frame: detections kept per frame after NMS.
            rpn_pre_nms_top_n / rpn_post_nms_top_n: proposals (training, testing).
            trainable: add the detector's losses in training; False freezes it.
            weights: local state-dict file ("" = random init).
        """
        super().__init__()
        if in_channels <= 0 or num_classes <= 0:
            raise ValueError(f"VideoObjectDetector: in_channels ({in_channels}) and num_classes ({num_classes}) "
                             "must be > 0.")
        self.num_classes = num_classes
        anchors = AnchorGenerator(sizes=(tuple(int(s) for s in anchor_sizes),),
                                  aspect_ratios=(tuple(float(r) for r in aspect_ratios),))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(in_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
            pre_nms_top_n={"training": rpn_pre_nms_top_n[0], "testing": rpn_pre_nms_top_n[1]},
            post_nms_top_n={"training": rpn_post_nms_top_n[0], "testing": rpn_post_nms_top_n[1]}, nms_thresh=0.7)
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(in_channels * 49, representation_dim),
            FastRCNNPredictor(representation_dim, num_classes + 1),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=box_batch_size_per_image,
            positive_fraction=0.25, bbox_reg_weights=None, score_thresh=score_thresh, nms_thresh=nms_thresh,
            detections_per_img=detections_per_frame)
        if weights:
            self._load(weights)
        self.trainable = bool(trainable)
        if not self.trainable:
            self.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg, in_channels: int = 0, backbone: nn.Module = None) -> dict:
        """``MODEL.VIDEO_DETECTOR.*``; ``in_channels`` from ``backbone.out_channels`` when a backbone is given."""
        d = cfg.MODEL.VIDEO_DETECTOR
        if backbone is not None:
            in_channels = backbone.out_channels
        return {
            "in_channels": in_channels, "num_classes": cfg.MODEL.STTRAN.NUM_CLASSES,
            "anchor_sizes": tuple(d.ANCHOR_SIZES), "aspect_ratios": tuple(d.ASPECT_RATIOS),
            "representation_dim": d.REPRESENTATION_DIM, "score_thresh": d.SCORE_THRESH, "nms_thresh": d.NMS_THRESH,
            "detections_per_frame": d.DETECTIONS_PER_FRAME, "rpn_pre_nms_top_n": tuple(d.RPN_PRE_NMS_TOP_N),
            "rpn_post_nms_top_n": tuple(d.RPN_POST_NMS_TOP_N),
            "box_batch_size_per_image": d.BOX_BATCH_SIZE_PER_IMAGE, "trainable": d.TRAIN, "weights": d.WEIGHTS,
        }

    def _load(self, path: str) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"MODEL.VIDEO_DETECTOR.WEIGHTS: file not found: '{path}'.") from None
        if isinstance(state, dict) and "model" in state:
            state = {k[len("detector."):]: v for k, v in state["model"].items() if k.startswith("detector.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"MODEL.VIDEO_DETECTOR.WEIGHTS '{path}' lacks {len(missing)} detector parameters "
                             f"(e.g. {missing[:3]}); it must hold this detector's rpn.* / roi_heads.* state dict.")
        logger.info("VideoObjectDetector: loaded '%s'%s.", path,
                    f" ({len(unexpected)} unexpected keys ignored)" if unexpected else "")

    @staticmethod
    def _inputs(fmap: torch.Tensor, image_size) -> Tuple[ImageList, Dict[str, torch.Tensor]]:
        h, w = int(image_size[0]), int(image_size[1])
        # torchvision only reads the shape / dtype / device of the image tensor; a 1-channel stand-in suffices.
        images = ImageList(fmap.new_zeros((fmap.shape[0], 1, h, w)), [(h, w)] * fmap.shape[0])
        return images, OrderedDict([("0", fmap)])

    def losses(self, fmap: torch.Tensor, image_size, boxes: torch.Tensor, labels: torch.Tensor,
               frame_idx: torch.Tensor) -> Dict[str, torch.Tensor]:
        """RPN + box-head losses on GT ``boxes`` (N, 4) / ``labels`` (N,) 0-based / ``frame_idx`` (N,)."""
        images, features = self._inputs(fmap, image_size)
        targets = [{"boxes": boxes[frame_idx == t], "labels": labels[frame_idx == t] + 1}
                   for t in range(fmap.shape[0])]
        proposals, rpn_losses = self.rpn(images, features, targets)
        _, det_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
        return {f"loss_det_{k.replace('loss_', '')}": v for k, v in {**rpn_losses, **det_losses}.items()}

    @torch.no_grad()
    def detect(self, fmap: torch.Tensor, image_size) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of every frame, concatenated frame by frame (see the class docstring)."""
        was_training = self.training
        self.eval()
        try:
            images, features = self._inputs(fmap, image_size)
            proposals, _ = self.rpn(images, features)
            detections, _ = self.roi_heads(features, proposals, images.image_sizes)
        finally:
            self.train(was_training)
        boxes = torch.cat([d["boxes"] for d in detections]) if detections else fmap.new_zeros((0, 4))
        labels = torch.cat([d["labels"] for d in detections]).long() - 1 if detections else \
            torch.zeros(0, dtype=torch.long, device=fmap.device)
        frame_idx = torch.cat([torch.full((len(d["boxes"]),), t, dtype=torch.long, device=fmap.device)
                               for t, d in enumerate(detections)]) if detections else labels
        distribution = F.one_hot(labels, self.num_classes).to(fmap.dtype)
        return boxes, frame_idx, distribution
