"""Procedural EASG twin: egocentric "graphs" of one camera-wearer verb, its objects and their relations, in EASG's
exact on-disk layout (upstream's ``annts_in_new_format/`` + the feature files + frames), read back by
:mod:`sgg.data.datasets.easg` through the same code path as the real dataset::

    <root>/objects.txt relationships.txt verbs.txt        a small vocabulary (14 objects incl. TABLE and table, EASG's
                                                          13 relations, 8 verbs)
    <root>/easg_{train,val}.pkl                           {graph_uid: {clip_frame_number, annotations}}
    <root>/verb_features.pt                               {annotator_id: float32 (VERB_DIM,)}
    <root>/roi_feats_{train,val}.pkl                      {graph_uid: {annotator_id: [{frame type: (n, ROI_DIM)}]}}
    <root>/frames/<graph_uid>/<clip_uid>_{pre,pnr,post}.jpg

The rules a model can learn (:data:`VERB_RULES`): each verb has a set of direct objects (relation ``dobj``), the
camera-wearer's hand relates to it by a verb-dependent relation (``in`` for take, ``with`` otherwise; open adds
``on``), and a verb-dependent third object gets its own relation (a surface ``on`` / ``from``, a container ``into``, a
tool ``with``, the sink ``in``). The same object class takes different relations under different verbs (a cup is the
``dobj`` of take but the ``into`` of pour), so relations need the verb and the object together. The verb feature is a
noisy code of the verb, the RoI features a noisy code of the object class, and the frames show every object as a
coloured shape of its class (``TABLE`` and ``table`` in two close shades: duplicate-looking classes, as in EASG).
About 10 % of the graphs have two annotators (identical rows, slightly different boxes), and one training graph has
annotators that disagree on the verb (EASG has three such graphs). Deterministic; a few seconds.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from .generation import ensure_generated

__all__ = ["DEMO_OBJECTS", "DEMO_RELATIONS", "DEMO_VERBS", "VERB_RULES", "VERB_DIM", "ROI_DIM",
           "generate_easg_demo", "ensure_easg_demo", "easg_demo_root"]

logger = logging.getLogger(__name__)

DEMO_OBJECTS = ("bowl", "cup", "knife", "spoon", "bottle", "door", "drawer", "onion", "tomato", "left_hand",
                "right_hand", "TABLE", "table", "sink")
# EASG's own 13 relations (relationships.txt); the rules below use six of them, the rest are never annotated
DEMO_RELATIONS = ("around", "dobj", "from", "in", "inside", "into", "on", "onto", "through", "to", "towards", "under",
                  "with")
DEMO_VERBS = ("take", "put", "cut", "open", "close", "pour", "wash", "stir")
# verb -> (direct objects, hand relations, (third objects, their relations, probability))
VERB_RULES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[Tuple[str, ...], Tuple[str, ...], float]]] = {
    "take": (("cup", "knife", "spoon", "bottle", "onion", "tomato"), ("in",), (("TABLE", "table"), ("from",), 0.6)),
    "put": (("cup", "knife", "spoon", "bottle", "onion", "tomato"), ("with",), (("TABLE", "table"), ("on",), 0.6)),
    "cut": (("onion", "tomato"), ("with",), (("knife",), ("with",), 1.0)),
    "open": (("door", "drawer", "bottle"), ("with", "on"), ((), (), 0.0)),
    "close": (("door", "drawer"), ("with",), ((), (), 0.0)),
    "pour": (("bottle",), ("with",), (("bowl", "cup"), ("into",), 1.0)),
    "wash": (("bowl", "cup", "knife", "spoon", "tomato"), ("with",), (("sink",), ("in",), 1.0)),
    "stir": (("bowl", "cup"), ("with",), (("spoon",), ("with", "in"), 1.0)),
}
VERB_DIM, ROI_DIM = 32, 32  # demo widths (EASG's: SlowFast 2304, Faster R-CNN RoI 1024)
FRAME_H, FRAME_W = 96, 128
SPLITS = {"train": (16, 160, 11), "val": (6, 48, 12)}  # split -> (clips, graphs, seed)
_MARKER = ".complete_easg_v2"

# class colours (RGB); TABLE / table differ slightly, the hands share skin tones
_COLOURS = {
    "bowl": (230, 230, 240), "cup": (40, 170, 60), "knife": (160, 160, 170), "spoon": (200, 120, 40),
    "bottle": (40, 70, 220), "door": (120, 70, 30), "drawer": (180, 140, 90), "onion": (220, 200, 120),
    "tomato": (220, 40, 40), "left_hand": (235, 180, 150), "right_hand": (205, 150, 120), "TABLE": (90, 60, 40),
    "table": (110, 80, 50), "sink": (140, 190, 210),
}


def _annotator_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def _clip_uid(rng: np.random.Generator) -> str:
    h = rng.integers(0, 16, size=32)
    s = "".join("0123456789abcdef"[i] for i in h)
    return f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}"


def _graph_rows(rng: np.random.Generator, verb: str) -> List[Tuple[str, str]]:
    """(object, relation) rows of one graph, in annotation order (one row per relation, as EASG's pickles)."""
    dobjs, hand_rels, (thirds, third_rels, p) = VERB_RULES[verb]
    dobj = str(rng.choice(dobjs))
    rows = [(dobj, "dobj")]
    hand = "right_hand" if rng.random() < 0.7 else "left_hand"
    rows += [(hand, r) for r in hand_rels]
    if thirds and rng.random() < p:
        third = str(rng.choice([t for t in thirds if t != dobj]))
        rows += [(third, r) for r in third_rels]
    return rows


def _box(rng: np.random.Generator, obj: str) -> np.ndarray:
    """A normalised [x, y, w, h] box; hands come from the bottom edge, boxes may poke out a little (as EASG's)."""
    w, h = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3)
    if obj.endswith("_hand"):
        x = rng.uniform(0.0, 0.35) if obj == "left_hand" else rng.uniform(0.45, 0.8)
        y = rng.uniform(0.62, 0.85)
    else:
        x, y = rng.uniform(-0.03, 0.85), rng.uniform(0.0, 0.6)
    return np.array([[x, y, w, h]], dtype=np.float32)


def _render(boxes: List[Tuple[str, np.ndarray]], rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3): a noisy shaded background with every object as a filled rectangle of its class colour."""
    ramp = np.linspace(0.0, 1.0, FRAME_H, dtype=np.float32)[:, None, None]
    img = (rng.uniform(150, 190, 3) * (1 - ramp) + rng.uniform(80, 120, 3) * ramp) * np.ones((1, FRAME_W, 1))
    for obj, b in boxes:
        x1, y1 = int(max(b[0], 0) * FRAME_W), int(max(b[1], 0) * FRAME_H)
        x2, y2 = int(min(b[0] + b[2], 1) * FRAME_W), int(min(b[1] + b[3], 1) * FRAME_H)
        img[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)] = _COLOURS[obj]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _generate_split(root: str, split: str, verb_feats: Dict[str, torch.Tensor]) -> None:
    num_clips, num_graphs, seed = SPLITS[split]
    rng = np.random.default_rng(seed)
    verb_codes = np.random.default_rng(0).normal(0, 1, (len(DEMO_VERBS), VERB_DIM)).astype(np.float32)
    obj_codes = np.random.default_rng(1).normal(0, 1, (len(DEMO_OBJECTS), ROI_DIM)).astype(np.float32)
    clips = [_clip_uid(rng) for _ in range(num_clips)]
    annotations, roi_feats = {}, {}
    for n in range(num_graphs):
        clip = clips[n % num_clips]
        pnr = 40 * (n // num_clips) + int(rng.integers(20, 35))
        uid = f"{clip}_{pnr:06d}"
        numbers = {"pre": pnr - int(rng.integers(5, 15)), "pnr": pnr, "post": pnr + int(rng.integers(5, 20))}
        verb = str(rng.choice(DEMO_VERBS))
        rows = _graph_rows(rng, verb)
        # every object is seen in the PNR frame and, most of the time, in PRE and POST too
        seen = {obj: ["pnr"] + [ft for ft, p in (("pre", 0.85), ("post", 0.8)) if rng.random() < p]
                for obj, _ in rows}
        boxes = {obj: {ft: _box(rng, obj) for ft in ("pre", "pnr", "post") if ft in fts} for obj, fts in seen.items()}
        num_annotators = 2 if rng.random() < 0.1 or (split == "train" and n == 3) else 1
        annotations[uid] = {"clip_frame_number": numbers, "annotations": {}}
        roi_feats[uid] = {}
        for a in range(num_annotators):
            aid = _annotator_id(f"{split}/{uid}/{a}")
            verb_a = verb
            if split == "train" and n == 3 and a == 1:  # annotators that disagree on the verb
                verb_a = DEMO_VERBS[(DEMO_VERBS.index(verb) + 1) % len(DEMO_VERBS)]
            ann_rows, feats = [], []
            for obj, rel in rows:
                bb = {ft: b + (rng.normal(0, 0.01, b.shape).astype(np.float32) if a else 0) for ft, b in
                      boxes[obj].items()}
                ann_rows.append({"verb": verb_a, "obj": obj, "rel": rel, "bbox": bb})
                code = obj_codes[DEMO_OBJECTS.index(obj)]
                feats.append({ft: torch.from_numpy(code + rng.normal(0, 1.5, (len(b), ROI_DIM))
                                                   .astype(np.float32)) for ft, b in bb.items()})
            annotations[uid]["annotations"][aid] = ann_rows
            roi_feats[uid][aid] = feats
            verb_feats[aid] = torch.from_numpy(verb_codes[DEMO_VERBS.index(verb_a)]
                                               + rng.normal(0, 1.5, VERB_DIM).astype(np.float32))
        frame_dir = os.path.join(root, "frames", uid)
        os.makedirs(frame_dir, exist_ok=True)
        for ft in ("pre", "pnr", "post"):
            drawn = [(obj, boxes[obj][ft][0]) for obj in boxes if ft in boxes[obj]]
            Image.fromarray(_render(drawn, rng)).save(os.path.join(frame_dir, f"{clip}_{ft}.jpg"), quality=92)
    with open(os.path.join(root, f"easg_{split}.pkl"), "wb") as f:
        pickle.dump(annotations, f)
    with open(os.path.join(root, f"roi_feats_{split}.pkl"), "wb") as f:
        pickle.dump(roi_feats, f)  # like upstream's produce_roi_features.py: a plain pickle of torch tensors


def generate_easg_demo(root: str) -> None:
    """Write the demo EASG dataset under ``root`` (see the module docstring)."""
    os.makedirs(root, exist_ok=True)
    for name, items in (("objects.txt", DEMO_OBJECTS), ("relationships.txt", DEMO_RELATIONS),
                        ("verbs.txt", DEMO_VERBS)):
        with open(os.path.join(root, name), "w") as f:
            f.write("\n".join(items) + "\n")
    verb_feats: Dict[str, torch.Tensor] = {}
    for split in SPLITS:
        _generate_split(root, split, verb_feats)
    buf = io.BytesIO()
    torch.save(verb_feats, buf)
    with open(os.path.join(root, "verb_features.pt"), "wb") as f:
        f.write(buf.getvalue())


def easg_demo_root(datasets_root) -> str:
    """``$SGG_DATASETS/demo/easg``."""
    return os.path.join(datasets_root(), "demo", "easg")


def ensure_easg_demo(datasets_root) -> str:
    """Generate the demo EASG dataset on first use (concurrency-safe); return its root."""
    return ensure_generated(easg_demo_root(datasets_root), generate_easg_demo, marker=_MARKER,
                            description="EASG dataset")
