"""Tensor-in / tensor-out cores of sgg's model families, for TorchScript and ONNX export (like ``detectron2.export``).

A model's ``forward`` takes mapper dicts and returns prediction dicts, and parts of its inference are data-dependent
Python (NMS, duplicate-triplet removal, pairs per frame, segment lengths). Each family is therefore split into

* a **core** (:class:`ExportCore`, an ``nn.Module`` over the model's own submodules, no copy of weights) whose
  ``forward`` takes and returns tensors only and has no data-dependent control flow — this is what is traced and
  exported, with dynamic image size / frame count / box and pair counts;
* **pre-processing** (:meth:`ExportCore.inputs`: one mapped input dict -> the core's input tensors) and
  **post-processing** (:meth:`ExportCore.postprocess`: the core's outputs -> the model's own prediction dict), both
  plain Python in sgg, run around the exported graph exactly as around the eager core.

Families (:func:`build_core` picks one from the model's class):

==================  =======================================================  ======================================
family              exported core                                            kept in Python
==================  =======================================================  ======================================
image SGG           image (1, 3, H, W) float 0-255 -> normalisation,         DETR: best class, sort, boxes to
(DETR, SpeaQ,       backbone, encoder, decoder, heads: the last layer's      original pixels; SpeaQ / IterativeSG:
IterativeSG)        logits and normalised cxcywh boxes                       class-wise NMS, snapping, triplet
                                                                             scores, duplicate removal, top-k
video SGG           frames (T, 3, H, W) float 0-255 + boxes, frame index,    GT boxes, person rule and pairs from
(STTran PredCls)    labels, pairs and the transformer's index tensors ->     the video dict; the index tensors
                    backbone, RoIAlign, relation vector, spatial encoder,    (segment lengths per frame / window);
                    temporal decoder, heads -> attention softmax, spatial /  splitting into per-frame dicts
                    contacting sigmoid
keyframes           frames (T, 3, H, W) float 0-255 (``KeyframeDetector``)   the per-video dict
                    or features (T, D) (``KeyframeFeatureDetector``) ->
                    scores (T,)
text-to-video       the 3D UNet: latents (B, C, F, h, w), timestep (B,),     tokenizer + CLIP text encoder, VAE,
                    text states (B, L, D) -> predicted noise                 the DDIM loop and guidance (diffusers)
==================  =======================================================  ======================================

Not exported (``ExportError`` with the reason): STTran SGCls / SGDet (the object classifier's / detector's labels
choose the pairs — a data-dependent step inside the graph) and the other video models (STKET, DSG-DETR, TEMPURA: their
tracking and memory steps), the frequency baselines (no network).
"""

from __future__ import annotations

import logging
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from sgg.modeling.meta_arch.detr import DETR
from sgg.modeling.meta_arch.keyframe_detector import KeyframeDetector, KeyframeFeatureDetector
from sgg.modeling.meta_arch.speaq import SpeaQ, triplet_inference
from sgg.modeling.meta_arch.sttran import STTran
from sgg.modeling.meta_arch.text_to_video import TextToVideoDiffusion
from sgg.modeling.video_sgg import (
    BackboneRoIFeatures,
    check_video_images,
    gather_gt_boxes,
    pairs_of_persons,
    predcls_persons,
    split_frames,
)
from sgg.structures.boxes import union_box
from sgg.utils.errors import SGGError

__all__ = ["ExportError", "ExportCore", "ImageSGGCore", "VideoSGGCore", "KeyframeCore", "UNetCore", "build_core",
           "FAMILIES"]

logger = logging.getLogger(__name__)


class ExportError(SGGError, ValueError):
    """A model (or mode) that sgg cannot export, an input the exported core cannot take, or a missing extra."""


class ExportCore(nn.Module):
    """Base class of the export cores (module docstring): ``forward(*tensors) -> tuple of tensors``.

    Attributes: ``family`` (name), ``input_names`` / ``output_names`` (ONNX names, in order), ``dynamic_axes``
    (ONNX dynamic dimensions per name), ``exported`` / ``python`` (one line each: what the graph holds, what stays in
    Python; written to the export's ``export.json``).
    """

    family = ""
    input_names: Tuple[str, ...] = ()
    output_names: Tuple[str, ...] = ()
    dynamic_axes: Dict[str, Dict[int, str]] = {}
    exported = ""
    python = ""

    def inputs(self, batched_input: dict) -> Tuple[torch.Tensor, ...]:
        """Pre-processing: one mapped input dict (what the model's ``forward`` takes in a list) -> input tensors."""
        raise NotImplementedError

    def postprocess(self, outputs: Sequence[torch.Tensor], batched_input: dict) -> dict:
        """Post-processing: the core's outputs for ``batched_input`` -> the model's own prediction dict."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ image SGG
class ImageSGGCore(ExportCore):
    """DETR / SpeaQ / IterativeSG: one image -> the last decoder layer's class logits and boxes.

    Input ``image`` ``(1, 3, H, W)`` float RGB 0-255 (the mapper's resized uint8 image, cast); ``H`` / ``W`` are
    dynamic. One unpadded image, so the padding mask is all False (what ``preprocess`` gives for a batch of one).
    Outputs: DETR ``logits (1, Q, C+1)``, ``boxes (1, Q, 4)``; SpeaQ ``sub_logits``, ``obj_logits`` ``(1, Q, C+1)``,
    ``rel_logits (1, Q, P+1)``, ``sub_boxes``, ``obj_boxes`` ``(1, Q, 4)`` (normalised cxcywh).
    """

    family = "image_sgg"
    input_names = ("image",)
    dynamic_axes = {"image": {2: "height", 3: "width"}}

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.is_speaq = isinstance(model, SpeaQ)
        if self.is_speaq:
            self.output_names = ("sub_logits", "obj_logits", "rel_logits", "sub_boxes", "obj_boxes")
            self.python = ("class-wise NMS, snapping to kept boxes, triplet scores, duplicate-triplet removal, top-k "
                           "(speaq.triplet_inference), boxes to original pixels")
        else:
            self.output_names = ("logits", "boxes")
            self.python = "best non-background class, sort by score, boxes to original pixels (DETR.inference)"
        self.exported = ("normalisation, backbone, input projection, sine positions, transformer encoder, decoder, "
                         "class and box heads (last decoder layer)")

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = (image - self.model.pixel_mean) / self.model.pixel_std
        mask = torch.zeros_like(x[:, 0], dtype=torch.bool)
        layers, _ = self.model.network(x, mask)
        last = layers[-1]
        return tuple(last[name] for name in self.output_names)

    def inputs(self, batched_input: dict) -> Tuple[torch.Tensor, ...]:
        image = batched_input.get("image")
        if image is None or image.ndim != 3 or image.shape[0] != 3:
            raise ExportError(f"image SGG export needs the mapper's 'image' (3, H, W); got "
                              f"{None if image is None else tuple(image.shape)}.")
        return (image[None].to(self.model.pixel_mean.device, torch.float32),)

    def postprocess(self, outputs: Sequence[torch.Tensor], batched_input: dict) -> dict:
        size = (batched_input["height"], batched_input["width"])
        out = {name: t[0] for name, t in zip(self.output_names, outputs)}
        if self.is_speaq:
            m = self.model
            return triplet_inference(out, size, nms_thresh=m.nms_thresh, topk=m.topk, rule=m.triplet_rule)
        return self.model.inference(out["logits"], out["boxes"], size)


# ------------------------------------------------------------------------------------------------ video SGG
class VideoSGGCore(ExportCore):
    """STTran in PredCls: frames + GT boxes -> relation distributions of every (person, object) pair.

    Inputs: ``images (T, 3, H, W)`` float 0-255, ``boxes (N, 4)`` xyxy resized-frame pixels, ``frame_idx (N,)``,
    ``labels (N,)``, ``pairs (P, 2)`` (rows into the boxes, frames ascending), and the spatial encoder's / temporal
    decoder's index tensors (``SpatialTemporalTransformer.spatial_layout`` / ``temporal_layout``: they depend only on
    how many pairs each frame has, so Python computes them). Outputs ``attention (P, 3)`` (softmax), ``spatial (P, 6)``,
    ``contacting (P, 17)`` (sigmoid). T, N, P and the padded lengths are dynamic.

    The backbone runs on all frames at once: the eager model splits them into chunks of ``FRAME_CHUNK`` only to bound
    memory (eval-mode BatchNorm is per frame, so the maps are the same).
    """

    family = "video_sgg"
    input_names = ("images", "boxes", "frame_idx", "labels", "pairs", "spatial_index", "spatial_mask",
                   "spatial_keep", "temporal_index", "temporal_position", "temporal_mask", "temporal_gather")
    output_names = ("attention", "spatial", "contacting")
    dynamic_axes = {"images": {0: "frames", 2: "height", 3: "width"}, "boxes": {0: "boxes"},
                    "frame_idx": {0: "boxes"}, "labels": {0: "boxes"}, "pairs": {0: "pairs"},
                    "spatial_index": {0: "frames", 1: "spatial_len"}, "spatial_mask": {0: "frames", 1: "spatial_len"},
                    "spatial_keep": {0: "pairs"}, "temporal_index": {0: "windows", 1: "temporal_len"},
                    "temporal_position": {0: "windows", 1: "temporal_len"},
                    "temporal_mask": {0: "windows", 1: "temporal_len"}, "temporal_gather": {0: "pairs"},
                    "attention": {0: "pairs"}, "spatial": {0: "pairs"}, "contacting": {0: "pairs"}}
    exported = ("normalisation, backbone, RoIAlign object and union features, relation vector (box masks, word "
                "embeddings), spatial encoder, temporal decoder, attention / spatial / contacting heads")
    python = ("GT boxes and labels from the video dict, the person rule and (person, object) pairs, the "
              "transformer's index tensors (pairs per frame / window), per-frame prediction dicts")

    def __init__(self, model: STTran):
        super().__init__()
        self.model = model

    def forward(self, images, boxes, frame_idx, labels, pairs, spatial_index, spatial_mask, spatial_keep,
                temporal_index, temporal_position, temporal_mask, temporal_gather):
        m, features = self.model, self.model.features
        fmap = features.backbone((images - features.pixel_mean) / features.pixel_std)
        obj_feats = features.object_features(fmap, boxes, frame_idx)
        union = features.union_features(fmap, union_box(boxes[pairs[:, 0]], boxes[pairs[:, 1]]),
                                        frame_idx[pairs[:, 0]])
        h = m.relation(obj_feats, union, boxes, labels, pairs)
        if len(m.transformer.encoder):
            h = m.transformer.spatial_apply(h, spatial_index, spatial_mask, spatial_keep)
        if len(m.transformer.decoder):
            h = m.transformer.temporal_apply(h, temporal_index, temporal_position, temporal_mask, temporal_gather)
        return (m.attention_head(h).softmax(1), m.spatial_head(h).sigmoid(), m.contacting_head(h).sigmoid())

    def _boxes_and_pairs(self, video: dict):
        check_video_images(video, "STTran export")
        gt = gather_gt_boxes(video, self.model.device)
        num_frames = len(video["frames"])
        person, is_person = predcls_persons(gt.frame_idx, num_frames)
        return gt, pairs_of_persons(person, is_person, gt.frame_idx), num_frames

    def inputs(self, batched_input: dict) -> Tuple[torch.Tensor, ...]:
        gt, pairs, num_frames = self._boxes_and_pairs(batched_input)
        if len(pairs) == 0:
            raise ExportError(f"video '{batched_input.get('video_id')}' has no (person, object) pair; the exported "
                              "core needs at least one (a video without pairs has nothing to score).")
        frame_of_pair = gt.frame_idx[pairs[:, 1]]
        sp = self.model.transformer.spatial_layout(frame_of_pair, num_frames)
        tm = self.model.transformer.temporal_layout(frame_of_pair, num_frames)
        images = batched_input["images"].to(self.model.device, torch.float32)
        return (images, gt.boxes, gt.frame_idx, gt.labels, pairs, sp["index"], sp["mask"], sp["keep"],
                tm["index"], tm["position"], tm["mask"], tm["gather"])

    def postprocess(self, outputs: Sequence[torch.Tensor], batched_input: dict) -> dict:
        gt, pairs, num_frames = self._boxes_and_pairs(batched_input)
        att, spa, con = outputs
        scores = torch.ones(len(gt.boxes))
        return {"frames": split_frames(num_frames, gt.frame_idx, gt.original, gt.labels, scores, pairs,
                                       attention=att, spatial=spa, contacting=con)}


# ------------------------------------------------------------------------------------------------ keyframes
class KeyframeCore(ExportCore):
    """Keyframe detectors: one video's frames ``(T, 3, H, W)`` float 0-255 (``KeyframeDetector``) or step features
    ``(T, D)`` (``KeyframeFeatureDetector``) -> importance ``scores (T,)`` in [0, 1]; T (and H, W) dynamic.

    The eager model chunks the backbone over ``BACKBONE_CHUNK`` frames only to bound memory; the core runs them at
    once (eval-mode BatchNorm is per frame).
    """

    family = "keyframe"
    output_names = ("scores",)
    python = "the per-video dict (scores, video_id)"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.pixels = isinstance(model, KeyframeDetector)
        if self.pixels:
            self.input_names = ("frames",)
            self.dynamic_axes = {"frames": {0: "steps", 2: "height", 3: "width"}, "scores": {0: "steps"}}
            self.exported = ("normalisation, backbone, input projection, sinusoidal positions, transformer encoder, "
                             "local + global attention, fusion, scorer, sigmoid")
        else:
            self.input_names = ("features",)
            self.dynamic_axes = {"features": {0: "steps"}, "scores": {0: "steps"}}
            self.exported = ("input projection, sinusoidal positions, transformer encoder, local + global attention, "
                             "fusion, scorer, sigmoid")

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        m = self.model
        steps = m.backbone((x - m.pixel_mean) / m.pixel_std) if self.pixels else x
        steps = steps[None]
        valid = torch.ones_like(steps[..., 0], dtype=torch.bool)
        return (m.score(steps, valid)[0],)

    def inputs(self, batched_input: dict) -> Tuple[torch.Tensor, ...]:
        key = "frames" if self.pixels else "features"
        x = batched_input.get(key)
        if x is None or x.ndim != (4 if self.pixels else 2):
            got = None if x is None else tuple(x.shape)
            raise ExportError(f"keyframe export needs the mapper's '{key}'; got {got}.")
        return (x.to(self.model.device, torch.float32),)

    def postprocess(self, outputs: Sequence[torch.Tensor], batched_input: dict) -> dict:
        return {"scores": outputs[0], "video_id": batched_input.get("video_id")}


# ------------------------------------------------------------------------------------------------ text-to-video
class UNetCore(ExportCore):
    """Text-to-video: diffusers' ``UNet3DConditionModel`` as one denoising step, ``(sample (B, C, F, h, w),
    timestep (B,) int64, text (B, L, D)) -> noise (B, C, F, h, w)``; B and F dynamic. diffusers has no export of its
    own for this UNet (its ONNX support is ``OnnxRuntimeModel`` + the Stable Diffusion 2D ONNX pipelines, which run
    graphs exported elsewhere), so the core is traced like the others."""

    family = "text_to_video"
    input_names = ("sample", "timestep", "text")
    output_names = ("noise",)
    dynamic_axes = {"sample": {0: "batch", 2: "frames"}, "timestep": {0: "batch"}, "text": {0: "batch"},
                    "noise": {0: "batch", 2: "frames"}}
    exported = "the 3D UNet (one denoising step: noise prediction)"
    python = ("tokenizer and CLIP text encoder, VAE encode / decode, DDIM scheduler loop and classifier-free guidance "
              "(TextToVideoDiffusion.generate)")

    def __init__(self, model: TextToVideoDiffusion):
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.model.unet(sample, timestep, encoder_hidden_states=text, return_dict=False)[0],)

    def inputs(self, batched_input: dict) -> Tuple[torch.Tensor, ...]:
        """A denoising step's inputs for one mapped clip: its VAE latents, the middle timestep, its caption's text
        states (what ``diffusion_loss`` feeds the UNet)."""
        m = self.model
        with torch.no_grad():
            latents = m.encode_videos(batched_input["video"][None].to(m.device), sample=False)
            text = m.encode_prompts([batched_input.get("caption", "")])
        t = torch.full((1,), m.noise_scheduler.config.num_train_timesteps // 2, dtype=torch.int64, device=m.device)
        return (latents, t, text)

    def postprocess(self, outputs: Sequence[torch.Tensor], batched_input: dict) -> dict:
        return {"noise": outputs[0]}


FAMILIES = ("image_sgg", "video_sgg", "keyframe", "text_to_video")


def build_core(model: nn.Module) -> ExportCore:
    """The export core of ``model`` (an eval-mode sgg meta-architecture), or :class:`ExportError` saying why it has
    none."""
    name = type(model).__name__
    if isinstance(model, (DETR, SpeaQ)):
        return ImageSGGCore(model).eval()
    if type(model) is STTran:
        if model.mode != "predcls":
            raise ExportError(f"STTran in {model.mode} is not exported: its object classifier's (SGCls) or detector's "
                              "(SGDet) labels decide the (person, object) pairs, a data-dependent step between the "
                              "network's halves; export the PredCls model (TEST.RELATION.MODE predcls).")
        if not isinstance(model.features, BackboneRoIFeatures):
            raise ExportError(f"STTran export covers MODEL.VIDEO_FEATURES.NAME BackboneRoIFeatures; this model uses "
                              f"{type(model.features).__name__}.")
        return VideoSGGCore(model).eval()
    if isinstance(model, (KeyframeDetector, KeyframeFeatureDetector)):
        return KeyframeCore(model).eval()
    if isinstance(model, TextToVideoDiffusion):
        return UNetCore(model).eval()
    raise ExportError(f"MODEL.META_ARCHITECTURE {name} has no export core; exported families: DETR, SpeaQ, "
                      "IterativeSG, STTran (PredCls), KeyframeDetector, KeyframeFeatureDetector, TextToVideoDiffusion "
                      "(its UNet). See docs/deploy.md.")

