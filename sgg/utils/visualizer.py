"""Drawings: contact sheets of frames, boxes on images, and scene graphs (:class:`SceneGraphVisualizer`: the picture
with boxes and relation arrows beside a graph panel, per-frame MP4 overlays, relation timelines, keyframe plots)."""

from __future__ import annotations

import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure  # no pyplot: no backend, no global figure state
from PIL import Image, ImageDraw, ImageFont

from sgg.structures.scene_graph import KeyframeResult, SceneGraph, VideoSceneGraph

from .video_io import write_video

__all__ = ["make_contact_sheet", "save_contact_sheet", "draw_boxes", "SceneGraphVisualizer", "graph_layout",
           "radial_layout", "star_hub", "best_frame", "PALETTE"]

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


# ---------------------------------------------------------------------------- scene graphs
# Distinct, saturated colours (Tableau 10 + a few), assigned to objects in order of first appearance.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (23, 190, 207), (188, 189, 34), (127, 127, 127), (0, 90, 140), (200, 80, 0),
           (0, 120, 60), (150, 20, 60), (90, 60, 160), (110, 70, 20))


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels; PIL's bitmap font if it cannot be found."""
    key = (size, bold)
    if key not in _FONTS:
        try:
            path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans",
                                                                     weight="bold" if bold else "normal"),
                                         fallback_to_default=True)
            _FONTS[key] = ImageFont.truetype(path, size)
        except OSError:  # pragma: no cover - matplotlib always ships DejaVu
            _FONTS[key] = ImageFont.load_default()
    return _FONTS[key]


_FONTS: Dict[Tuple[int, bool], ImageFont.FreeTypeFont] = {}


def _text_color(fill) -> Tuple[int, int, int]:
    """Black or white, whichever reads better on ``fill`` (relative luminance)."""
    r, g, b = fill[:3]
    return (20, 20, 20) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> Tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def _tag(draw: ImageDraw.ImageDraw, xy, text: str, font, fill, pad: int, anchor_bottom: bool = False,
         bounds: Optional[Tuple[int, int]] = None, radius: int = 0, outline=None) -> Tuple[int, int, int, int]:
    """A filled label box with ``text`` at ``xy`` (top-left; bottom-left with ``anchor_bottom``), kept inside
    ``bounds`` (width, height); returns the box."""
    w, h = _text_size(draw, text, font)
    x, y = xy
    if anchor_bottom:
        y -= h + 2 * pad
    if bounds is not None:
        x = min(max(0, x), bounds[0] - w - 2 * pad)
        y = min(max(0, y), bounds[1] - h - 2 * pad)
    box = (int(x), int(y), int(x + w + 2 * pad), int(y + h + 2 * pad))
    draw.rounded_rectangle(box, radius=radius, fill=fill, outline=outline, width=max(1, pad // 3))
    x0, y0, _, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((box[0] + pad - x0, box[1] + pad - y0), text, font=font, fill=_text_color(fill))
    return box


def _arrow(draw: ImageDraw.ImageDraw, p0, p1, color, width: int, head: float) -> None:
    """A line ``p0 -> p1`` with a filled triangular head at ``p1``."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    length = float(np.hypot(*d))
    if length < 1e-3:
        return
    u = d / length
    n = np.array([-u[1], u[0]])
    base = p1 - u * min(head, 0.6 * length)
    draw.line([tuple(p0), tuple(base)], fill=color, width=width)
    draw.polygon([tuple(p1), tuple(base + n * head * 0.5), tuple(base - n * head * 0.5)], fill=color)


def _label_point(p0, p1, normal, size, t: float = 0.42) -> np.ndarray:
    """Centre of an edge label: ``t`` of the way from ``p0`` to ``p1``, moved off the line along ``normal`` (the
    right-hand side of the direction) by half the label's extent across it, so the labels of a two-way pair sit on
    opposite sides and at different heights."""
    p0, p1, normal = (np.asarray(v, float) for v in (p0, p1, normal))
    across = abs(normal[0]) * size[0] / 2 + abs(normal[1]) * size[1] / 2
    return p0 + (p1 - p0) * t + normal * (across + 2)


def _overlap_area(box, boxes) -> float:
    if not boxes:
        return 0.0
    b = np.asarray(boxes, float)
    w = np.clip(np.minimum(box[2], b[:, 2]) - np.maximum(box[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], b[:, 3]) - np.maximum(box[1], b[:, 1]), 0, None)
    return float((w * h).sum())


def _place_label(p0, p1, normal, size, occupied: list, bounds, ts: Sequence[float] = (0.5, 0.35, 0.65, 0.22, 0.78)
                 ) -> Tuple:
    """Box ``(x0, y0, x1, y1)`` of a ``size`` (w, h) label for the edge ``p0 -> p1``: the first candidate (along the
    edge at the fractions ``ts``, on the right-hand side first, then the left) that overlaps nothing in ``occupied``
    and stays inside ``bounds`` (x0, y0, x1, y1); else the least-overlapping one. The box is appended to
    ``occupied``."""
    w, h = size
    best, best_cost = None, np.inf
    for t in ts:
        for side in (1.0, -1.0):
            c = _label_point(p0, p1, np.asarray(normal, float) * side, size, t)
            x0 = min(max(c[0] - w / 2, bounds[0]), bounds[2] - w)
            y0 = min(max(c[1] - h / 2, bounds[1]), bounds[3] - h)
            box = (x0, y0, x0 + w, y0 + h)
            cost = _overlap_area(box, occupied)
            if cost < best_cost - 1e-6:
                best, best_cost = box, cost
            if cost == 0:
                occupied.append(box)
                return box
    occupied.append(best)
    return best


def _rect_exit(center, half, direction) -> np.ndarray:
    """Where the ray from ``center`` along ``direction`` leaves the rectangle of half-size ``half``."""
    dx, dy = direction
    tx = half[0] / abs(dx) if abs(dx) > 1e-9 else np.inf
    ty = half[1] / abs(dy) if abs(dy) > 1e-9 else np.inf
    return np.asarray(center, float) + np.asarray(direction, float) * min(tx, ty)


def frame_title(vsg, t: int) -> str:
    """"frame 12 · 6.0 s": the native index and time of sampled frame ``t``."""
    return f"frame {int(vsg.frame_indices[t])}  ·  {float(vsg.times[t]):.1f} s"


def best_frame(vsg) -> int:
    """Index of the frame whose triplet scores sum highest (the most telling still of a video)."""
    totals = [float(sg.triplet_scores.sum()) for sg in vsg.frames]
    return int(np.argmax(totals)) if totals else 0


def _fit_into(centers: np.ndarray, sizes: np.ndarray, area, margin: float) -> np.ndarray:
    """Scale node ``centers`` (N, 2) px about their middle so that the nodes (``sizes`` (N, 2) px) fill ``area``
    (w, h) up to ``margin``; at most 3x, so two nodes do not fly to the corners."""
    lo, hi = centers.min(0), centers.max(0)
    span = np.maximum(hi - lo, 1e-6)
    room = np.asarray(area, float) - sizes.max(0) - 2 * margin
    factor = np.clip(room / span, 0.0, 3.0)
    factor = np.where(hi - lo < 1e-3, 1.0, factor)
    mid = (lo + hi) / 2
    return (centers - mid) * factor + np.asarray(area, float) / 2


def star_hub(num_nodes: int, edges: Sequence[Tuple[int, int]], share: float = 0.75) -> Optional[int]:
    """The node in at least ``share`` of the edges of a graph of >= 3 nodes (Action Genome's person), else None."""
    if num_nodes < 3 or not edges:
        return None
    degree = np.bincount(np.asarray(edges, dtype=np.int64).reshape(-1), minlength=num_nodes)
    hub = int(np.argmax(degree))
    touching = sum(1 for s, o in edges if hub in (s, o))
    return hub if touching >= share * len(edges) else None


def radial_layout(anchors: np.ndarray, hub: int, sizes: np.ndarray, area, margin: float) -> np.ndarray:
    """Node centres (N, 2) px for a star graph: ``hub`` in the middle of ``area`` (w, h), the others evenly spaced
    on an ellipse filling it, in the angular order of their ``anchors`` (box centres) around the hub's, so the panel
    keeps the picture's left / right / up / down."""
    n = len(anchors)
    w, h = area
    centers = np.zeros((n, 2))
    centers[hub] = (w / 2, h / 2)
    others = [i for i in range(n) if i != hub]
    rel = np.asarray(anchors, float)[others] - np.asarray(anchors, float)[hub]
    angles = np.arctan2(rel[:, 1] * h / max(w, 1), rel[:, 0])
    order = np.argsort(angles, kind="stable")
    rx = max(w / 2 - sizes[others, 0].max() / 2 - margin, w * 0.2)
    ry = max(h / 2 - sizes[others, 1].max() / 2 - margin, h * 0.2)
    start = angles[order[0]] if len(order) else 0.0
    for k, j in enumerate(order):
        a = start + 2 * np.pi * k / len(order)
        centers[others[j]] = (w / 2 + rx * np.cos(a), h / 2 + ry * np.sin(a))
    return centers


def graph_layout(anchors: np.ndarray, edges: Sequence[Tuple[int, int]], sizes: np.ndarray,
                 iterations: int = 300) -> np.ndarray:
    """Node positions ``(N, 2)`` in [0, 1]^2 for a graph panel: a force layout started from ``anchors`` (the objects'
    box centres, normalised, so the panel mirrors the picture), with node-rectangle repulsion (``sizes`` (N, 2) in
    panel fractions), springs along ``edges`` and a weak pull back to the anchors. Deterministic."""
    n = len(anchors)
    if n == 0:
        return np.zeros((0, 2))
    anchors = np.asarray(anchors, float).reshape(n, 2)
    pos = anchors.copy()
    # Identical anchors would never separate: spread them on a small circle.
    angle = np.arange(n) * 2.399963  # golden angle
    pos += 0.02 * np.stack([np.cos(angle), np.sin(angle)], 1)
    sizes = np.asarray(sizes, float).reshape(n, 2)
    gap = 0.06
    for it in range(iterations):
        step = 0.08 * (1.0 - it / iterations) + 0.005
        delta = pos[:, None, :] - pos[None, :, :]  # (N, N, 2)
        # Overlap of the padded rectangles along each axis (> 0 where they collide).
        need = (sizes[:, None, :] + sizes[None, :, :]) / 2 + gap
        overlap = need - np.abs(delta)
        colliding = (overlap > 0).all(-1) & ~np.eye(n, dtype=bool)
        force = np.zeros_like(pos)
        if colliding.any():
            # Push apart along the axis of least overlap (separates rectangles fastest).
            axis = np.argmin(overlap / need, axis=-1)
            sign = np.where(delta >= 0, 1.0, -1.0)
            push = np.zeros_like(delta)
            for a in (0, 1):
                sel = colliding & (axis == a)
                push[..., a] = np.where(sel, overlap[..., a] * sign[..., a], 0.0)
            force += push.sum(1) * 0.5
        dist = np.linalg.norm(delta, axis=-1) + 1e-6
        force += (0.002 * delta / dist[..., None] ** 2 * ~np.eye(n, dtype=bool)[..., None]).sum(1)  # mild repulsion
        for s, o in edges:
            if s == o:
                continue
            d = pos[o] - pos[s]
            length = np.linalg.norm(d) + 1e-6
            pull = (length - 0.45) * d / length * 0.05
            force[s] += pull
            force[o] -= pull
        force += 0.02 * (anchors - pos)
        norm = np.linalg.norm(force, axis=1, keepdims=True)
        pos += force / np.maximum(norm, 1e-9) * np.minimum(norm, step)
        half = sizes / 2 + 0.01
        pos = np.clip(pos, half, 1 - half)
    return pos


class SceneGraphVisualizer:
    """Draws :class:`~sgg.structures.scene_graph.SceneGraph` predictions readably.

    * :meth:`draw` — the picture (upscaled to at least ``min_height`` px, downscaled to at most ``max_height``) with
      every object's box and a "class score" tag in its own colour and the best ``max_image_relations`` relations as
      arrows subject -> object labelled with the predicate; beside it a panel with the scene graph (nodes = objects,
      edges = predicates, laid out like the picture) and the ranked triplet list.
    * :meth:`render_video` — :meth:`draw` on every frame of a :class:`VideoSceneGraph`, encoded to MP4 (PyAV), with
      object colours kept across frames (per class and rank within the class).
    * :meth:`plot_timeline` — each relation's score over time (matplotlib heat strip, one row per relation).
    * :meth:`plot_keyframes` — a keyframe model's score curve with the selected keyframes and their thumbnails.
    """

    def __init__(self, *, min_height: int = 540, max_height: int = 720, panel_width: int = 0,
                 max_image_relations: int = 5, max_listed: int = 6, max_graph_edges: int = 10, supersample: int = 2):
        self.min_height, self.max_height = int(min_height), int(max_height)
        self.max_graph_edges = int(max_graph_edges)
        self.panel_width, self.max_image_relations = int(panel_width), int(max_image_relations)
        self.max_listed, self.ss = int(max_listed), max(1, int(supersample))
        self._colors: Dict[Tuple[str, int], Tuple[int, int, int]] = {}

    # ------------------------------------------------------------------ colours
    def reset_colors(self) -> None:
        """Forget the colour assignment (a new video or a new picture series)."""
        self._colors.clear()

    def object_colors(self, sg) -> List[Tuple[int, int, int]]:
        """One colour per object: keyed by (class, rank of the object among that class by decreasing score), given
        in order of first appearance, so the same object keeps its colour from frame to frame."""
        seen: Dict[int, int] = {}
        out = []
        for label in sg.labels.tolist():
            k = (str(label), seen.get(label, 0))
            seen[label] = k[1] + 1
            if k not in self._colors:
                self._colors[k] = PALETTE[len(self._colors) % len(PALETTE)]
            out.append(self._colors[k])
        return out

    @staticmethod
    def node_names(sg) -> List[str]:
        """Object names for the graph: the class name, numbered when a class occurs more than once."""
        names = sg.label_names
        counts = {n: names.count(n) for n in names}
        index: Dict[str, int] = {}
        out = []
        for n in names:
            index[n] = index.get(n, 0) + 1
            out.append(f"{n} {index[n]}" if counts[n] > 1 else n)
        return out

    # ------------------------------------------------------------------ one picture
    def draw(self, sg, image=None, title: str = "") -> Image.Image:
        """The picture with boxes and relation arrows, and the graph + triplet panel beside it (RGB PIL image).

        ``image`` defaults to ``sg.image``; ``title`` (e.g. "frame 12 - 6.0 s") heads the panel.
        """
        image = sg.image if image is None else image
        if image is None:
            raise ValueError("SceneGraphVisualizer.draw needs the picture: pass image= or a SceneGraph with .image.")
        src = Image.fromarray(_to_hwc_uint8(image))
        h0, w0 = src.height, src.width
        disp_h = int(min(max(h0, self.min_height), self.max_height))
        scale = disp_h / h0
        disp_w = max(1, round(w0 * scale))
        panel_w = self.panel_width or max(380, int(0.95 * disp_h))
        ss = self.ss
        canvas = Image.new("RGB", ((disp_w + panel_w) * ss, disp_h * ss), (255, 255, 255))
        canvas.paste(src.resize((disp_w * ss, disp_h * ss), Image.LANCZOS), (0, 0))
        draw = ImageDraw.Draw(canvas)
        colors = self.object_colors(sg)
        names = self.node_names(sg)
        self._draw_objects(draw, sg, colors, names, scale * ss, (disp_w * ss, disp_h * ss))
        self._draw_panel(draw, sg, colors, names, (disp_w * ss, 0, (disp_w + panel_w) * ss, disp_h * ss),
                         (w0, h0), title)
        out = canvas.resize((disp_w + panel_w, disp_h), Image.LANCZOS) if ss > 1 else canvas
        return out

    def save(self, path: str, sg, image=None, title: str = "") -> str:
        """:meth:`draw` written to ``path`` (PNG / JPEG by extension); returns the path."""
        self.draw(sg, image, title).save(path)
        logger.info("Wrote %s (%d objects, %d triplets)", path, len(sg.boxes), len(sg.triplets))
        return path

    def _draw_objects(self, draw, sg, colors, names, scale: float, size) -> None:
        ss = self.ss
        font = _font(13 * ss, bold=True)
        small = _font(12 * ss)
        line = max(2, round(2.5 * ss))
        boxes = sg.boxes * scale
        used = set(sg.used_objects().tolist())
        # Objects in no relation are drawn thinner and first, so related ones stay on top.
        order = sorted(range(len(boxes)), key=lambda i: (i in used, -i))
        for i in order:
            x0, y0, x1, y1 = boxes[i].tolist()
            width = line if i in used else max(1, line // 2)
            draw.rectangle([x0, y0, x1, y1], outline=colors[i], width=width)
        # Tag places first (related objects get the best ones), so that arrows can go under the tags and the arrow
        # labels avoid them; drawn: boxes, arrows, tags, arrow labels.
        occupied, tags = [], []
        for i in reversed(order):
            x0, y0, x1, y1 = boxes[i].tolist()
            text = f"{names[i]} {sg.scores[i]:.2f}"
            f = font if i in used else small
            w, h = _text_size(draw, text, f)
            tw, th = w + 6 * ss, h + 6 * ss
            # Above the box's top-left corner, inside it, above its top-right, below its bottom-left.
            candidates = [(x0, y0 - th), (x0 + line, y0 + line), (x1 - tw, y0 - th), (x0, y1)]
            best, best_cost = None, np.inf
            for cx, cy in candidates:
                cx = min(max(0, cx), size[0] - tw)
                cy = min(max(0, cy), size[1] - th)
                cost = _overlap_area((cx, cy, cx + tw, cy + th), occupied)
                if cost < best_cost:
                    best, best_cost = (cx, cy), cost
                if cost == 0:
                    break
            occupied.append((best[0], best[1], best[0] + tw, best[1] + th))
            tags.append((best, text, f, colors[i]))
        # Relation arrows between box centres, the best ``max_image_relations`` pairs, labelled along the way.
        centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) \
            if len(boxes) else np.zeros((0, 2))
        shown = self._merged_edges(sg)[: self.max_image_relations]
        pairs = {k for k, _, _ in shown}
        segments = []
        for (s, o), preds, _ in shown:
            p0, p1 = centers[s].copy(), centers[o].copy()
            if np.hypot(*(p1 - p0)) < 6 * ss:  # concentric boxes: bend the arrow out
                p1 = p1 + np.array([24.0, -24.0]) * ss
            u = (p1 - p0) / np.hypot(*(p1 - p0))
            normal = np.array([u[1], -u[0]])
            if (o, s) in pairs:  # two-way: the two arrows side by side
                p0, p1 = p0 + normal * 4 * ss, p1 + normal * 4 * ss
            segments.append((p0, p1, normal, s, preds))
        for p0, p1, _, s, _ in reversed(segments):
            _arrow(draw, p0, p1, (255, 255, 255), width=line + 3 * ss, head=14 * ss)
            _arrow(draw, p0, p1, colors[s], width=line, head=11 * ss)
            draw.ellipse([p0[0] - 4 * ss, p0[1] - 4 * ss, p0[0] + 4 * ss, p0[1] + 4 * ss], fill=colors[s],
                         outline=(255, 255, 255), width=ss)
        for xy, text, f, color in tags:
            _tag(draw, xy, text, f, color, pad=3 * ss, bounds=size)
        for p0, p1, normal, s, preds in segments:
            text = ", ".join(preds[:2]) + (" ..." if len(preds) > 2 else "")
            w, h = _text_size(draw, text, small)
            box = _place_label(p0, p1, normal, (w + 6 * ss, h + 6 * ss), occupied, (0, 0) + tuple(size))
            _tag(draw, box[:2], text, small, (30, 30, 30), pad=3 * ss, bounds=size, radius=4 * ss, outline=colors[s])

    @staticmethod
    def _merged_edges(sg) -> List[Tuple[Tuple[int, int], List[str], float]]:
        """``((subject, object), [predicates by decreasing score], best score)`` per ordered pair, best first."""
        merged: Dict[Tuple[int, int], List] = {}
        for (s, o, p), score in zip(sg.triplets.tolist(), sg.triplet_scores.tolist()):
            entry = merged.setdefault((s, o), [[], score])
            entry[0].append(sg.predicate_names[p])
            entry[1] = max(entry[1], score)
        return sorted(((k, v[0], v[1]) for k, v in merged.items()), key=lambda e: -e[2])

    def _draw_panel(self, draw, sg, colors, names, rect, image_size, title: str) -> None:
        ss = self.ss
        x0, y0, x1, y1 = rect
        pad = 14 * ss
        draw.rectangle([x0, y0, x0 + ss, y1], fill=(210, 210, 210))
        head = _font(15 * ss, bold=True)
        text_font = _font(12 * ss)
        node_font = _font(13 * ss, bold=True)
        n_rel = len(sg.triplets)
        heading = title or "scene graph"
        draw.text((x0 + pad, y0 + pad), heading, font=head, fill=(30, 30, 30))
        sub = f"{len(sg.used_objects())} objects in {n_rel} relation{'s' if n_rel != 1 else ''}"
        n_edges = len(self._merged_edges(sg))
        if n_edges > self.max_graph_edges:
            sub += f"; graph: the {self.max_graph_edges} best of {n_edges} links"
        _, hh = _text_size(draw, heading, head)
        draw.text((x0 + pad, y0 + pad + hh + 6 * ss), sub, font=text_font, fill=(110, 110, 110))
        top = y0 + pad + hh + 6 * ss + 22 * ss
        row_h = 19 * ss
        listed = min(self.max_listed, n_rel, max(0, int(0.36 * (y1 - y0) / row_h) - 1))
        list_h = (listed + 1) * row_h + pad if listed else 0
        graph = (x0 + pad, top, x1 - pad, y1 - pad - list_h)
        self._draw_graph(draw, sg, colors, names, graph, image_size, node_font, text_font)
        if listed:
            ly = y1 - pad - list_h + row_h // 2
            draw.line([x0 + pad, ly - 6 * ss, x1 - pad, ly - 6 * ss], fill=(220, 220, 220), width=ss)
            for k in range(listed):
                s, o, p = sg.triplets[k].tolist()
                y = ly + k * row_h
                x = x0 + pad
                draw.text((x, y), f"{k + 1:>2}.", font=text_font, fill=(140, 140, 140))
                x += 26 * ss
                for piece, fill in ((names[s], colors[s]), (f" {sg.predicate_names[p]} ", (60, 60, 60)),
                                    (names[o], colors[o])):
                    f = node_font if fill is not colors[s] and fill is not colors[o] else _font(12 * ss, True)
                    f = text_font if fill == (60, 60, 60) else f
                    draw.text((x, y), piece, font=f, fill=fill)
                    x += _text_size(draw, piece, f)[0] + (4 * ss if piece.startswith(" ") else 0)
                score = f"{sg.triplet_scores[k]:.2f}"
                if sg.uncertainties is not None:
                    score += f" ±{sg.uncertainties[k]:.2f}"
                w, _ = _text_size(draw, score, text_font)
                draw.text((x1 - pad - w, y), score, font=text_font, fill=(110, 110, 110))

    def _draw_graph(self, draw, sg, colors, names, rect, image_size, node_font, edge_font) -> None:
        ss = self.ss
        gx0, gy0, gx1, gy1 = rect
        gw, gh = max(1, gx1 - gx0), max(1, gy1 - gy0)
        nodes = sg.used_objects().tolist()
        if not nodes:
            msg = "no relation above the threshold"
            w, h = _text_size(draw, msg, edge_font)
            draw.text((gx0 + (gw - w) / 2, gy0 + (gh - h) / 2), msg, font=edge_font, fill=(150, 150, 150))
            return
        index = {n: i for i, n in enumerate(nodes)}
        w0, h0 = image_size
        boxes = sg.boxes[nodes]
        anchors = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / max(w0, 1), (boxes[:, 1] + boxes[:, 3]) / 2 / max(h0, 1)],
                           1)
        pad_n = 7 * ss
        sizes_px = np.array([[_text_size(draw, names[n], node_font)[0] + 2 * pad_n,
                              _text_size(draw, "Hg", node_font)[1] + 2 * pad_n] for n in nodes], float)
        edges = self._merged_edges(sg)[: self.max_graph_edges]
        nodes_in_edges = {n for (s, o), _, _ in edges for n in (s, o)}
        nodes = [n for n in nodes if n in nodes_in_edges]
        index = {n: i for i, n in enumerate(nodes)}
        boxes = sg.boxes[nodes]
        anchors = anchors[[i for i, n in enumerate(sg.used_objects().tolist()) if n in nodes_in_edges]]
        sizes_px = sizes_px[[i for i, n in enumerate(sg.used_objects().tolist()) if n in nodes_in_edges]]
        edge_index = [(index[s], index[o]) for (s, o), _, _ in edges]
        hub = star_hub(len(nodes), edge_index)
        if hub is not None:
            centers = radial_layout(anchors, hub, sizes_px, (gw, gh), margin=12 * ss) + [gx0, gy0]
        else:
            pos = graph_layout(anchors, edge_index, sizes_px / [gw, gh])
            centers = _fit_into(pos * [gw, gh], sizes_px, (gw, gh), margin=28 * ss) + [gx0, gy0]
        half = sizes_px / 2 + 3 * ss
        pairs = {k for k, _, _ in edges}
        labels = []
        for (s, o), preds, _ in edges:
            a, b = index[s], index[o]
            d = centers[b] - centers[a]
            if np.hypot(*d) < 1:
                continue
            u = d / np.hypot(*d)
            normal = np.array([u[1], -u[0]])
            shift = normal * 5 * ss if (o, s) in pairs else np.zeros(2)  # two-way: side by side
            p0 = _rect_exit(centers[a], half[a], u) + shift
            p1 = _rect_exit(centers[b], half[b], -u) + shift
            _arrow(draw, p0, p1, colors[s], width=2 * ss, head=11 * ss)
            text = "\n".join(preds[:3]) + ("\n..." if len(preds) > 3 else "")
            labels.append((p0, p1, normal, text, colors[s]))
        for i, n in enumerate(nodes):
            c = centers[i]
            box = (c[0] - sizes_px[i, 0] / 2, c[1] - sizes_px[i, 1] / 2, c[0] + sizes_px[i, 0] / 2,
                   c[1] + sizes_px[i, 1] / 2)
            draw.rounded_rectangle(box, radius=8 * ss, fill=colors[n], outline=(255, 255, 255), width=2 * ss)
            tx0, ty0, _, _ = draw.textbbox((0, 0), names[n], font=node_font)
            draw.text((box[0] + pad_n - tx0, box[1] + pad_n - ty0), names[n], font=node_font,
                      fill=_text_color(colors[n]))
        occupied = [(c[0] - sz[0] / 2, c[1] - sz[1] / 2, c[0] + sz[0] / 2, c[1] + sz[1] / 2)
                    for c, sz in zip(centers, sizes_px)]
        for p0, p1, normal, text, color in labels:
            bx0, by0, bx1, by1 = draw.multiline_textbbox((0, 0), text, font=edge_font, spacing=2 * ss)
            w, h = bx1 - bx0, by1 - by0
            box = _place_label(p0, p1, normal, (w + 8 * ss, h + 6 * ss), occupied, rect,
                               ts=(0.62, 0.75, 0.5, 0.85, 0.38) if hub is not None else (0.5, 0.35, 0.65, 0.22, 0.78))
            draw.rounded_rectangle(box, radius=5 * ss, fill=(255, 255, 255), outline=color, width=ss)
            draw.multiline_text((box[0] + 4 * ss - bx0, box[1] + 3 * ss - by0), text, font=edge_font,
                                fill=(40, 40, 40), spacing=2 * ss, align="center")

    # ------------------------------------------------------------------ any predictor result
    def save_result(self, result, folder: str, stem: str, progress=None) -> List[str]:
        """Every drawing of a predictor result under ``folder``; returns the paths.

        * :class:`SceneGraph`: ``<stem>.png``;
        * :class:`VideoSceneGraph`: ``<stem>.mp4`` (every frame), ``<stem>_timeline.png`` and ``<stem>_frame.png``
          (the frame with the most confident relations, a still for documents);
        * :class:`KeyframeResult`: ``<stem>_keyframes.png``.
        """
        os.makedirs(folder, exist_ok=True)
        base = os.path.join(folder, stem)
        if isinstance(result, SceneGraph):
            self.reset_colors()
            return [self.save(base + ".png", result)]
        if isinstance(result, VideoSceneGraph):
            paths = [self.render_video(result, base + ".mp4", progress=progress)]
            fig = self.plot_timeline(result, base + "_timeline.png")
            paths.append(base + "_timeline.png")
            del fig
            best = best_frame(result)
            self.reset_colors()
            paths.append(self.save(base + "_frame.png", result.frames[best], title=frame_title(result, best)))
            return paths
        if isinstance(result, KeyframeResult):
            self.plot_keyframes(result, base + "_keyframes.png")
            return [base + "_keyframes.png"]
        raise TypeError(f"save_result: unknown result type {type(result).__name__}.")

    # ------------------------------------------------------------------ videos
    def render_video(self, vsg, path: str, fps: Optional[float] = None, progress=None) -> str:
        """Every frame of ``vsg`` drawn by :meth:`draw` (titled with frame index and time), encoded to ``path``
        (MP4, H.264) at ``fps`` (default: the sampling rate, at least 1). ``progress`` wraps the frame iterator
        (e.g. ``tqdm``). Returns the path."""
        if not len(vsg):
            raise ValueError("render_video: the video scene graph has no frame.")
        self.reset_colors()
        frames = range(len(vsg))
        images = []
        for t in (progress(frames) if progress is not None else frames):
            sg = vsg.frames[t]
            title = frame_title(vsg, t)
            images.append(np.asarray(self.draw(sg, title=title)))
        h, w = images[0].shape[:2]
        images = np.stack([im[: h - h % 2, : w - w % 2] for im in images])
        write_video(path, images, fps=float(fps or max(1.0, vsg.fps or 1.0)), crf=23)
        logger.info("Wrote %s (%d frames)", path, len(images))
        return path

    def plot_timeline(self, vsg, path: Optional[str] = None, max_relations: int = 14):
        """Relations over time: one row per "subject predicate object" (the ``max_relations`` with the highest
        total score), a cell per sampled frame shaded by its score (blank = absent). Returns the matplotlib figure;
        saved to ``path`` (PNG) when given."""
        tracks = vsg.relation_tracks()
        ranked = sorted(tracks, key=lambda k: -float(tracks[k].sum()))[:max_relations]
        keys = [k for k in tracks if k in ranked]  # keep first-appearance order
        times = vsg.times if len(vsg.times) else np.arange(len(vsg))
        step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
        fig_h = 1.3 + 0.32 * max(1, len(keys))
        fig = Figure(figsize=(9.0, fig_h), dpi=110)
        ax = fig.add_subplot(1, 1, 1)
        if keys:
            matrix = np.stack([tracks[k] for k in keys])
            masked = np.ma.masked_where(matrix <= 0, matrix)
            cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad=(0.96, 0.96, 0.96))
            im = ax.imshow(masked, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest",
                           extent=(times[0] - step / 2, times[-1] + step / 2, len(keys) - 0.5, -0.5))
            ax.set_yticks(range(len(keys)))
            ax.set_yticklabels(keys, fontsize=9)
            bar = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.03)
            bar.set_label("triplet score", fontsize=9)
            bar.ax.tick_params(labelsize=8)
            ax.set_yticks(np.arange(len(keys) + 1) - 0.5, minor=True)
            ax.grid(which="minor", axis="y", color="white", linewidth=2)
            ax.tick_params(which="minor", length=0)
        else:
            ax.text(0.5, 0.5, "no relation above the threshold", ha="center", va="center", transform=ax.transAxes,
                    color="0.5")
            ax.set_yticks([])
        ax.set_xlabel("time (s)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(f"relations over time ({len(vsg)} frames, {len(tracks)} distinct relations"
                     f"{', top ' + str(len(keys)) + ' shown' if len(keys) < len(tracks) else ''})", fontsize=10,
                     loc="left")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.tight_layout()
        if path:
            fig.savefig(path)
            logger.info("Wrote %s", path)
        return fig

    def plot_keyframes(self, result, path: Optional[str] = None, max_thumbnails: int = 8):
        """A keyframe model's per-step scores over time with the selected keyframes marked, and their frames below.
        Returns the matplotlib figure; saved to ``path`` (PNG) when given."""
        keys = list(result.keyframes)
        shown = keys if len(keys) <= max_thumbnails else [keys[i] for i in
                                                          np.linspace(0, len(keys) - 1, max_thumbnails).astype(int)]
        has_thumbs = result.frames is not None and len(shown) > 0
        fig = Figure(figsize=(9.0, 4.6 if has_thumbs else 2.8), dpi=110)
        grid = fig.add_gridspec(2 if has_thumbs else 1, max(1, len(shown)), height_ratios=[1.5, 1] if has_thumbs
                                else [1], hspace=0.45)
        ax = fig.add_subplot(grid[0, :])
        ax.plot(result.times, result.scores, color="#1f77b4", linewidth=1.6, label="importance score")
        ax.fill_between(result.times, 0, result.scores, color="#1f77b4", alpha=0.12)
        if keys:
            ax.scatter(result.times[keys], result.scores[keys], color="#d62728", zorder=3, s=28,
                       label=f"keyframes ({result.selection}, {result.ratio:.0%})")
        ax.set_ylim(0, 1.05)
        ax.set_xlim(result.times[0], result.times[-1] if len(result.times) > 1 else result.times[0] + 1)
        ax.set_xlabel("time (s)", fontsize=9)
        ax.set_ylabel("score", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.set_title(f"{len(result.scores)} steps, {len(keys)} keyframes", fontsize=10, loc="left")
        if has_thumbs:
            for j, k in enumerate(shown):
                tax = fig.add_subplot(grid[1, j])
                tax.imshow(result.frames[k])
                tax.set_xticks([])
                tax.set_yticks([])
                for spine in tax.spines.values():
                    spine.set_edgecolor("#d62728")
                tax.set_title(f"{result.times[k]:.1f} s · {result.scores[k]:.2f}", fontsize=8)
        if path:
            fig.savefig(path, bbox_inches="tight")
            logger.info("Wrote %s", path)
        return fig
