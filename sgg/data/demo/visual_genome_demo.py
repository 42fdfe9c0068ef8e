"""Procedural scene graphs written in the exact Visual Genome (VG150) on-disk layout.

Two styles share one vocabulary (12 coloured shapes, 10 spatial predicates):

* ``"vg"`` ("real-style"): textured low-frequency backgrounds, grey clutter, a lighting gradient, sensor noise, colour
  jitter, JPEG quality 80 -> ``$SGG_DATASETS/demo/vg``;
* ``"synthetic"`` (clean renders): flat backgrounds, exact colours -> ``$SGG_DATASETS/demo/synthetic_genome``.

Every annotated predicate is a deterministic function of the two boxes (:func:`geometric_predicate`), evaluated on the
boxes exactly as the loader decodes them, so a model can learn it from pixels. Predicates are drawn from a long-tailed
distribution ("near" ~25 %, "far from" ~3 %) and classes from a Zipf-like one, so recall and mean recall differ.
Generation is deterministic (seeded per image) and takes a few seconds; a lock plus an atomic directory rename make
concurrent first uses (several worker processes) safe.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from sgg.data.datasets.visual_genome import (
    CORRUPTED_IMAGE_IDS,
    VG_DICTS_FILE,
    VG_H5_FILE,
    VG_IMAGE_DATA_FILE,
    VG_IMAGE_DIR,
    decode_vg_boxes,
)

from .generation import ensure_generated

__all__ = [
    "DEMO_CLASSES", "DEMO_PREDICATES", "DEMO_ATTRIBUTES", "DEMO_SPECS", "geometric_predicate", "encode_vg_boxes",
    "generate_demo_dataset", "write_vg_files", "demo_root", "ensure_demo_dataset", "demo_num_val_images",
    "sample_scene", "render_image",
]

logger = logging.getLogger(__name__)

_COLOURS = {"red": (215, 45, 40), "green": (40, 165, 60), "blue": (45, 85, 215)}
_SHAPES = ("square", "circle", "triangle", "diamond")
DEMO_CLASSES: Tuple[str, ...] = tuple(f"{c} {s}" for s in _SHAPES for c in _COLOURS)
# Ordered by sampling probability (long tail); "left of"/"right of" swap under a horizontal flip.
DEMO_PREDICATES: Tuple[str, ...] = (
    "near", "on", "left of", "right of", "above", "below", "inside", "under", "contains", "far from",
)
_PREDICATE_PROBS = np.array([0.25, 0.18, 0.11, 0.11, 0.09, 0.08, 0.07, 0.05, 0.03, 0.03])
DEMO_ATTRIBUTES: Tuple[str, ...] = ("small", "medium", "large")
_CLASS_PROBS = 1.0 / np.arange(1, len(DEMO_CLASSES) + 1) ** 0.8
_CLASS_PROBS /= _CLASS_PROBS.sum()

# (number of split-0 images, number of test images, val hold-out, seed, first image id)
DEMO_SPECS: Dict[str, dict] = {
    "vg": {"num_train": 360, "num_test": 120, "num_val": 40, "seed": 2024, "first_id": 1, "dirname": "vg"},
    "synthetic": {"num_train": 360, "num_test": 90, "num_val": 0, "seed": 4048, "first_id": 10_000_001,
                  "dirname": "synthetic_genome"},
}
_MARKER = ".complete-v1"

# Geometry thresholds (pixels) of the predicate rules, and the wider margins the generator keeps from them so that
# the ~0.1 px error of the h5's integer box encoding never changes a predicate.
_TOUCH, _SEP, _NEAR, _FAR, _MIN_OVERLAP = 3.0, 8.0, 24.0, 40.0, 0.3


def _overlap_fraction(a1: float, a2: float, b1: float, b2: float) -> float:
    return (min(a2, b2) - max(a1, b1)) / max(min(a2 - a1, b2 - b1), 1e-6)


def geometric_predicate(sub: Sequence[float], obj: Sequence[float]) -> Optional[str]:
    """The demo predicate that holds between two xyxy pixel boxes, or ``None`` when no rule applies.

    Rules, first match wins: ``inside``/``contains`` (strict containment); with horizontal overlap >= 30 % of the
    narrower box: ``on``/``under`` (touching within 3 px), ``above``/``below`` (gap > 8 px); with vertical overlap
    >= 30 %: ``left of``/``right of`` (gap > 8 px); diagonal pairs: ``near`` (larger gap <= 24 px) or ``far from``
    (>= 40 px).
    """
    sx1, sy1, sx2, sy2 = (float(v) for v in sub)
    ox1, oy1, ox2, oy2 = (float(v) for v in obj)
    if sx1 > ox1 and sy1 > oy1 and sx2 < ox2 and sy2 < oy2:
        return "inside"
    if ox1 > sx1 and oy1 > sy1 and ox2 < sx2 and oy2 < sy2:
        return "contains"
    if _overlap_fraction(sx1, sx2, ox1, ox2) >= _MIN_OVERLAP:
        if abs(sy2 - oy1) <= _TOUCH:
            return "on"
        if abs(oy2 - sy1) <= _TOUCH:
            return "under"
        if sy2 < oy1 - _SEP:
            return "above"
        if sy1 > oy2 + _SEP:
            return "below"
        return None
    if _overlap_fraction(sy1, sy2, oy1, oy2) >= _MIN_OVERLAP:
        if sx2 < ox1 - _SEP:
            return "left of"
        if sx1 > ox2 + _SEP:
            return "right of"
        return None
    x_gap = max(ox1 - sx2, sx1 - ox2)
    y_gap = max(oy1 - sy2, sy1 - oy2)
    if x_gap <= 0 or y_gap <= 0:
        return None
    gap = max(x_gap, y_gap)
    if gap <= _NEAR:
        return "near"
    if gap >= _FAR:
        return "far from"
    return None


def encode_vg_boxes(boxes_xyxy: np.ndarray, width: int, height: int, box_scale: int) -> np.ndarray:
    """Pixel xyxy boxes -> the h5's int32 ``[cx, cy, w, h]`` in a frame whose longer side is ``box_scale``.

    Widths/heights are made even so that the loader's ``x1 = trunc(cx - w / 2)`` gives back the rounded corner.
    """
    s = box_scale / max(width, height)
    b = np.asarray(boxes_xyxy, dtype=np.float64) * s
    x1y1 = np.round(b[:, :2])
    wh = np.maximum(2 * np.round((b[:, 2:] - b[:, :2]) / 2), 2)
    return np.concatenate([x1y1 + wh / 2, wh], axis=1).astype(np.int32)


# ---------------------------------------------------------------------------- layout sampling
def _size_for(role: str, rng: np.random.Generator) -> Tuple[float, float]:
    lo, hi = {"container": (64, 96), "content": (16, 28), "normal": (22, 48)}[role]
    return float(rng.integers(lo, hi + 1)), float(rng.integers(lo, hi + 1))


def _place_subject(pred: str, o: np.ndarray, w: float, h: float, rng: np.random.Generator) -> np.ndarray:
    """A subject box of size (w, h) standing in relation ``pred`` to object box ``o`` (with safety margins)."""
    ox1, oy1, ox2, oy2 = o
    ow, oh = ox2 - ox1, oy2 - oy1
    u = rng.uniform

    def hshift():  # horizontal placement with >= 50 % overlap of the narrower box
        m = 0.5 * min(w, ow)
        return u(ox1 + m - w, ox2 - m)

    def vshift():
        m = 0.5 * min(h, oh)
        return u(oy1 + m - h, oy2 - m)

    if pred == "inside":
        x1, y1 = u(ox1 + 4, ox2 - 4 - w), u(oy1 + 4, oy2 - 4 - h)
    elif pred == "contains":
        x1, y1 = u(ox2 + 4 - w, ox1 - 4), u(oy2 + 4 - h, oy1 - 4)
    elif pred == "on":
        x1, y1 = hshift(), oy1 - h
    elif pred == "under":
        x1, y1 = hshift(), oy2
    elif pred == "above":
        x1, y1 = hshift(), oy1 - h - u(14, 40)
    elif pred == "below":
        x1, y1 = hshift(), oy2 + u(14, 40)
    elif pred == "left of":
        x1, y1 = ox1 - w - u(14, 40), vshift()
    elif pred == "right of":
        x1, y1 = ox2 + u(14, 40), vshift()
    else:  # diagonal: near / far from
        gx, gy = (u(6, 18), u(6, 18)) if pred == "near" else (u(50, 90), u(4, 60))
        if rng.random() < 0.5:
            gx, gy = gy, gx
        x1 = ox2 + gx if rng.random() < 0.5 else ox1 - gx - w
        y1 = oy2 + gy if rng.random() < 0.5 else oy1 - gy - h
    return np.round(np.array([x1, y1, x1 + w, y1 + h]))


def _fits(box: np.ndarray, width: int, height: int, others: List[np.ndarray], partner: Optional[int]) -> bool:
    if box[0] < 2 or box[1] < 2 or box[2] > width - 3 or box[3] > height - 3:
        return False
    for k, other in enumerate(others):
        if k == partner:
            continue
        inter_w = min(box[2], other[2]) - max(box[0], other[0])
        inter_h = min(box[3], other[3]) - max(box[1], other[1])
        if inter_w > -2 and inter_h > -2:  # keep unrelated objects apart so each stays visible
            return False
    return True


def _roles(pred: str) -> Tuple[str, str]:
    return {"inside": ("content", "container"), "contains": ("container", "content")}.get(pred, ("normal", "normal"))


def sample_scene(rng: np.random.Generator, width: int, height: int, max_relations: int = 3):
    """Boxes (N, 4) pixel xyxy, labels (N,) 0-based, relations (R, 3) [sub, obj, pred] of one image."""
    boxes: List[np.ndarray] = []
    labels: List[int] = []
    relations: List[Tuple[int, int, int]] = []
    n_target = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25])[()] if max_relations >= 3 else 1)
    for _ in range(n_target * 4):  # a few attempts per wanted relation
        if len(relations) >= n_target:
            break
        pred = DEMO_PREDICATES[int(rng.choice(len(DEMO_PREDICATES), p=_PREDICATE_PROBS))]
        sub_role, obj_role = _roles(pred)
        reuse = boxes and obj_role == "normal" and rng.random() < 0.35
        if reuse:
            oi = int(rng.integers(len(boxes)))
            o = boxes[oi]
        else:
            ow, oh = _size_for(obj_role, rng)
            o = np.round(np.array([rng.uniform(2, width - 3 - ow), rng.uniform(2, height - 3 - oh)]))
            o = np.concatenate([o, o + [ow, oh]])
            if not _fits(o, width, height, boxes, None):
                continue
        sw, sh = _size_for(sub_role, rng)
        for _ in range(6):
            s = _place_subject(pred, o, sw, sh, rng)
            others = boxes if reuse else boxes + [o]
            if _fits(s, width, height, others, oi if reuse else len(boxes)):
                break
        else:
            continue
        if not reuse:
            boxes.append(o)
            labels.append(int(rng.choice(len(DEMO_CLASSES), p=_CLASS_PROBS)))
            oi = len(boxes) - 1
        boxes.append(s)
        labels.append(int(rng.choice(len(DEMO_CLASSES), p=_CLASS_PROBS)))
        relations.append((len(boxes) - 1, oi, DEMO_PREDICATES.index(pred)))
    box_arr = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    return box_arr, np.array(labels, dtype=np.int64), np.array(relations, dtype=np.int64).reshape(-1, 3)


# ---------------------------------------------------------------------------- rendering
def _background(rng: np.random.Generator, width: int, height: int, style: str) -> np.ndarray:
    if style == "synthetic":
        colour = rng.integers(170, 245, size=3)
        return np.broadcast_to(colour, (height, width, 3)).astype(np.float32)
    # Low-saturation blotches (grey plus a faint tint), so colour stays the cue that tells classes apart.
    cells = (max(2, height // 24), max(2, width // 24))
    grey = rng.uniform(70, 200, size=cells + (1,)) + rng.uniform(-18, 18, size=3)
    coarse = np.clip(grey + rng.normal(0, 6, size=cells + (3,)), 0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.float32)
    fine = rng.normal(0, 10, size=(height // 4 + 1, width // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:height, :width]
    return texture + fine


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: np.ndarray, colour) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    x2, y2 = x2 - 1, y2 - 1  # PIL includes the end pixel; the box covers [x1, x2)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "square":
        draw.rectangle([x1, y1, x2, y2], fill=colour)
    elif shape == "circle":
        draw.ellipse([x1, y1, x2, y2], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x1, y2), (x2, y2), (cx, y1)], fill=colour)
    else:
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=colour)


def render_image(rng: np.random.Generator, width: int, height: int, boxes: np.ndarray, labels: np.ndarray,
                 style: str) -> Image.Image:
    """Draw the objects (largest first, so contents stay on top of containers) over a style-specific background."""
    canvas = Image.fromarray(np.clip(_background(rng, width, height, style), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    if style == "vg":  # muted clutter that belongs to no class
        for _ in range(int(rng.integers(4, 10))):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            grey = int(rng.integers(70, 190))
            tint = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.integers(-12, 13, size=3))
            if rng.random() < 0.5:
                draw.line([(x, y), (x + rng.uniform(-60, 60), y + rng.uniform(-60, 60))], fill=tint, width=2)
            else:
                r = rng.uniform(3, 9)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=tint)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for k in np.argsort(-areas, kind="stable"):
        name = DEMO_CLASSES[int(labels[k])]
        colour_name, shape = name.split(" ")
        colour = np.array(_COLOURS[colour_name])
        if style == "vg":
            colour = np.clip(colour + rng.integers(-25, 26, size=3), 0, 255)
        _draw_shape(draw, shape, boxes[k], tuple(int(c) for c in colour))
    if style == "synthetic":
        return canvas
    pixels = np.asarray(canvas, dtype=np.float32)
    gx, gy = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, height))
    direction = rng.uniform(-1, 1, size=2)
    light = 1.0 + 0.22 * (direction[0] * gx + direction[1] * gy)
    pixels = pixels * light[..., None] * rng.uniform(0.85, 1.15) + rng.normal(0, 7, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------- writing
def write_vg_files(root: str, *, images: List[dict], per_image: List[dict], split: np.ndarray,
                   classes: Sequence[str], predicates: Sequence[str], attributes: Sequence[str],
                   extra_image_entries: Sequence[Tuple[int, dict]] = ()) -> None:
    """Write ``VG-SGG-with-attri.h5``, ``VG-SGG-dicts-with-attri.json`` and ``image_data.json`` under ``root``.

    ``images[i]``: ``{image_id, width, height}``; ``per_image[i]``: ``boxes`` (N, 4) pixel xyxy, ``labels`` (N,)
    0-based, ``relations`` (R, 3) [sub, obj, pred] local & 0-based, ``attributes`` (N, 10) 0-based with -1 = none.
    ``extra_image_entries`` ``(position, entry)`` are inserted into image_data.json without an h5 row (how the real
    file lists its 4 corrupted images). Used by the demo generator, the tests and the benchmark.
    """
    import h5py

    n_boxes = np.array([len(p["labels"]) for p in per_image], dtype=np.int64)
    n_rels = np.array([len(p["relations"]) for p in per_image], dtype=np.int64)
    box_start = np.concatenate([[0], np.cumsum(n_boxes)[:-1]])
    rel_start = np.concatenate([[0], np.cumsum(n_rels)[:-1]])

    def cat(key: str, width: int, dtype) -> np.ndarray:
        parts = [np.asarray(p[key], dtype=dtype).reshape(-1, width) for p in per_image]
        return np.concatenate(parts) if parts else np.zeros((0, width), dtype)

    labels = cat("labels", 1, np.int64) + 1
    attrs = cat("attributes", 10, np.int64) + 1
    rels = cat("relations", 3, np.int64)
    rel_image = np.repeat(np.arange(len(per_image)), n_rels)
    with h5py.File(os.path.join(root, VG_H5_FILE), "w") as f:
        f["labels"] = labels
        for scale in (1024, 512):
            f[f"boxes_{scale}"] = np.concatenate(
                [encode_vg_boxes(np.asarray(p["boxes"]).reshape(-1, 4), im["width"], im["height"], scale)
                 for p, im in zip(per_image, images)]) if per_image else np.zeros((0, 4), np.int32)
        f["attributes"] = attrs
        f["active_object_mask"] = np.ones((len(labels), 1), dtype=bool)
        f["img_to_first_box"] = np.where(n_boxes > 0, box_start, -1)
        f["img_to_last_box"] = np.where(n_boxes > 0, box_start + n_boxes - 1, -1)
        f["relationships"] = (rels[:, :2] + box_start[rel_image, None]).astype(np.int64)
        f["predicates"] = rels[:, 2:3] + 1
        f["img_to_first_rel"] = np.where(n_rels > 0, rel_start, -1)
        f["img_to_last_rel"] = np.where(n_rels > 0, rel_start + n_rels - 1, -1)
        f["split"] = np.asarray(split, dtype=np.int64)
    vocab = {}
    for field, names in (("label", classes), ("predicate", predicates), ("attribute", attributes)):
        vocab[f"{field}_to_idx"] = {n: i + 1 for i, n in enumerate(names)}
        vocab[f"idx_to_{field}"] = {str(i + 1): n for i, n in enumerate(names)}
    vocab["object_count"] = {n: int((labels[:, 0] == i + 1).sum()) for i, n in enumerate(classes)}
    vocab["predicate_count"] = {n: int((rels[:, 2] == i).sum()) for i, n in enumerate(predicates)}
    with open(os.path.join(root, VG_DICTS_FILE), "w") as f:
        json.dump(vocab, f)
    entries = [{"width": int(im["width"]), "height": int(im["height"]), "image_id": int(im["image_id"]),
                "url": f"demo://{im['image_id']}.jpg", "coco_id": None, "flickr_id": None} for im in images]
    for position, entry in sorted(extra_image_entries):
        entries.insert(position, entry)
    with open(os.path.join(root, VG_IMAGE_DATA_FILE), "w") as f:
        json.dump(entries, f)


def _image_ids(first_id: int, count: int) -> List[int]:
    ids, next_id, skip = [], first_id, set(CORRUPTED_IMAGE_IDS)
    while len(ids) < count:
        if next_id not in skip:
            ids.append(next_id)
        next_id += 1
    return ids


def _size_attributes(boxes: np.ndarray) -> np.ndarray:
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    attrs = np.full((len(boxes), 10), -1, dtype=np.int64)
    attrs[:, 0] = np.digitize(area, [900, 2500])  # small / medium / large
    return attrs


def _consistent_relations(boxes_px: np.ndarray, relations: np.ndarray, width: int, height: int) -> np.ndarray:
    """Keep the relations whose predicate still holds on the boxes as the loader will decode them."""
    decoded = decode_vg_boxes(encode_vg_boxes(boxes_px, width, height, 1024)) * (max(width, height) / 1024)
    keep = [geometric_predicate(decoded[s], decoded[o]) == DEMO_PREDICATES[p] for s, o, p in relations.tolist()]
    return relations[np.array(keep, dtype=bool)] if len(relations) else relations


def generate_demo_dataset(root: str, style: str) -> None:
    """Write a complete demo dataset of ``style`` ("vg" or "synthetic") under ``root`` (which must exist)."""
    spec = DEMO_SPECS[style]
    n_total = spec["num_train"] + spec["num_test"]
    order_rng = np.random.default_rng(spec["seed"])
    split = np.zeros(n_total, dtype=np.int64)
    split[order_rng.permutation(n_total)[: spec["num_test"]]] = 2  # test rows interleaved, as in VG
    os.makedirs(os.path.join(root, VG_IMAGE_DIR), exist_ok=True)
    images, per_image = [], []
    quality = 80 if style == "vg" else 95
    for i, image_id in enumerate(_image_ids(spec["first_id"], n_total)):
        rng = np.random.default_rng([spec["seed"], i])
        width, height = int(rng.integers(160, 225)), int(rng.integers(160, 225))
        boxes, labels, relations = sample_scene(rng, width, height)
        if i % 50 == 7:  # a few images keep their objects but lose their relations (filter_empty_rels has work)
            relations = relations[:0]
        if style == "vg" and i == 11:  # and one image has no object at all (img_to_first_box = -1)
            boxes, labels, relations = boxes[:0], labels[:0], relations[:0]
        relations = _consistent_relations(boxes, relations, width, height)
        render_image(rng, width, height, boxes, labels, style).save(
            os.path.join(root, VG_IMAGE_DIR, f"{image_id}.jpg"), quality=quality)
        images.append({"image_id": image_id, "width": width, "height": height})
        per_image.append({"boxes": boxes, "labels": labels, "relations": relations,
                          "attributes": _size_attributes(boxes)})
    extra = []
    if style == "vg":  # the real image_data.json lists 4 images without an h5 row; so does the demo
        extra = [(10 + 7 * k, {"width": 100, "height": 100, "image_id": cid, "url": "", "coco_id": None,
                               "flickr_id": None}) for k, cid in enumerate(CORRUPTED_IMAGE_IDS)]
    write_vg_files(root, images=images, per_image=per_image, split=split, classes=DEMO_CLASSES,
                   predicates=DEMO_PREDICATES, attributes=DEMO_ATTRIBUTES, extra_image_entries=extra)


def demo_root(datasets_root: Callable[[], str], style: str) -> str:
    """``$SGG_DATASETS/demo/vg`` or ``$SGG_DATASETS/demo/synthetic_genome``."""
    return os.path.join(datasets_root(), "demo", DEMO_SPECS[style]["dirname"])


def demo_num_val_images(style: str) -> int:
    """How many of the first train images of the demo style form its val split."""
    return int(DEMO_SPECS[style]["num_val"])


def ensure_demo_dataset(datasets_root: Callable[[], str], style: str) -> str:
    """Generate the demo dataset of ``style`` if it is not complete yet (see :func:`ensure_generated`); return its
    root."""
    return ensure_generated(demo_root(datasets_root, style), lambda tmp: generate_demo_dataset(tmp, style),
                            marker=_MARKER, description=f"'{style}' dataset")
