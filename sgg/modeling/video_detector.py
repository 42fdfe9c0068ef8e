"""The SGDet object detectors of video SGG models (STTran's role of its AG Faster R-CNN), in
``VIDEO_DETECTOR_REGISTRY`` (``MODEL.VIDEO_DETECTOR.NAME``): ``VideoObjectDetector`` (torchvision's heads, below) and
``D2VideoObjectDetector`` (detectron2's Faster R-CNN heads, when detectron2 is installed).

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

import contextlib
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

from sgg.checkpoint.detectron2 import load_detectron2_weights
from sgg.config import ConfigError, configurable
from sgg.config.detectron2 import build_detectron2_cfg, import_detectron2

from .build import VIDEO_DETECTOR_REGISTRY

__all__ = ["VideoObjectDetector", "D2VideoObjectDetector", "detectron2_detector_cfg"]

logger = logging.getLogger(__name__)


@VIDEO_DETECTOR_REGISTRY.register()
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

    def detections(self, fmap: torch.Tensor, image_size, image_scale: float = 1.0):
        """:meth:`detect` plus ``None`` features (the video model pools its own features of the boxes)."""
        return (*self.detect(fmap, image_size), None)

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


# ------------------------------------------------------------------------------------------------- detectron2
_D2_FEATURE = "MODEL.VIDEO_DETECTOR.NAME 'D2VideoObjectDetector'"
_D2_IN_FEATURE = "video"  # the name of the video model's feature map inside the detectron2 heads


def detectron2_detector_cfg(cfg):
    """The detectron2 config of :class:`D2VideoObjectDetector`: detectron2's RPN + ``StandardROIHeads`` with a
    two-FC box head on one feature level, with ``MODEL.VIDEO_DETECTOR.*`` mapped to detectron2's keys
    (anchors, NMS / score thresholds, proposal counts, box-head width and batch, detections per frame) and
    ``MODEL.STTRAN.NUM_CLASSES`` classes; ``MODEL.VIDEO_DETECTOR.D2`` (``CONFIG_FILE``, inline detectron2 keys)
    overrides them."""
    import_detectron2(_D2_FEATURE, "detectron2.config")
    d = cfg.MODEL.VIDEO_DETECTOR
    mapped = [
        ("MODEL.PROPOSAL_GENERATOR.NAME", "RPN"), ("MODEL.ROI_HEADS.NAME", "StandardROIHeads"),
        ("MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead"), ("MODEL.ROI_BOX_HEAD.NUM_FC", 2),
        ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2"), ("MODEL.ROI_BOX_HEAD.FC_DIM", d.REPRESENTATION_DIM),
        ("MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.STTRAN.NUM_CLASSES),
        ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", d.BOX_BATCH_SIZE_PER_IMAGE),
        ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", d.SCORE_THRESH), ("MODEL.ROI_HEADS.NMS_THRESH_TEST", d.NMS_THRESH),
        ("TEST.DETECTIONS_PER_IMAGE", d.DETECTIONS_PER_FRAME),
        ("MODEL.ANCHOR_GENERATOR.SIZES", [[float(x) for x in d.ANCHOR_SIZES]]),
        ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[float(x) for x in d.ASPECT_RATIOS]]),
        ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", d.RPN_PRE_NMS_TOP_N[0]),
        ("MODEL.RPN.PRE_NMS_TOPK_TEST", d.RPN_PRE_NMS_TOP_N[1]),
        ("MODEL.RPN.POST_NMS_TOPK_TRAIN", d.RPN_POST_NMS_TOP_N[0]),
        ("MODEL.RPN.POST_NMS_TOPK_TEST", d.RPN_POST_NMS_TOP_N[1]),
    ]
    return build_detectron2_cfg(d.D2, name="MODEL.VIDEO_DETECTOR.D2", mapped=mapped)


@VIDEO_DETECTOR_REGISTRY.register()
class D2VideoObjectDetector(nn.Module):
    """detectron2's Faster R-CNN heads (``proposal_generator``: its RPN, ``roi_heads``: its ROI heads, built by its
    registries from a detectron2 config) over the video model's per-frame feature maps ``(T, C, H/s, W/s)``, with
    :class:`VideoObjectDetector`'s interface. Attribute names are those of a detectron2 ``GeneralizedRCNN``, so
    ``weights`` (a local detectron2 ``.pkl`` / ``.pth``) loads through detectron2's checkpointer wherever shapes match
    (same feature channels, anchors per location and classes). Classes are 0-based, as in detectron2.
    """

    @configurable
    def __init__(self, *, d2_cfg, in_channels: int, stride: int, trainable: bool = True, weights: str = ""):
        """
        Args:
            d2_cfg: a detectron2 ``CfgNode`` (``MODEL.PROPOSAL_GENERATOR``, ``MODEL.ROI_HEADS``, ...).
            in_channels / stride: channels and stride of the feature maps (the backbone's).
            trainable: add the detector's losses in training; False freezes it.
            weights: local detectron2 checkpoint ("" = random init).
        """
        super().__init__()
        modeling = import_detectron2(_D2_FEATURE, "detectron2.modeling")
        layers = import_detectron2(_D2_FEATURE, "detectron2.layers")
        if in_channels <= 0 or stride <= 0:
            raise ValueError(f"D2VideoObjectDetector: in_channels ({in_channels}) and stride ({stride}) must be > 0.")
        d2_cfg = d2_cfg.clone()
        d2_cfg.defrost()
        d2_cfg.MODEL.RPN.IN_FEATURES = [_D2_IN_FEATURE]
        d2_cfg.MODEL.ROI_HEADS.IN_FEATURES = [_D2_IN_FEATURE]
        shape = {_D2_IN_FEATURE: layers.ShapeSpec(channels=int(in_channels), stride=int(stride))}
        try:
            self.proposal_generator = modeling.build_proposal_generator(d2_cfg, shape)
            self.roi_heads = modeling.build_roi_heads(d2_cfg, shape)
        except (AssertionError, KeyError) as e:  # detectron2 checks configs with asserts; unknown registry names
            raise ConfigError(f"MODEL.VIDEO_DETECTOR.D2: detectron2 refused the detector config: {e}") from e
        self.num_classes = int(d2_cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        self._structures = import_detectron2(_D2_FEATURE, "detectron2.structures")
        if weights:
            load_detectron2_weights(self, weights, key="MODEL.VIDEO_DETECTOR.WEIGHTS",
                                    prefixes=("proposal_generator.", "roi_heads."))
        self.trainable = bool(trainable)
        if not self.trainable:
            self.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg, in_channels: int = 0, stride: int = 0, backbone: nn.Module = None) -> dict:
        """:func:`detectron2_detector_cfg`; ``in_channels`` / ``stride`` from ``backbone`` when one is given."""
        if backbone is not None:
            in_channels, stride = backbone.out_channels, backbone.stride
        return {"d2_cfg": detectron2_detector_cfg(cfg), "in_channels": in_channels, "stride": stride,
                "trainable": cfg.MODEL.VIDEO_DETECTOR.TRAIN, "weights": cfg.MODEL.VIDEO_DETECTOR.WEIGHTS}

    def _inputs(self, fmap: torch.Tensor, image_size):
        h, w = int(image_size[0]), int(image_size[1])
        # detectron2's heads read only the image sizes (clipping) and the batch length of the image tensor.
        images = self._structures.ImageList(fmap.new_zeros((fmap.shape[0], 1, h, w)), [(h, w)] * fmap.shape[0])
        return images, {_D2_IN_FEATURE: fmap}

    def _event_storage(self):
        """detectron2's heads log training statistics (``rpn/num_pos_anchors``, ``fast_rcnn/cls_accuracy``) to
        detectron2's current ``EventStorage``: inside a detectron2 trainer that one, under sgg's trainer a private
        one whose statistics are dropped (sgg logs the losses)."""
        events = import_detectron2(_D2_FEATURE, "detectron2.utils.events")
        try:
            events.get_event_storage()
        except AssertionError:
            return events.EventStorage()
        return contextlib.nullcontext()

    def losses(self, fmap: torch.Tensor, image_size, boxes: torch.Tensor, labels: torch.Tensor,
               frame_idx: torch.Tensor) -> Dict[str, torch.Tensor]:
        """detectron2's RPN + box-head losses (``loss_det_rpn_cls``, ``loss_det_rpn_loc``, ``loss_det_cls``,
        ``loss_det_box_reg``) on GT ``boxes`` (N, 4) / 0-based ``labels`` (N,) / ``frame_idx`` (N,)."""
        images, features = self._inputs(fmap, image_size)
        s = self._structures
        targets = []
        for t in range(fmap.shape[0]):
            inst = s.Instances(images.image_sizes[t])
            inst.gt_boxes = s.Boxes(boxes[frame_idx == t].float())
            inst.gt_classes = labels[frame_idx == t].long()
            targets.append(inst)
        with self._event_storage():
            proposals, rpn_losses = self.proposal_generator(images, features, targets)
            _, det_losses = self.roi_heads(images, features, proposals, targets)
        return {f"loss_det_{k.replace('loss_', '')}": v for k, v in {**rpn_losses, **det_losses}.items()}

    def detections(self, fmap: torch.Tensor, image_size, image_scale: float = 1.0):
        """:meth:`detect` plus ``None`` features (the video model pools its own features of the boxes)."""
        return (*self.detect(fmap, image_size), None)

    @torch.no_grad()
    def detect(self, fmap: torch.Tensor, image_size) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of every frame, concatenated frame by frame: ``(boxes (N, 4), frame_idx (N,) ascending,
        one-hot class distribution (N, num_classes))``."""
        was_training = self.training
        self.eval()
        try:
            images, features = self._inputs(fmap, image_size)
            proposals, _ = self.proposal_generator(images, features)
            detections, _ = self.roi_heads(images, features, proposals)
        finally:
            self.train(was_training)
        boxes = torch.cat([d.pred_boxes.tensor for d in detections]) if detections else fmap.new_zeros((0, 4))
        labels = torch.cat([d.pred_classes for d in detections]).long() if detections else \
            torch.zeros(0, dtype=torch.long, device=fmap.device)
        frame_idx = torch.cat([torch.full((len(d),), t, dtype=torch.long, device=fmap.device)
                               for t, d in enumerate(detections)]) if detections else labels
        return boxes, frame_idx, F.one_hot(labels, self.num_classes).to(fmap.dtype)
