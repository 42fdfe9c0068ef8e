"""Image + box augmentations: fvcore's ``Transform`` classes (the ones detectron2's ``T.*`` build on) drawn by
detectron2-style ``Augmentation`` classes, on numpy HWC uint8 images.

An *augmentation* draws random parameters (from numpy's global RNG, which the train loader seeds per sample, so
augmentations are reproducible and resumable) and returns a deterministic fvcore *transform* that is then applied to
the image (``apply_image``) and to its xyxy boxes (``apply_box``). Flip, crop and transform lists are fvcore's own;
:class:`ResizeTransform` is sgg's because fvcore's ``ScaleTransform`` resizes with ``torch.nn.functional.interpolate``,
while detectron2 (and so SpeaQ / DETR's recipe) resizes with PIL's bilinear filter, which gives other pixels.
:func:`build_scene_graph_augmentations` reproduces SpeaQ / DETR's recipe: random flip, then (with probability
``INPUT.CROP.PROB``) resize-shortest-edge + random crop, then resize-shortest-edge.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np
from fvcore.transforms.transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    Transform,
    TransformList,
)
from PIL import Image

__all__ = [
    "Transform", "ResizeTransform", "CropTransform", "HFlipTransform", "NoOpTransform", "TransformList",
    "flips_horizontally", "Augmentation", "ResizeShortestEdge", "RandomFlip", "RandomCrop", "apply_augmentations",
    "build_scene_graph_augmentations",
]

logger = logging.getLogger(__name__)


class ResizeTransform(Transform):
    """Resize an ``h x w`` image to ``new_h x new_w`` with PIL's bilinear filter (detectron2's ``ResizeTransform``)."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__()
        self._set_attributes({"h": int(h), "w": int(w), "new_h": int(new_h), "new_w": int(new_w)})

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """(h, w, C) uint8 -> (new_h, new_w, C) uint8."""
        if (img.shape[0], img.shape[1]) != (self.h, self.w):
            raise ValueError(f"ResizeTransform expected a {self.h}x{self.w} image, got {img.shape[:2]}.")
        if (self.h, self.w) == (self.new_h, self.new_w):
            return img
        return np.asarray(Image.fromarray(img).resize((self.new_w, self.new_h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """(N, 2) x, y: x scaled by new_w / w, y by new_h / h."""
        coords[:, 0] = coords[:, 0] * (self.new_w / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h / self.h)
        return coords


def flips_horizontally(transform: Transform) -> bool:
    """True when ``transform`` (a single transform or a list) mirrors the image left-right an odd number of times
    (the mapper then swaps left / right-type predicates)."""
    parts = transform.transforms if isinstance(transform, TransformList) else [transform]
    return sum(isinstance(t, HFlipTransform) for t in parts) % 2 == 1


class Augmentation:
    """Draws a :class:`Transform` for an image of a given size."""

    def get_transform(self, height: int, width: int) -> Transform:
        """The transform for an ``height x width`` image (random parameters from ``np.random``)."""
        raise NotImplementedError


def _shortest_edge_size(h: int, w: int, size: int, max_size: int) -> Tuple[int, int]:
    """detectron2's ResizeShortestEdge arithmetic: short side -> ``size``, long side capped at ``max_size``."""
    scale = size / min(h, w)
    new_h, new_w = (size, scale * w) if h < w else (scale * h, size)
    if max_size > 0 and max(new_h, new_w) > max_size:
        rescale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * rescale, new_w * rescale
    return int(new_h + 0.5), int(new_w + 0.5)


class ResizeShortestEdge(Augmentation):
    """Resize so the short side is one of ``short_edge_length`` ("choice") or in its [min, max] ("range")."""

    def __init__(self, short_edge_length: Sequence[int], max_size: int = 0, sample_style: str = "choice"):
        if sample_style not in ("choice", "range"):
            raise ValueError(f"ResizeShortestEdge sample_style must be 'choice' or 'range', got '{sample_style}'.")
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length,)
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(f"sample_style='range' needs (min, max) sizes, got {tuple(short_edge_length)} "
                             "(INPUT.MIN_SIZE_TRAIN with INPUT.MIN_SIZE_TRAIN_SAMPLING range).")
        self.sizes, self.max_size, self.sample_style = tuple(int(s) for s in short_edge_length), int(max_size), \
            sample_style

    def get_transform(self, height: int, width: int) -> Transform:
        """A :class:`ResizeTransform` to the drawn size."""
        if self.sample_style == "range":
            size = int(np.random.randint(self.sizes[0], self.sizes[1] + 1))
        else:
            size = int(np.random.choice(self.sizes))
        new_h, new_w = _shortest_edge_size(height, width, size, self.max_size)
        return ResizeTransform(height, width, new_h, new_w)


class RandomFlip(Augmentation):
    """Horizontal flip with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        self.prob = float(prob)

    def get_transform(self, height: int, width: int) -> Transform:
        """:class:`HFlipTransform` or a :class:`NoOpTransform`."""
        return HFlipTransform(width) if np.random.rand() < self.prob else NoOpTransform()


class RandomCrop(Augmentation):
    """detectron2's RandomCrop: ``crop_type`` in relative, relative_range, absolute, absolute_range."""

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        if crop_type not in ("relative", "relative_range", "absolute", "absolute_range"):
            raise ValueError(f"Unknown INPUT.CROP.TYPE '{crop_type}'; expected relative, relative_range, absolute "
                             "or absolute_range.")
        self.crop_type, self.crop_size = crop_type, tuple(crop_size)

    def _crop_hw(self, h: int, w: int) -> Tuple[int, int]:
        a, b = self.crop_size
        if self.crop_type == "relative":
            return int(h * a + 0.5), int(w * b + 0.5)
        if self.crop_type == "relative_range":
            ch, cw = np.asarray([a, b]) + np.random.rand(2) * (1 - np.asarray([a, b]))
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(int(a), h), min(int(b), w)
        ch = np.random.randint(min(h, int(a)), min(h, int(b)) + 1)
        cw = np.random.randint(min(w, int(a)), min(w, int(b)) + 1)
        return int(ch), int(cw)

    def get_transform(self, height: int, width: int) -> Transform:
        """A :class:`CropTransform` at a uniformly random position."""
        ch, cw = self._crop_hw(height, width)
        y0 = np.random.randint(height - ch + 1)
        x0 = np.random.randint(width - cw + 1)
        return CropTransform(x0, y0, cw, ch)


def apply_augmentations(augmentations: Sequence[Augmentation], image: np.ndarray) -> Tuple[np.ndarray, TransformList]:
    """Draw and apply each augmentation in turn (each sees the size left by the previous one)."""
    transforms: List[Transform] = []
    for aug in augmentations:
        t = aug.get_transform(image.shape[0], image.shape[1])
        image = t.apply_image(image)
        transforms.append(t)
    return image, TransformList(transforms)


def build_scene_graph_augmentations(cfg, is_train: bool) -> Tuple[List[Augmentation], Optional[List[Augmentation]]]:
    """``(main, crop)`` augmentation lists from ``INPUT.*``.

    Training: main = [RandomFlip (if ``INPUT.RANDOM_FLIP == "horizontal"``), ResizeShortestEdge(MIN_SIZE_TRAIN)];
    ``crop`` (``INPUT.CROP.ENABLED``) = [ResizeShortestEdge(CROP.RESIZE_SHORTEST), RandomCrop(CROP.TYPE, CROP.SIZE)],
    inserted before the final resize with probability ``INPUT.CROP.PROB``. Test: [ResizeShortestEdge(MIN_SIZE_TEST)].
    """
    inp = cfg.INPUT
    if not is_train:
        return [ResizeShortestEdge((inp.MIN_SIZE_TEST,), inp.MAX_SIZE_TEST, "choice")], None
    if inp.RANDOM_FLIP not in ("horizontal", "none"):
        raise ValueError(f"INPUT.RANDOM_FLIP='{inp.RANDOM_FLIP}' is not supported for scene graphs; use 'horizontal' "
                         "or 'none' (a vertical flip would invert above/below-type predicates).")
    main: List[Augmentation] = [RandomFlip(0.5)] if inp.RANDOM_FLIP == "horizontal" else []
    main.append(ResizeShortestEdge(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING))
    crop = None
    if inp.CROP.ENABLED:
        crop = [ResizeShortestEdge(inp.CROP.RESIZE_SHORTEST, 0, "choice"), RandomCrop(inp.CROP.TYPE, inp.CROP.SIZE)]
    return main, crop
