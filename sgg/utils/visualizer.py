"""Drawing helpers shared by tools: contact sheets of frames, boxes and labels on images."""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["make_contact_sheet", "save_contact_sheet", "draw_boxes"]

logger = logging.getLogger(__name__)


def _to_hwc_uint8(frame) -> np.ndarray:
    arr = frame.detach().cpu().numpy() if hasattr(frame, "detach") else np.asarray(frame)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2 or arr.shape[-1] == 1:
        arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    return arr


def make_contact_sheet(frames: Sequence, captions: Optional[Sequence[str]] = None, columns: int = 0,
                       thumb_height: int = 128, pad: int = 4) -> Image.Image:
    """Tile ``frames`` (HWC or CHW, uint8 or float in [0, 1]) into one RGB image with optional captions.

    ``columns=0`` picks a near-square grid. Captions are drawn in a strip under each thumbnail.
    """
    if len(frames) == 0:
        raise ValueError("make_contact_sheet needs at least one frame.")
    thumbs = []
    for frame in frames:
        img = Image.fromarray(_to_hwc_uint8(frame))
        scale = thumb_height / img.height
        thumbs.append(img.resize((max(1, round(img.width * scale)), thumb_height), Image.BILINEAR))
    cols = columns or math.ceil(math.sqrt(len(thumbs)))
    rows = math.ceil(len(thumbs) / cols)
    cell_w = max(t.width for t in thumbs)
    caption_h = 14 if captions else 0
    cell_h = thumb_height + caption_h
    sheet = Image.new("RGB", (cols * (cell_w + pad) + pad, rows * (cell_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, thumb in enumerate(thumbs):
        r, c = divmod(i, cols)
        x, y = pad + c * (cell_w + pad), pad + r * (cell_h + pad)
        sheet.paste(thumb, (x, y))
        if captions:
            draw.text((x + 2, y + thumb_height + 1), str(captions[i]), fill=(0, 0, 0))
    return sheet


def save_contact_sheet(path: str, frames: Sequence, captions: Optional[Sequence[str]] = None, **kwargs) -> str:
    """Write :func:`make_contact_sheet` to ``path`` (PNG); returns the path."""
    make_contact_sheet(frames, captions, **kwargs).save(path)
    logger.info("Wrote contact sheet %s (%d frames)", path, len(frames))
    return path


def draw_boxes(image, boxes, labels: Optional[Sequence[str]] = None, color=(255, 0, 0)) -> Image.Image:
    """Draw xyxy ``boxes`` (N,4) with optional text ``labels`` on a copy of ``image``."""
    img = Image.fromarray(_to_hwc_uint8(image)).copy()
    draw = ImageDraw.Draw(img)
    for i, box in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        draw.rectangle([float(v) for v in box], outline=color, width=2)
        if labels is not None:
            draw.text((box[0] + 2, box[1] + 1), str(labels[i]), fill=color)
    return img
