"""Procedural Action Genome: short videos of a person and 1-3 objects, written in AG's exact on-disk layout.

``ensure_demo_action_genome()`` generates (once, deterministically, in about a second) under
``$SGG_DATASETS/demo/action_genome/``::

    annotations/{person_bbox.pkl, object_bbox_and_relationship.pkl, object_classes.txt, relationship_classes.txt,
                 frame_list.txt}
    frames/<VID>.mp4/<frame:06d>.png

so that ``demo_ag_train`` / ``demo_ag_test`` go through the real loader. The class files are AG's full 36 / 26 lines;
the scenes use a subset of AG's object classes. Every relation is a function of what is drawn, so it can be learned:

* **attention**: the person's head has a dark "nose" on the side it faces; an object whose centre is on that side is
  ``looking_at``, on the other side ``not_looking_at``, straight above / below the head (|dx| < 4 px) ``unsure``.
* **spatial** (object -> person): an object overlapping the person is ``in_front_of`` when drawn over the person and
  ``behind`` when drawn under it; otherwise ``above`` / ``beneath`` / ``on_the_side_of`` by vertical position. Seats
  under the person are additionally ``beneath``.
* **contacting**: a small object at the person's hand is ``holding``, a seat overlapping the lower body is
  ``sitting_on``, any other overlap is ``touching``, no overlap is ``not_contacting``.

Objects move on straight lines, small objects may be picked up mid-video, the person walks and may turn around. A few
frames exercise STTran's filters: objects leaving the frame (invisible), a frame without a person box, a video of
two frames, boxes with a short edge < 16 px. Writing happens in a temporary directory renamed into place, so concurrent
processes never see half-written data.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..catalog import datasets_root
from ..datasets.action_genome import AG_OBJECT_CLASSES_TXT, AG_PREDICATES_TXT
from .generation import ensure_generated

__all__ = ["ensure_demo_action_genome", "generate_demo_action_genome", "demo_action_genome_root", "DEMO_VERSION",
           "DEMO_OBJECT_KINDS", "DemoVariant", "DEMO_VARIANTS", "TRACK_IDS_FILE"]

logger = logging.getLogger(__name__)

DEMO_VERSION = "1"
NUM_TRAIN_VIDEOS = 40
NUM_TEST_VIDEOS = 12
FRAME_SIZES = ((160, 120), (144, 112), (128, 128), (128, 96))  # (W, H)
# class -> (kind, RGB colour, (w, h) in px). Kinds decide placement and contact rules.
DEMO_OBJECT_KINDS: Dict[str, Tuple[str, Tuple[int, int, int], Tuple[int, int]]] = {
    "cup/glass/bottle": ("hand", (230, 60, 40), (16, 20)),
    "phone/camera": ("hand", (40, 40, 40), (18, 16)),
    "book": ("hand", (40, 160, 60), (22, 17)),
    "bag": ("hand", (150, 90, 30), (24, 22)),
    "chair": ("seat", (200, 160, 40), (30, 30)),
    "sofa/couch": ("seat", (120, 40, 140), (50, 26)),
    "table": ("floor", (110, 70, 40), (44, 20)),
    "television": ("wall", (20, 20, 90), (32, 22)),
}
_WALL, _FLOOR = (205, 210, 215), (150, 140, 125)
_SKIN, _SHIRT, _NOSE = (235, 190, 150), (60, 90, 200), (20, 10, 10)


@dataclass(frozen=True)
class DemoVariant:
    """Knobs of a variant of the demo dataset (registered as ``demo_ag_<name>_{train,test}``, generated under
    ``$SGG_DATASETS/demo/action_genome_<name>``). The default (name "") is the original ``demo_ag_*`` data, byte for
    byte: a knob's default value must leave the generator's output unchanged."""

    name: str = ""
    # > 0: object classes are drawn with probability ~ 1 / rank^object_zipf (rank = position in DEMO_OBJECT_KINDS)
    # instead of uniformly, so the predicates tied to the rare kinds become rare (a long-tailed predicate distribution).
    object_zipf: float = 0.0
    # sgg's tracking check (DSG-DETR, docs/dsgdetr.md): N > 0 adds N pairs of extra objects per video, each pair of
    # the class of the video's first object, entering from opposite sides and crossing mid-video (one drawn over the
    # person, one under it), so several objects of one class cross and occlude each other.
    same_class_crossings: int = 0
    # Write annotations/sgg_track_ids.pkl (sgg's sidecar, not part of AG): {frame_key: [object identity per entry of
    # object_bbox_and_relationship.pkl[frame_key]]}, the GT identities tools/benchmark.py track scores against.
    track_ids_sidecar: bool = False


# One variant per line (name -> knobs). "" is the default demo_ag_{train,test}.
DEMO_VARIANTS: Dict[str, DemoVariant] = {
    "": DemoVariant(),
    "longtail": DemoVariant(name="longtail", object_zipf=1.5),  # TEMPURA's mean-recall A/B (docs/tempura.md)
    "tracks": DemoVariant(name="tracks", same_class_crossings=1, track_ids_sidecar=True),
}

TRACK_IDS_FILE = "sgg_track_ids.pkl"  # sgg's GT-identity sidecar in annotations/ (DemoVariant.track_ids_sidecar)


def _variant(name: str) -> DemoVariant:
    if name not in DEMO_VARIANTS:
        raise KeyError(f"Unknown Action Genome demo variant {name!r}; known: {sorted(DEMO_VARIANTS)}.")
    return DEMO_VARIANTS[name]


def demo_action_genome_root(variant: str = "") -> str:
    """``$SGG_DATASETS/demo/action_genome`` (or ``.../action_genome_<variant>``)."""
    _variant(variant)
    return os.path.join(datasets_root(), "demo", "action_genome" + (f"_{variant}" if variant else ""))


# ------------------------------------------------------------------------------------------------ scene model
@dataclass
class _Person:
    x: float  # left edge of the body box
    floor_y: float
    width: float
    height: float
    vx: float
    facing: int  # +1 right, -1 left
    turn_at: int  # frame index where the person turns around (-1 = never)

    def box(self, t: int) -> np.ndarray:
        x = self.x + self.vx * t
        return np.array([x, self.floor_y - self.height, x + self.width, self.floor_y], np.float64)

    def facing_at(self, t: int) -> int:
        return -self.facing if 0 <= self.turn_at <= t else self.facing


@dataclass
class _Object:
    name: str
    kind: str
    size: Tuple[float, float]
    start: np.ndarray  # top-left at t = 0
    velocity: np.ndarray
    in_front: bool  # drawn over the person
    pick_up_at: int  # hand objects: frame from which the object is held (-1 = never)

    def held(self, t: int) -> bool:
        return self.kind == "hand" and 0 <= self.pick_up_at <= t

    def box(self, t: int, person: _Person) -> np.ndarray:
        w, h = self.size
        if self.held(t):
            # At the hand on the facing side, half over the body, at mid height.
            pb, facing = person.box(t), person.facing_at(t)
            cx = pb[2] if facing > 0 else pb[0]
            cy = pb[1] + 0.55 * (pb[3] - pb[1])
            return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        x, y = self.start + self.velocity * t
        return np.array([x, y, x + w, y + h])


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def _relations(obj: _Object, box: np.ndarray, person: _Person, t: int) -> Tuple[List[str], List[str], List[str]]:
    """(attention, spatial, contacting) predicate names, pickle spellings, decided by the drawn geometry."""
    pb = person.box(t)
    head_cx = (pb[0] + pb[2]) / 2
    dx = (box[0] + box[2]) / 2 - head_cx
    if abs(dx) < 4:
        attention = ["unsure"]
    else:
        attention = ["looking_at" if dx * person.facing_at(t) > 0 else "not_looking_at"]
    overlaps = _overlap(box, pb) > 0
    lower_body = pb.copy()
    lower_body[1] = pb[1] + 0.5 * (pb[3] - pb[1])
    spatial: List[str] = []
    if overlaps:
        spatial.append("in_front_of" if obj.in_front or obj.held(t) else "behind")
        if obj.kind == "seat" and (box[1] + box[3]) / 2 > (pb[1] + pb[3]) / 2:
            spatial.append("beneath")
    elif box[3] < pb[1] + 0.25 * (pb[3] - pb[1]):
        spatial.append("above")
    elif box[1] > pb[3] - 0.1 * (pb[3] - pb[1]):
        spatial.append("beneath")
    else:
        spatial.append("on_the_side_of")
    if obj.held(t):
        contacting = ["holding"]
    elif obj.kind == "seat" and _overlap(box, lower_body) > 0:
        contacting = ["sitting_on"]
    elif overlaps:
        contacting = ["touching"]
    else:
        contacting = ["not_contacting"]
    return attention, spatial, contacting


def _make_person(rng: np.random.Generator, width: int, height: int, num_frames: int) -> _Person:
    ph = rng.uniform(0.55, 0.7) * height
    pw = 0.32 * ph
    floor_y = 0.88 * height + rng.uniform(-3, 3)
    x = rng.uniform(0.3, 0.55) * width
    turn = int(rng.integers(2, num_frames)) if num_frames > 2 and rng.random() < 0.4 else -1
    return _Person(x=x, floor_y=floor_y, width=pw, height=ph, vx=rng.uniform(-1.5, 1.5),
                   facing=int(rng.choice([-1, 1])), turn_at=turn)


def _make_object(rng: np.random.Generator, name: str, person: _Person, width: int, height: int,
                 num_frames: int, tiny: bool) -> _Object:
    kind, _, (w, h) = DEMO_OBJECT_KINDS[name]
    scale = rng.uniform(0.85, 1.15)
    w, h = w * scale, h * scale
    if tiny:  # exercises the small-box filter (short edge < 16 px)
        w, h = 12.0, 13.0
    pb = person.box(0)
    side = rng.choice([-1, 1])
    if kind == "hand":
        x = (pb[0] - w - rng.uniform(2, 20)) if side < 0 else (pb[2] + rng.uniform(2, 20))
        y = rng.uniform(0.3, 0.95) * height - h
        v = rng.uniform(-2.5, 2.5, 2) * [1.0, 0.3]
    elif kind == "seat":
        x = (pb[0] + pb[2]) / 2 - w / 2 + rng.uniform(-w, w) * 0.6
        y = pb[3] - h + rng.uniform(-2, 4)
        v = np.array([rng.uniform(-1, 1), 0.0])
    elif kind == "floor":
        x = rng.uniform(0, width - w)
        y = pb[3] - h + rng.uniform(-4, 6)
        v = np.array([rng.uniform(-3, 3), 0.0])
    else:  # wall
        x = rng.uniform(0, width - w)
        y = rng.uniform(2, 0.25 * height)
        v = np.array([rng.uniform(-2, 2), 0.0])
    pick = int(rng.integers(0, num_frames)) if kind == "hand" and rng.random() < 0.5 else -1
    in_front = kind == "floor" or (kind == "hand" and rng.random() < 0.5)
    return _Object(name=name, kind=kind, size=(w, h), start=np.array([x, y]), velocity=np.asarray(v, np.float64),
                   in_front=in_front, pick_up_at=pick)


# ---------------------------------------------------------------------------------------------------- drawing
def _fill(img: np.ndarray, box: np.ndarray, color) -> None:
    h, w = img.shape[:2]
    x1, y1 = int(round(max(box[0], 0))), int(round(max(box[1], 0)))
    x2, y2 = int(round(min(box[2], w))), int(round(min(box[3], h)))
    if x2 > x1 and y2 > y1:
        img[y1:y2, x1:x2] = color


def _draw_person(img: np.ndarray, pb: np.ndarray, facing: int) -> None:
    head = 0.22 * (pb[3] - pb[1])
    cx = (pb[0] + pb[2]) / 2
    _fill(img, np.array([pb[0], pb[1] + head, pb[2], pb[3]]), _SHIRT)
    _fill(img, np.array([cx - head / 2, pb[1], cx + head / 2, pb[1] + head]), _SKIN)
    nose_x = cx + facing * head / 2
    _fill(img, np.array([nose_x - 2.5, pb[1] + 0.35 * head, nose_x + 2.5, pb[1] + 0.65 * head]), _NOSE)


def _draw_object(img: np.ndarray, box: np.ndarray, name: str) -> None:
    color = DEMO_OBJECT_KINDS[name][1]
    _fill(img, box, color)
    # A lighter stripe gives each class a second cue besides colour.
    stripe = tuple(min(255, c + 70) for c in color)
    _fill(img, np.array([box[0], box[1], box[2], box[1] + 0.25 * (box[3] - box[1])]), stripe)


def _keypoints(pb: np.ndarray, facing: int) -> np.ndarray:
    """COCO-17 keypoints (x, y, score) placed on the drawn figure, shape (1, 17, 3)."""
    x1, y1, x2, y2 = pb
    cx, h, w = (x1 + x2) / 2, y2 - y1, x2 - x1
    head_y = y1 + 0.11 * h
    pts = [(cx + facing * 0.08 * w, head_y), (cx - 0.06 * w, head_y - 2), (cx + 0.06 * w, head_y - 2),
           (cx - 0.12 * w, head_y), (cx + 0.12 * w, head_y),
           (x1 + 0.1 * w, y1 + 0.26 * h), (x2 - 0.1 * w, y1 + 0.26 * h), (x1, y1 + 0.42 * h), (x2, y1 + 0.42 * h),
           (x1, y1 + 0.55 * h), (x2, y1 + 0.55 * h), (x1 + 0.25 * w, y1 + 0.58 * h), (x2 - 0.25 * w, y1 + 0.58 * h),
           (x1 + 0.25 * w, y1 + 0.78 * h), (x2 - 0.25 * w, y1 + 0.78 * h), (x1 + 0.25 * w, y2), (x2 - 0.25 * w, y2)]
    return np.array([[(x, y, 1.0) for x, y in pts]], np.float32)


# ------------------------------------------------------------------------------------------------- one video
def _video_id(index: int, rng: np.random.Generator) -> str:
    alphabet = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    return f"{index:02d}" + "".join(rng.choice(alphabet, 3))


def _render_video(index: int, split: str, out_frames: str, person_bbox: dict, object_bbox: dict,
                  num_frames: Optional[int] = None, drop_person_box_at: int = -1,
                  variant: DemoVariant = DemoVariant()) -> None:
    rng = np.random.default_rng(2020 + index)
    vid = _video_id(index, rng) + ".mp4"
    width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    num_frames = num_frames or int(rng.integers(6, 11))
    person = _make_person(rng, width, height, num_frames)
    names = list(DEMO_OBJECT_KINDS)
    if variant.object_zipf > 0:
        p = 1.0 / np.arange(1, len(names) + 1) ** variant.object_zipf
        chosen = rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False, p=p / p.sum())
    else:
        chosen = rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False)
    tiny_index = int(rng.integers(len(chosen))) if rng.random() < 0.15 else -1
    objects = [_make_object(rng, names[c], person, width, height, num_frames, tiny=(i == tiny_index))
               for i, c in enumerate(chosen)]
    if variant.same_class_crossings > 0:
        objects += _crossing_objects(index, objects[0], person, width, height, num_frames,
                                     variant.same_class_crossings)
    frame_no = int(rng.integers(0, 60))
    os.makedirs(os.path.join(out_frames, vid), exist_ok=True)
    for t in range(num_frames):
        key = f"{vid}/{frame_no:06d}.png"
        _render_frame(key, t, split, person, objects, width, height, out_frames, person_bbox, object_bbox,
                      drop_person_box=(t == drop_person_box_at))
        frame_no += int(rng.integers(8, 40))


def _crossing_objects(index: int, first: _Object, person: _Person, width: int, height: int, num_frames: int,
                      pairs: int) -> List[_Object]:
    """``pairs`` pairs of objects of ``first``'s class moving towards each other across the frame so they cross near
    the middle frame. Drawn from their own generator, so the rest of the video is the default one."""
    rng = np.random.default_rng(90_000 + index)
    kind, _, (w, h) = DEMO_OBJECT_KINDS[first.name]
    out = []
    for _ in range(pairs):
        scale = rng.uniform(0.85, 1.15)
        size = (w * scale, h * scale)
        y = rng.uniform(0.25, 0.8) * height - size[1] / 2
        span = rng.uniform(0.55, 0.8) * width  # distance each travels; they meet near the middle frame
        speed = span / max(num_frames - 1, 1)
        left = width / 2 - span / 2 - size[0] / 2
        right = width / 2 + span / 2 - size[0] / 2
        dy = rng.uniform(-3, 3)
        out.append(_Object(name=first.name, kind=kind, size=size, start=np.array([left, y]),
                           velocity=np.array([speed, 0.0]), in_front=True, pick_up_at=-1))
        out.append(_Object(name=first.name, kind=kind, size=size, start=np.array([right, y + dy]),
                           velocity=np.array([-speed, 0.0]), in_front=False, pick_up_at=-1))
    return out


def _render_frame(key: str, t: int, split: str, person: _Person, objects: List[_Object], width: int, height: int,
                  out_frames: str, person_bbox: dict, object_bbox: dict, drop_person_box: bool) -> None:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = _WALL
    img[int(0.8 * height):] = _FLOOR
    pb, facing = person.box(t), person.facing_at(t)
    boxes = [o.box(t, person) for o in objects]
    for o, b in zip(objects, boxes):
        if not (o.in_front or o.held(t)):
            _draw_object(img, b, o.name)
    _draw_person(img, pb, facing)
    for o, b in zip(objects, boxes):
        if o.in_front or o.held(t):
            _draw_object(img, b, o.name)
    Image.fromarray(img).save(os.path.join(out_frames, key), compress_level=1)

    clipped_pb = _clip(pb, width, height)
    person_bbox[key] = {
        "bbox": np.zeros((0, 4), np.float32) if drop_person_box else clipped_pb[None].astype(np.float32),
        "bbox_score": np.zeros(0, np.float32) if drop_person_box else np.array([0.98], np.float32),
        "bbox_size": (width, height),
        "bbox_mode": "xyxy",
        "keypoints": np.zeros((0, 17, 3), np.float32) if drop_person_box else _keypoints(clipped_pb, facing),
        "keypoints_logits": np.zeros((0, 17), np.float32) if drop_person_box else np.full((1, 17), 4.0, np.float32),
    }
    entries = []
    for o, b in zip(objects, boxes):
        c = _clip(b, width, height)
        visible = c[2] - c[0] >= 2 and c[3] - c[1] >= 2
        entry = {"class": o.name, "bbox": None, "attention_relationship": None, "spatial_relationship": None,
                 "contacting_relationship": None, "metadata": {"tag": f"{key.split('/')[0]}/{o.name}/"
                                                               f"{key.split('/')[1][:-4]}", "set": split},
                 "visible": bool(visible)}
        if visible:
            att, spa, con = _relations(o, c, person, t)
            entry.update(bbox=(float(c[0]), float(c[1]), float(c[2] - c[0]), float(c[3] - c[1])),
                         attention_relationship=att, spatial_relationship=spa, contacting_relationship=con)
        entries.append(entry)
    object_bbox[key] = entries


def _clip(box: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.array([np.clip(box[0], 0, width), np.clip(box[1], 0, height), np.clip(box[2], 0, width),
                     np.clip(box[3], 0, height)], np.float64)


# ------------------------------------------------------------------------------------------------- generation
def generate_demo_action_genome(root: str, variant: DemoVariant = DemoVariant()) -> None:
    """Write the demo dataset (``variant``'s knobs) into the (new or empty) directory ``root``; deterministic."""
    ann, frames = os.path.join(root, "annotations"), os.path.join(root, "frames")
    os.makedirs(ann, exist_ok=True)
    os.makedirs(frames, exist_ok=True)
    person_bbox: dict = {}
    object_bbox: dict = {}
    index = 0
    for split, count in (("train", NUM_TRAIN_VIDEOS), ("test", NUM_TEST_VIDEOS)):
        for i in range(count):
            # One frame per split without a person box (STTran drops it), like AG's missed detections.
            _render_video(index, split, frames, person_bbox, object_bbox, drop_person_box_at=2 if i == 1 else -1,
                          variant=variant)
            index += 1
        _render_video(index, split, frames, person_bbox, object_bbox, num_frames=2,  # dropped: <= 2 frames
                      variant=variant)
        index += 1
    with open(os.path.join(ann, "person_bbox.pkl"), "wb") as f:
        pickle.dump(person_bbox, f, protocol=4)
    if variant.track_ids_sidecar:
        # Every frame lists all objects of its video in the same order (visible or not), so an object's identity is
        # its position in that list; written out so readers need not know this generator's convention.
        with open(os.path.join(ann, TRACK_IDS_FILE), "wb") as f:
            pickle.dump({key: list(range(len(entries))) for key, entries in object_bbox.items()}, f, protocol=4)
    with open(os.path.join(ann, "object_bbox_and_relationship.pkl"), "wb") as f:
        pickle.dump(object_bbox, f, protocol=4)
    for name, lines in (("object_classes.txt", AG_OBJECT_CLASSES_TXT), ("relationship_classes.txt", AG_PREDICATES_TXT),
                        ("frame_list.txt", list(person_bbox))):
        with open(os.path.join(ann, name), "w") as f:
            f.write("\n".join(lines) + "\n")


def ensure_demo_action_genome(root: Optional[str] = None, variant: str = "") -> str:
    """Generate the demo dataset (``variant``, see :data:`DEMO_VARIANTS`) at ``root`` (default
    :func:`demo_action_genome_root`) unless a complete copy of this ``DEMO_VERSION`` exists (see
    :func:`ensure_generated`); return it."""
    knobs = _variant(variant)
    return ensure_generated(root or demo_action_genome_root(variant),
                            functools.partial(generate_demo_action_genome, variant=knobs),
                            marker=f".complete-v{DEMO_VERSION}",
                            description="Action Genome dataset" + (f" (variant {variant})" if variant else ""))
