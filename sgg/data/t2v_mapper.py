"""Text-to-video mapper: decode a clip, cut / pad it to N frames, resize, augment, and attach its caption.

Input: an SSv2-style dataset dict (``file_name``, ``caption``, ...; see ``sgg.data.datasets.ssv2``).
Output: ``{"video": uint8 tensor (T, 3, H, W), "caption": str, "video_id", "file_name", "label_id", "flipped"}``.
Frames stay uint8 until the model so that worker -> trainer transfers are 4x smaller than float.

Augmentations (training only): random temporal window, horizontal flip (the words "left" / "right" in the caption
are swapped with it, otherwise "pushing X from left to right" would be taught backwards), and colour jitter applied
identically to every frame of a clip (per-frame jitter would look like flicker, which the model would learn).
"""

from __future__ import annotations

import logging
import re
from typing import Tuple

import torch
import torch.nn.functional as F

from sgg.config import configurable
from sgg.data.build import MAPPER_REGISTRY
from sgg.utils.video_io import read_video

__all__ = ["TextToVideoMapper", "swap_left_right", "select_window", "resize_and_crop", "color_jitter"]

logger = logging.getLogger(__name__)

_LEFT_RIGHT = re.compile(r"\b(left|right)(?=\b|ward)", flags=re.IGNORECASE)


def swap_left_right(caption: str) -> str:
    """Exchange "left" and "right" (keeping capitalisation): the caption of a horizontally flipped clip."""

    def _swap(match: re.Match) -> str:
        word = match.group(1)
        other = "right" if word.lower() == "left" else "left"
        return other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(_swap, caption)


def select_window(num_available: int, num_frames: int, *, random_start: bool) -> torch.Tensor:
    """Indices (num_frames,) of an N-frame window into a clip of ``num_available`` frames.

    Longer clips give a random (``random_start``) or centred window; shorter ones repeat their last frame (a clip
    that stops reads as "the object came to rest", unlike looping it back to the start).
    """
    if num_available <= 0:
        raise ValueError("select_window needs a clip with at least one frame.")
    if num_available >= num_frames:
        slack = num_available - num_frames
        start = int(torch.randint(0, slack + 1, (1,))) if random_start else slack // 2
        return torch.arange(start, start + num_frames)
    return torch.arange(num_frames).clamp(max=num_available - 1)


def resize_and_crop(video: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize float ``video`` (T, 3, H, W) so it covers ``size`` = (height, width) keeping aspect, then centre-crop."""
    out_h, out_w = int(size[0]), int(size[1])
    height, width = video.shape[-2:]
    scale = max(out_h / height, out_w / width)
    new_h, new_w = max(out_h, round(height * scale)), max(out_w, round(width * scale))
    if (new_h, new_w) != (height, width):
        video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    return video[..., top:top + out_h, left:left + out_w]


def color_jitter(video: torch.Tensor, strength: float) -> torch.Tensor:
    """Random brightness, contrast and saturation (each a factor in [1 - s, 1 + s]) shared by all frames.

    ``video``: float (T, 3, H, W) in [0, 255]; returns the same shape, clamped to [0, 255].
    """
    if strength <= 0:
        return video
    factors = 1.0 + (torch.rand(3) * 2.0 - 1.0) * strength
    video = video * factors[0]
    mean = video.mean()
    video = (video - mean) * factors[1] + mean
    gray = (0.299 * video[:, 0:1] + 0.587 * video[:, 1:2] + 0.114 * video[:, 2:3])
    video = gray + (video - gray) * factors[2]
    return video.clamp(0.0, 255.0)


@MAPPER_REGISTRY.register()
class TextToVideoMapper:
    """Dataset dict -> model input for text-to-video training / evaluation (see the module docstring)."""

    @configurable
    def __init__(self, *, is_train: bool, num_frames: int, fps: float, size: Tuple[int, int], random_flip: bool,
                 color_jitter_strength: float, temporal_crop: bool):
        """
        Args:
            is_train: apply the random augmentations (otherwise: centred window, no flip, no jitter).
            num_frames: frames per clip after trimming / padding.
            fps: decoding rate in frames per second.
            size: output (height, width) in pixels.
            random_flip: flip horizontally with probability 0.5 (captions follow).
            color_jitter_strength: see :func:`color_jitter`; 0 = off.
            temporal_crop: random window start in training (else centred).
        """
        if num_frames <= 0 or fps <= 0:
            raise ValueError(f"INPUT.T2V.NUM_FRAMES and INPUT.T2V.FPS must be positive, got {num_frames}, {fps}.")
        self.is_train = is_train
        self.num_frames, self.fps, self.size = int(num_frames), float(fps), (int(size[0]), int(size[1]))
        self.random_flip = random_flip and is_train
        self.color_jitter_strength = float(color_jitter_strength) if is_train else 0.0
        self.temporal_crop = temporal_crop and is_train

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        """Keyword arguments from ``INPUT.T2V.*``."""
        t2v = cfg.INPUT.T2V
        return {"is_train": is_train, "num_frames": t2v.NUM_FRAMES, "fps": t2v.FPS, "size": tuple(t2v.SIZE),
                "random_flip": t2v.RANDOM_FLIP, "color_jitter_strength": t2v.COLOR_JITTER,
                "temporal_crop": t2v.TEMPORAL_CROP}

    def __call__(self, dataset_dict: dict) -> dict:
        """Decode and transform one clip; see the module docstring for the output."""
        frames, _ = read_video(dataset_dict["file_name"], fps=self.fps)
        index = select_window(len(frames), self.num_frames, random_start=self.temporal_crop)
        video = torch.from_numpy(frames[index.numpy()]).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
        video = resize_and_crop(video, self.size)
        caption = dataset_dict["caption"]
        flipped = bool(self.random_flip and torch.rand(()) < 0.5)
        if flipped:
            video = video.flip(-1)
            caption = swap_left_right(caption)
        video = color_jitter(video, self.color_jitter_strength)
        return {
            "video": video.round().clamp(0, 255).to(torch.uint8),
            "caption": caption,
            "video_id": dataset_dict.get("video_id"),
            "file_name": dataset_dict["file_name"],
            "label_id": dataset_dict.get("label_id", -1),
            "flipped": flipped,
        }
