"""Box operations shared by data, models and evaluators: one IoU implementation, one convention switch.

All boxes are ``(..., 4)`` tensors. ``xyxy`` = (x1, y1, x2, y2) in pixels; ``cxcywh`` = (centre x, centre y, width,
height). ``plus_one=True`` selects the legacy convention of Scene-Graph-Benchmark / Faster R-CNN era code, where a box
covering pixels x1..x2 inclusive has width ``x2 - x1 + 1``; evaluators that must reproduce that code's numbers pass it.

Format conversions are torchvision's ``box_convert`` (bit-identical to the formulas DETR's ``box_ops`` writes out),
under DETR's names. IoU, GIoU and areas stay sgg's: torchvision has no ``+1`` convention, divides without a floor
(a zero-area union or hull — two degenerate boxes, which sigmoid box heads produce early in training — gives NaN
where sgg gives 0 / a finite GIoU) and does not clip negative widths; on regular boxes the numbers are the same
(tests/structures/test_boxes.py compares them).
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torchvision.ops import box_convert

__all__ = [
    "box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "box_xywh_to_xyxy", "box_area", "pairwise_iou",
    "pairwise_intersection", "generalized_box_iou", "union_box", "clip_boxes", "as_tensor",
    "paired_intersection", "paired_iou",
]

ArrayLike = Union[torch.Tensor, np.ndarray]


def as_tensor(x: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert numpy arrays / lists to a tensor of ``dtype`` (tensors are cast, not copied when possible)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return box_convert(boxes, "cxcywh", "xyxy")


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    return box_convert(boxes, "xyxy", "cxcywh")


def box_xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(x, y, w, h) with (x, y) the top-left corner -> (x1, y1, x2, y2)."""
    return box_convert(boxes, "xywh", "xyxy")


def box_area(boxes: ArrayLike, plus_one: bool = False) -> ArrayLike:
    """Area of ``(N, 4)`` xyxy boxes -> ``(N,)`` (numpy in -> numpy out, tensor in -> tensor out); degenerate boxes
    have area 0."""
    off = 1.0 if plus_one else 0.0
    lib = torch if isinstance(boxes, torch.Tensor) else np
    w = lib.clip(boxes[..., 2] - boxes[..., 0] + off, 0, None)
    h = lib.clip(boxes[..., 3] - boxes[..., 1] + off, 0, None)
    return w * h


def pairwise_intersection(boxes1: torch.Tensor, boxes2: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    """Intersection areas ``(N, M)`` of xyxy boxes ``(N, 4)`` and ``(M, 4)``."""
    off = 1.0 if plus_one else 0.0
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt + off).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def pairwise_iou(boxes1: ArrayLike, boxes2: ArrayLike, plus_one: bool = False) -> torch.Tensor:
    """IoU matrix ``(N, M)`` of xyxy boxes; pairs with zero union get IoU 0."""
    b1, b2 = as_tensor(boxes1), as_tensor(boxes2)
    inter = pairwise_intersection(b1, b2, plus_one)
    union = box_area(b1, plus_one)[:, None] + box_area(b2, plus_one)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) matrix ``(N, M)`` of xyxy boxes, in [-1, 1]."""
    inter = pairwise_intersection(boxes1, boxes2)
    area1, area2 = box_area(boxes1), box_area(boxes2)
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / union.clamp(min=1e-7)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull.clamp(min=1e-7)


def union_box(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Element-wise smallest box enclosing ``boxes1[i]`` and ``boxes2[i]`` (both ``(N, 4)`` xyxy)."""
    return torch.cat([torch.min(boxes1[:, :2], boxes2[:, :2]), torch.max(boxes1[:, 2:], boxes2[:, 2:])], dim=1)


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Clip xyxy boxes to the image ``[0, width] x [0, height]``."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def paired_intersection(boxes1: ArrayLike, boxes2: ArrayLike, plus_one: bool = False) -> ArrayLike:
    """Intersection area of ``boxes1[i]`` with ``boxes2[i]`` (both ``(N, 4)`` xyxy) -> ``(N,)``.

    Works on numpy arrays (returns numpy, used by dataset loaders over millions of pairs) and on tensors.
    """
    off = 1.0 if plus_one else 0.0
    lib = torch if isinstance(boxes1, torch.Tensor) else np
    w = lib.minimum(boxes1[:, 2], boxes2[:, 2]) - lib.maximum(boxes1[:, 0], boxes2[:, 0]) + off
    h = lib.minimum(boxes1[:, 3], boxes2[:, 3]) - lib.maximum(boxes1[:, 1], boxes2[:, 1]) + off
    return lib.clip(w, 0, None) * lib.clip(h, 0, None)


def paired_iou(boxes1: ArrayLike, boxes2: ArrayLike, plus_one: bool = False) -> ArrayLike:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` (both ``(N, 4)`` xyxy) -> ``(N,)``, in the inputs' dtype.

    numpy in -> numpy out, tensor in -> tensor out; float64 stays float64 (evaluators that must reproduce a
    float64 reference, e.g. the video SGG protocol, rely on that). Pairs with zero union get IoU 0.
    """
    lib = torch if isinstance(boxes1, torch.Tensor) else np
    inter = paired_intersection(boxes1, boxes2, plus_one)
    union = box_area(boxes1, plus_one) + box_area(boxes2, plus_one) - inter
    safe = lib.where(union > 0, union, lib.ones_like(union))
    return lib.where(union > 0, inter / safe, lib.zeros_like(inter))
