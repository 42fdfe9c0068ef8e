"""``ActionGenomeMapper``: an Action Genome video dict -> model input (frames decoded and resized, boxes scaled).

Output of ``mapper(video_dict)`` (a new dict; the dataset dict is not modified)::

    {**video_dict,                       # video_id, dataset_name, frames (boxes still in original pixels)
     "images": uint8 tensor (T, 3, H', W'),   # RGB frames, short side INPUT.MIN_SIZE_TEST, long side <= MAX_SIZE_TEST
     "image_scale": float,               # H' / H (= W' / W up to rounding)
     "image_size": (H', W'),
     "flipped": bool}
    and every frame dict gains "gt_boxes": float32 tensor (N, 4), its boxes in the resized frame.

A video dict may carry its frames already decoded as ``frames_rgb`` (uint8 (T, H, W, 3), one per frame dict; what
:class:`sgg.engine.Predictor` passes for a video file), instead of one PNG per frame dict's ``file_name``. Frame dicts
without ``boxes`` (an unannotated video, SGDet) get an empty (0, 4) box array.

Training and test use the same size (STTran resizes every frame to short side 600, long side <= 1000). In training,
with ``INPUT.RANDOM_FLIP = "horizontal"``, the whole video is flipped with probability 0.5: images, ``gt_boxes`` and the
frame dicts' ``boxes`` together. No predicate changes meaning under a horizontal flip (AG has no left/right
predicates; ``on_the_side_of`` is symmetric), so relations are kept as they are.
"""

from __future__ import annotations

import logging
import random
from typing import Tuple

import numpy as np
import torch
from PIL import Image

from sgg.config import configurable
from sgg.utils.errors import FileReadError, MissingFileError, one_line

from .build import MAPPER_REGISTRY

__all__ = ["ActionGenomeMapper", "resized_shape"]

logger = logging.getLogger(__name__)


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int, float]:
    """``(H', W', scale)`` with the short side ``min_size`` unless that makes the long side exceed ``max_size``."""
    scale = min_size / min(height, width)
    if max_size > 0 and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(round(height * scale)), int(round(width * scale)), scale


@MAPPER_REGISTRY.register()
class ActionGenomeMapper:
    """Loads a video's frames (PNG) and prepares them for a video SGG model; see the module docstring."""

    @configurable
    def __init__(self, *, is_train: bool, min_size: int, max_size: int, flip_prob: float = 0.0):
        """
        Args:
            is_train: training mode (enables the random flip).
            min_size: target short side in pixels.
            max_size: cap on the long side in pixels (<= 0: no cap).
            flip_prob: probability of flipping a whole training video horizontally.
        """
        if min_size <= 0:
            raise ValueError(f"ActionGenomeMapper: min_size (INPUT.MIN_SIZE_TEST) must be > 0, got {min_size}.")
        self.is_train = is_train
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.flip_prob = float(flip_prob) if is_train else 0.0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        """``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` for both splits, flip from ``INPUT.RANDOM_FLIP``."""
        return {"is_train": is_train, "min_size": cfg.INPUT.MIN_SIZE_TEST, "max_size": cfg.INPUT.MAX_SIZE_TEST,
                "flip_prob": 0.5 if cfg.INPUT.RANDOM_FLIP == "horizontal" else 0.0}

    def _read_frames(self, video: dict) -> np.ndarray:
        if video.get("frames_rgb") is not None:
            frames = np.asarray(video["frames_rgb"])
            if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) != len(video["frames"]) or not len(frames):
                raise ValueError(f"Video '{video.get('video_id')}': 'frames_rgb' must be (T, H, W, 3) with one image "
                                 f"per frame dict ({len(video['frames'])}), got {frames.shape}.")
            return frames.astype(np.uint8, copy=False)
        frames = []
        for frame in video["frames"]:
            path = frame["file_name"]
            try:
                with Image.open(path) as im:
                    image = np.asarray(im.convert("RGB"))
            except FileNotFoundError:
                raise MissingFileError(f"Frame '{path}' of video '{video.get('video_id')}' not found; extract the "
                                       "Action Genome frames into <root>/frames/<VID>.mp4/<frame:06d>.png "
                                       "(datasets/README_action_genome.md).") from None
            except (OSError, SyntaxError, ValueError) as e:  # PIL: truncated data, unknown format, bad header
                raise FileReadError(f"Frame '{path}' of video '{video.get('video_id')}' cannot be decoded "
                                    f"({one_line(e)}); the file is truncated or corrupt. Re-extract the Action Genome "
                                    "frames (datasets/README_action_genome.md).") from None
            expected = (int(frame["height"]), int(frame["width"]))
            if image.shape[:2] != expected:
                raise ValueError(f"Frame '{path}' is {image.shape[1]}x{image.shape[0]} (WxH) but its annotation "
                                 f"(person_bbox.pkl 'bbox_size') says {expected[1]}x{expected[0]}; the frames do not "
                                 "match the annotations (re-extract them at the original resolution).")
            if frames and image.shape != frames[0].shape:
                raise ValueError(f"Video '{video.get('video_id')}': frame '{path}' has size {image.shape[:2]}, "
                                 f"the first frame {frames[0].shape[:2]}; all frames of a video must share one size.")
            frames.append(image)
        if not frames:
            raise ValueError(f"Video '{video.get('video_id')}' has no frames.")
        return np.stack(frames)

    def __call__(self, video: dict) -> dict:
        """Map one video dict (see the module docstring for the output)."""
        frames = self._read_frames(video)
        t, h, w, _ = frames.shape
        new_h, new_w, scale = resized_shape(h, w, self.min_size, self.max_size)
        if (new_h, new_w) != (h, w):
            frames = np.stack([np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BILINEAR)) for f in frames])
        flipped = self.flip_prob > 0 and random.random() < self.flip_prob
        if flipped:
            frames = frames[:, :, ::-1]
        out = dict(video)
        out.pop("frames_rgb", None)
        out["frames"] = [self._map_frame(frame, scale, w, new_w, flipped) for frame in video["frames"]]
        out["images"] = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
        out["image_scale"] = float(scale)
        out["image_size"] = (new_h, new_w)
        out["flipped"] = flipped
        return out

    @staticmethod
    def _map_frame(frame: dict, scale: float, width: int, new_width: int, flipped: bool) -> dict:
        boxes = np.asarray(frame.get("boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4).copy()
        gt_boxes = boxes * np.float32(scale)
        if flipped:
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            gt_boxes[:, [0, 2]] = new_width - gt_boxes[:, [2, 0]]
        out = dict(frame)
        out["boxes"] = boxes
        out["gt_boxes"] = torch.from_numpy(gt_boxes)
        return out
