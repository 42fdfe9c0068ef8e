"""Procedural Something-Something V2 twin: short webm clips of simple objects performing template actions.

Written in SSv2's exact on-disk layout (see ``datasets/README_ssv2.md``) so that ``sgg.data.datasets.ssv2`` reads it
through the same code path as the real dataset::

    <root>/labels.json        {"Pushing something from left to right": "0", ...}   (template without brackets -> id)
    <root>/train.json         [{"id": "1", "label": "pushing red ball from left to right",
                                "template": "Pushing [something] from left to right", "placeholders": ["red ball"]}]
    <root>/validation.json    same fields
    <root>/videos/<id>.webm   VP9, 12 fps like the real clips

Every clip shows one coloured shape on a shaded background moving as its caption says (left to right, right to
left, up, falling with gravity). Generation is deterministic and takes a few seconds.

The text-to-video demo's stand-in for a pretrained model folder (a VAE fitted to these frames) is made by
``tools/make_t2v_base_pipeline.py``; this module only writes data.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, Dict, List, Tuple

import numpy as np

from sgg.utils.video_io import write_video

from .generation import ensure_generated

__all__ = ["DEMO_TEMPLATES", "DEMO_OBJECTS", "generate_ssv2_demo", "ensure_ssv2_demo", "render_clip"]

logger = logging.getLogger(__name__)

# Native geometry of the demo clips; SSv2 itself is 240 px high at ~12 fps.
CLIP_HEIGHT, CLIP_WIDTH, CLIP_FPS, CLIP_FRAMES = 48, 64, 12.0, 24

# (template, trajectory) where trajectory(s) maps progress s in [0, 1] to the object's centre (x, y) in [0, 1].
DEMO_TEMPLATES: Dict[str, Callable[[float], Tuple[float, float]]] = {
    "Pushing [something] from left to right": lambda s: (0.15 + 0.7 * s, 0.6),
    "Pushing [something] from right to left": lambda s: (0.85 - 0.7 * s, 0.6),
    "Moving [something] up": lambda s: (0.5, 0.8 - 0.6 * s),
    "[Something] falling like a rock": lambda s: (0.5, 0.15 + 0.7 * s * s),  # accelerates like a dropped object
}

# placeholder text -> (shape, RGB colour)
DEMO_OBJECTS: Dict[str, Tuple[str, Tuple[int, int, int]]] = {
    "red ball": ("circle", (220, 40, 40)),
    "blue box": ("square", (40, 70, 220)),
    "green cup": ("square", (40, 170, 60)),
    "yellow ball": ("circle", (230, 200, 30)),
}

TRAIN_OBJECTS = ("red ball", "blue box", "green cup", "yellow ball")
VALIDATION_OBJECTS = ("red ball", "blue box")


def _background(rng: np.random.Generator) -> np.ndarray:
    """A soft vertical gradient (table below, wall above) so frames are not flat; (H, W, 3) float32."""
    top = rng.uniform(150, 200, size=3)
    bottom = rng.uniform(90, 140, size=3)
    ramp = np.linspace(0.0, 1.0, CLIP_HEIGHT, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (CLIP_HEIGHT, CLIP_WIDTH, 3)).astype(np.float32)


def _shape_mask(shape: str, cx: float, cy: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:CLIP_HEIGHT, 0:CLIP_WIDTH].astype(np.float32)
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    return (np.abs(xx - cx) <= radius) & (np.abs(yy - cy) <= radius)


def render_clip(template: str, placeholder: str, *, seed: int, num_frames: int = CLIP_FRAMES) -> np.ndarray:
    """Render one demo clip: uint8 ``(num_frames, 48, 64, 3)`` of ``placeholder`` performing ``template``."""
    if template not in DEMO_TEMPLATES:
        raise KeyError(f"Unknown demo template '{template}'; choose one of {sorted(DEMO_TEMPLATES)}.")
    shape, colour = DEMO_OBJECTS[placeholder]
    rng = np.random.default_rng(seed)
    background = _background(rng)
    radius = rng.uniform(5.0, 7.0)
    jitter = rng.uniform(-0.05, 0.05, size=2)  # small offset of the whole path so clips differ
    frames = np.empty((num_frames, CLIP_HEIGHT, CLIP_WIDTH, 3), dtype=np.uint8)
    for t in range(num_frames):
        x, y = DEMO_TEMPLATES[template](t / max(1, num_frames - 1))
        cx, cy = (x + jitter[0]) * CLIP_WIDTH, (y + jitter[1]) * CLIP_HEIGHT
        frame = background.copy()
        frame[_shape_mask(shape, cx, cy, radius)] = colour
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def _label_text(template: str, placeholders: List[str]) -> str:
    """SSv2's ``label`` field: the template filled in, lower-case (as in the real annotation files)."""
    text = template
    for p in placeholders:
        start = text.index("[")
        text = text[:start] + p + text[text.index("]", start) + 1:]
    return text.lower()


def _split_entries(objects, first_id: int, variants: int) -> List[dict]:
    entries = []
    for template in DEMO_TEMPLATES:
        for placeholder in objects:
            for _ in range(variants):
                entries.append({"id": str(first_id + len(entries)), "label": _label_text(template, [placeholder]),
                                "template": template, "placeholders": [placeholder]})
    return entries


def generate_ssv2_demo(root: str, *, train_variants: int = 2, validation_variants: int = 1) -> str:
    """Write the demo dataset under ``root`` (overwriting it); returns ``root``.

    ``train_variants`` clips per (template, object) in train (4 templates x 4 objects x 2 = 32 clips by default);
    validation holds 4 templates x 2 objects x ``validation_variants`` clips with ids after the training ones.
    """
    train = _split_entries(TRAIN_OBJECTS, first_id=1, variants=train_variants)
    validation = _split_entries(VALIDATION_OBJECTS, first_id=1 + len(train), variants=validation_variants)
    labels = {t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(DEMO_TEMPLATES)}
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    for entry in train + validation:
        frames = render_clip(entry["template"], entry["placeholders"][0], seed=int(entry["id"]))
        write_video(os.path.join(root, "videos", f"{entry['id']}.webm"), frames, CLIP_FPS)
    for name, content in (("labels.json", labels), ("train.json", train), ("validation.json", validation)):
        with open(os.path.join(root, name), "w") as f:
            json.dump(content, f, indent=1)
    logger.info("Wrote SSv2 demo data (%d train / %d validation clips) to %s", len(train), len(validation), root)
    return root


def ensure_ssv2_demo(root: str) -> str:
    """Generate the demo under ``root`` unless it is complete already (see :func:`ensure_generated`)."""
    return ensure_generated(root, generate_ssv2_demo, marker=".complete", description="Something-Something V2 dataset")
