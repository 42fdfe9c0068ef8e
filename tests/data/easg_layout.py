"""A tiny EASG dataset in the real on-disk layout (txt vocabularies, graph pickles with numpy boxes, a torch.save of
verb features, a plain pickle of torch RoI tensors, jpg frames), written by hand for tests."""

import os
import pickle

import numpy as np
import torch
from PIL import Image

OBJECTS = ["bowl", "knife", "TABLE", "table", "right_hand"]
RELATIONS = ["dobj", "from", "on", "with"]
VERBS = ["take", "cut", "put"]
DIM = 8
A1, A2 = "a" * 64, "b" * 64  # annotator ids (sha256 hex in EASG)


def _box(x, y, w=0.2, h=0.2, n=1):
    return np.array([[x, y, w, h]] * n, dtype=np.float32)


def aid(uid, annotator):
    """The annotator id of ``annotator`` (A1 / A2) in graph ``uid`` (EASG's are unique per graph)."""
    return f"{annotator[0]}-{uid}"


def graphs(split):
    """``{graph_uid: graph}`` of the split (train: 3 uids, one with two annotators that disagree on the verb)."""
    raw = _raw(split)
    return {uid: {"clip_frame_number": g["clip_frame_number"],
                  "annotations": {aid(uid, a): rows for a, rows in g["annotations"].items()}} for uid, g in raw.items()}


def _raw(split):
    if split == "val":
        return {"clipB_000100": {"clip_frame_number": {"pre": 90, "pnr": 100, "post": 110}, "annotations": {A1: [
            {"verb": "cut", "obj": "bowl", "rel": "dobj", "bbox": {"pnr": _box(0.1, 0.1)}},
            {"verb": "cut", "obj": "knife", "rel": "with", "bbox": {"pre": _box(0.5, 0.5), "pnr": _box(0.5, 0.4)}},
        ]}}}
    return {
        # two rows of the same object (relations merge), two boxes in one frame, a box poking out of the frame
        "clipA_000020": {"clip_frame_number": {"pre": 10, "pnr": 20, "post": 30}, "annotations": {A1: [
            {"verb": "take", "obj": "knife", "rel": "dobj", "bbox": {"pre": _box(0.1, 0.2), "pnr": _box(0.2, 0.2, n=2),
                                                                    "post": _box(0.9, 0.9, 0.2, 0.2)}},
            {"verb": "take", "obj": "TABLE", "rel": "from", "bbox": {"pnr": _box(0.0, 0.6, 0.9, 0.4)}},
            {"verb": "take", "obj": "TABLE", "rel": "on", "bbox": {"pnr": _box(0.0, 0.6, 0.9, 0.4)}},
        ]}},
        # two annotators: same verb and objects (merged into one graph)
        "clipA_000060": {"clip_frame_number": {"pre": 50, "pnr": 60, "post": 70}, "annotations": {
            A1: [{"verb": "put", "obj": "bowl", "rel": "dobj", "bbox": {"pnr": _box(0.3, 0.3), "post": _box(0.3, 0.4)}},
                 {"verb": "put", "obj": "table", "rel": "on", "bbox": {"post": _box(0.0, 0.7, 1.0, 0.3)}}],
            A2: [{"verb": "put", "obj": "bowl", "rel": "dobj", "bbox": {"pnr": _box(0.31, 0.3)}},
                 {"verb": "put", "obj": "right_hand", "rel": "with", "bbox": {"pnr": _box(0.6, 0.7)}}]}},
        # two annotators that disagree on the verb: two graphs (upstream groups by verb)
        "clipC_000040": {"clip_frame_number": {"pre": 30, "pnr": 40, "post": 50}, "annotations": {
            A1: [{"verb": "cut", "obj": "bowl", "rel": "dobj", "bbox": {"pre": _box(0.1, 0.1), "pnr": _box(0.1, 0.1)}}],
            A2: [{"verb": "take", "obj": "bowl", "rel": "dobj", "bbox": {"pnr": _box(0.1, 0.1)}}]}},
    }


def write_easg(root, *, features=True, frames=True):
    """Write the tiny dataset under ``root`` (str or Path); returns ``root`` as a str."""
    root = str(root)
    os.makedirs(root, exist_ok=True)
    for name, items in (("objects.txt", OBJECTS), ("relationships.txt", RELATIONS), ("verbs.txt", VERBS)):
        with open(os.path.join(root, name), "w") as f:
            f.write("\n".join(items) + "\n")
    rng = np.random.default_rng(0)
    verb_feats = {}
    for split in ("train", "val"):
        data = graphs(split)
        with open(os.path.join(root, f"easg_{split}.pkl"), "wb") as f:
            pickle.dump(data, f)
        roi = {uid: {a: [{ft: torch.full((len(b), DIM), float(OBJECTS.index(r["obj"])))
                            for ft, b in r["bbox"].items()} for r in rows]
                     for a, rows in g["annotations"].items()} for uid, g in data.items()}
        for uid, g in data.items():
            for a, rows in g["annotations"].items():
                verb_feats[a] = torch.full((DIM,), float(VERBS.index(rows[0]["verb"])))
            if frames:
                os.makedirs(os.path.join(root, "frames", uid), exist_ok=True)
                for ft in ("pre", "pnr", "post"):
                    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                    Image.fromarray(img).save(os.path.join(root, "frames", uid, f"{uid.rsplit('_', 1)[0]}_{ft}.jpg"))
        if features:
            with open(os.path.join(root, f"roi_feats_{split}.pkl"), "wb") as f:
                pickle.dump(roi, f)
    if features:
        torch.save(verb_feats, os.path.join(root, "verb_features.pt"))
    return root


# config overrides that size the demo configs' models for this vocabulary
TINY_SIZES = ["MODEL.EASG.NUM_OBJECTS", str(len(OBJECTS)), "MODEL.EASG.NUM_RELATIONS", str(len(RELATIONS)),
              "MODEL.EASG.NUM_VERBS", str(len(VERBS)), "MODEL.EASG.VERB_FEATURE_DIM", str(DIM),
              "MODEL.EASG.ROI_FEATURE_DIM", str(DIM)]
