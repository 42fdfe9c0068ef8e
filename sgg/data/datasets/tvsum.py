"""TVSum / SumMe for keyframe detection: the eccv16 h5 (features) and the raw videos (pixels).

Layout under ``$SGG_DATASETS/tvsum`` (see datasets/README_tvsum.md)::

    eccv16_dataset_tvsum_google_pool5.h5   one group per video ("video_1" ... "video_50"), keys below
    tvsum_splits.json                      [{"train_keys": [...], "test_keys": [...]}, ...]  (5 canonical folds)
    ydata-tvsum50-anno.tsv                 "<youtube id>\\t<category>\\t<s1>,<s2>,...": 20 lines per video, one
                                           per annotator, a 1-5 score for every frame
    videos/<youtube id>.mp4

``$SGG_DATASETS/summe`` holds ``eccv16_dataset_summe_google_pool5.h5`` + ``summe_splits.json`` (h5 only).

h5 group keys (eccv16): ``features`` (n_steps, D) float32, ``gtscore`` (n_steps,), ``user_summary`` (n_users,
n_frames), ``change_points`` (n_segs, 2) inclusive frame ranges, ``n_frame_per_seg`` (n_segs,), ``n_frames`` (),
``picks`` (n_steps,) frame index of each step, optional ``n_steps``, ``gtsummary``, ``video_name``, and optional
``user_scores`` (n_users, n_frames) raw per-annotator scores (else taken from the anno tsv via ``video_name``).
The h5 numbers TVSum's videos in ``ydata-tvsum50-anno.tsv`` order: ``video_k`` is the k-th video of the tsv.

Dataset dicts (one per video) are light; :class:`~sgg.data.keyframe_mapper.KeyframeMapper` reads the arrays:

* h5 path: ``{"video_id", "source": "h5", "h5_file", "h5_key", "n_frames", "n_steps", "video_name",
  "user_scores" (uint8 (n_users, n_frames) or None)}``;
* raw path: ``{"video_id", "source": "video", "video_file", "video_name", "category", "n_frames",
  "user_scores" uint8 (n_users, n_frames)}``.

Catalog names: ``tvsum``, ``tvsum_split{0..4}_{train,test}``, ``tvsum_raw``, ``tvsum_raw_split{0..4}_{train,test}``,
``summe``, ``summe_split{0..4}_{train,test}`` and ``demo_`` twins of the TVSum ones (generated on first use).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import yaml

from sgg.data.catalog import DatasetCatalog, MetadataCatalog, datasets_root
from sgg.utils.errors import FileReadError, one_line

__all__ = ["H5_REQUIRED_KEYS", "TVSUM_H5", "SUMME_H5", "read_tvsum_annotations", "read_splits", "find_anno_file",
           "open_eccv16_h5", "load_eccv16_h5", "load_tvsum_videos", "register_keyframe_dataset",
           "register_keyframe_family", "register_all_tvsum", "TVSUM_SPLITS"]

logger = logging.getLogger(__name__)

TVSUM_H5 = "eccv16_dataset_tvsum_google_pool5.h5"
SUMME_H5 = "eccv16_dataset_summe_google_pool5.h5"
TVSUM_SPLITS = "tvsum_splits.json"
ANNO_FILE = "ydata-tvsum50-anno.tsv"
# Where the official tarball (ydata-tvsum50-v1_1) puts things, tried after the flat layout.
_ANNO_CANDIDATES = (ANNO_FILE, os.path.join("ydata-tvsum50-v1_1", "data", ANNO_FILE), os.path.join("data", ANNO_FILE))
_VIDEO_DIR_CANDIDATES = ("videos", os.path.join("ydata-tvsum50-v1_1", "video"), "video")
H5_REQUIRED_KEYS = ("features", "gtscore", "user_summary", "change_points", "n_frame_per_seg", "n_frames", "picks")
NUM_FOLDS = 5


# ---------------------------------------------------------------------------- annotations and splits
def read_tvsum_annotations(path: str) -> "OrderedDict[str, dict]":
    """Parse ``ydata-tvsum50-anno.tsv`` -> ``{youtube_id: {"category", "user_scores" uint8 (n_users, n_frames)}}``.

    Videos keep the file's order (the h5's ``video_k`` numbering). Raises ``ValueError`` naming the line on a
    malformed row or when one video's annotators disagree on the number of frames.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TVSum annotation file '{path}' not found; it ships in ydata-tvsum50-v1_1/data/ "
                                "(see datasets/README_tvsum.md).")
    rows: "OrderedDict[str, dict]" = OrderedDict()
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields (video id, category, "
                                 f"comma-separated scores), got {len(parts)}.")
            vid, category, scores = parts
            try:
                values = np.array([int(float(s)) for s in scores.split(",")], dtype=np.uint8)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: scores of video '{vid}' are not numbers ({e}).") from e
            entry = rows.setdefault(vid, {"category": category, "scores": []})
            if entry["scores"] and len(values) != len(entry["scores"][0]):
                raise ValueError(f"{path}:{lineno}: video '{vid}' has {len(values)} frame scores here but "
                                 f"{len(entry['scores'][0])} on its first annotator's line.")
            entry["scores"].append(values)
    return OrderedDict((vid, {"category": e["category"], "user_scores": np.stack(e["scores"])})
                       for vid, e in rows.items())


def read_splits(path: str) -> List[Dict[str, List[str]]]:
    """Read a splits file (``[{"train_keys": [...], "test_keys": [...]}, ...]``); keys lose any ``path/`` prefix.

    JSON (pytorch-vsumm-reinforce's ``tvsum_splits.json``) or YAML (DSNet's ``splits/tvsum.yml``). When ``path``
    does not exist, a DSNet-style ``tvsum.yml`` / ``summe.yml`` beside it is used instead.
    """
    if not os.path.isfile(path):
        alternative = os.path.join(os.path.dirname(path), os.path.basename(path).replace("_splits.json", ".yml"))
        if not os.path.isfile(alternative):
            raise FileNotFoundError(f"Splits file '{path}' not found. The canonical 5-fold TVSum/SumMe splits come "
                                    "with the eccv16 h5 files (see datasets/README_tvsum.md).")
        path = alternative
    with open(path) as f:
        try:
            splits = yaml.safe_load(f) if path.endswith((".yml", ".yaml")) else json.load(f)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ValueError(f"Splits file '{path}' is not valid JSON/YAML: {e}") from e
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "train_keys" in s and "test_keys" in s
                                               for s in splits):
        raise ValueError(f"Splits file '{path}' must be a list of {{'train_keys': [...], 'test_keys': [...]}}.")
    return [{part: [str(k).rstrip("/").split("/")[-1] for k in s[f"{part}_keys"]] for part in ("train", "test")}
            for s in splits]


def find_anno_file(root: str) -> Optional[str]:
    """The TVSum annotation tsv under ``root`` (flat or tarball layout), or ``None``."""
    for rel in _ANNO_CANDIDATES:
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            return path
    return None


def _select(dicts: List[dict], keys: Optional[Sequence[str]], source: str) -> List[dict]:
    if keys is None:
        return dicts
    by_key = {}
    for d in dicts:
        by_key[d["video_id"]] = d
        if d.get("h5_key"):
            by_key[d["h5_key"]] = d
        if d.get("video_name"):
            by_key[d["video_name"]] = d
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise KeyError(f"Split keys {missing[:5]} are not videos of {source}; the splits file does not belong to "
                       "this dataset.")
    return [by_key[k] for k in keys]


# ---------------------------------------------------------------------------- h5 path
def _decode_name(value) -> str:
    value = value[()] if hasattr(value, "shape") else value
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else b""
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_group(h5_file: str, key: str, group) -> dict:
    """Validate one eccv16 group; return its sizes. Errors name the file, the group, the key and the expectation."""
    where = f"'{h5_file}' group '{key}'"
    missing = [k for k in H5_REQUIRED_KEYS if k not in group]
    if missing:
        raise KeyError(f"{where} lacks key(s) {missing}; an eccv16 video group needs {list(H5_REQUIRED_KEYS)}. "
                       "Re-download the eccv16 h5 or regenerate it (see datasets/README_tvsum.md).")
    n_frames = int(np.asarray(group["n_frames"][()]).reshape(-1)[0])
    n_steps = group["picks"].shape[0]
    checks = [("features", group["features"].ndim == 2 and group["features"].shape[0] == n_steps,
               f"(n_steps={n_steps}, D)", group["features"].shape),
              ("gtscore", group["gtscore"].shape == (n_steps,), f"({n_steps},)", group["gtscore"].shape),
              ("user_summary", group["user_summary"].ndim == 2 and group["user_summary"].shape[1] == n_frames,
               f"(n_users, n_frames={n_frames})", group["user_summary"].shape),
              ("change_points", group["change_points"].ndim == 2 and group["change_points"].shape[1] == 2,
               "(n_segs, 2)", group["change_points"].shape),
              ("n_frame_per_seg", group["n_frame_per_seg"].shape == (group["change_points"].shape[0],),
               f"({group['change_points'].shape[0]},) = one count per change_points row",
               group["n_frame_per_seg"].shape)]
    if "user_scores" in group:
        checks.append(("user_scores", group["user_scores"].ndim == 2 and group["user_scores"].shape[1] == n_frames,
                       f"(n_users, n_frames={n_frames})", group["user_scores"].shape))
    for name, ok, expected, got in checks:
        if not ok:
            raise ValueError(f"{where} key '{name}' has shape {tuple(got)}, expected {expected}.")
    return {"n_frames": n_frames, "n_steps": n_steps}


def open_eccv16_h5(h5_file: str):
    """``h5py.File(h5_file, "r")``; a truncated / corrupt / non-HDF5 file raises
    :class:`~sgg.utils.errors.FileReadError` (an ``OSError``) naming it."""
    import h5py

    try:
        return h5py.File(h5_file, "r")
    except OSError as e:
        raise FileReadError(f"Cannot open h5 '{h5_file}': {one_line(e)}. The file is truncated, corrupt or not HDF5; "
                            "re-download or regenerate it (datasets/README_tvsum.md).") from e


def load_eccv16_h5(h5_file: str, *, keys: Optional[Sequence[str]] = None, anno_file: Optional[str] = None
                   ) -> List[dict]:
    """Dataset dicts of an eccv16 h5 (all groups in natural ``video_k`` order, or the given ``keys``).

    Every group is validated (required keys, shapes). Per-annotator scores come from the group's ``user_scores``,
    else from ``anno_file`` by ``video_name`` (or, lacking a name, by position in the tsv).
    """
    if not os.path.isfile(h5_file):
        raise FileNotFoundError(f"eccv16 h5 '{h5_file}' not found (see datasets/README_tvsum.md for where to get it).")
    annotations = read_tvsum_annotations(anno_file) if anno_file else None
    anno_order = list(annotations) if annotations else []
    dicts = []
    with open_eccv16_h5(h5_file) as f:
        names = sorted(f.keys(), key=lambda k: (len(k), k))  # video_2 before video_10
        for key in names:
            group = f[key]
            sizes = _check_group(h5_file, key, group)
            name = _decode_name(group["video_name"]) if "video_name" in group else None
            user_scores = None
            if "user_scores" in group:
                user_scores = np.asarray(group["user_scores"][()])
            elif annotations is not None:
                if name is None and key.startswith("video_") and key[6:].isdigit():
                    index = int(key[6:]) - 1
                    name = anno_order[index] if index < len(anno_order) else None
                if name in annotations:
                    user_scores = annotations[name]["user_scores"]
            dicts.append({"video_id": key, "source": "h5", "h5_file": h5_file, "h5_key": key, "video_name": name,
                          "user_scores": user_scores, **sizes})
    return _select(dicts, keys, h5_file)


# ---------------------------------------------------------------------------- raw video path
def _find_video(video_dir: str, vid: str) -> str:
    for ext in (".mp4", ".webm", ".mkv", ".avi"):
        path = os.path.join(video_dir, vid + ext)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"Video '{vid}' (listed in the annotation tsv) not found as {vid}.mp4 in '{video_dir}'.")


def load_tvsum_videos(root: str, *, keys: Optional[Sequence[str]] = None) -> List[dict]:
    """Dataset dicts of the raw TVSum videos under ``root`` (annotation tsv + ``videos/``).

    ``keys`` may be youtube ids or the h5's ``video_k`` names (k-th video of the tsv, 1-based).
    """
    anno_file = find_anno_file(root)
    if anno_file is None:
        raise FileNotFoundError(f"No {ANNO_FILE} under '{root}' (tried {list(_ANNO_CANDIDATES)}); see "
                                "datasets/README_tvsum.md.")
    video_dir = next((os.path.join(root, d) for d in _VIDEO_DIR_CANDIDATES if os.path.isdir(os.path.join(root, d))),
                     None)
    if video_dir is None:
        raise FileNotFoundError(f"No video folder under '{root}' (tried {list(_VIDEO_DIR_CANDIDATES)}).")
    dicts = []
    for k, (vid, entry) in enumerate(read_tvsum_annotations(anno_file).items(), 1):
        dicts.append({"video_id": vid, "source": "video", "video_file": _find_video(video_dir, vid),
                      "video_name": vid, "h5_key": f"video_{k}", "category": entry["category"],
                      "n_frames": int(entry["user_scores"].shape[1]), "user_scores": entry["user_scores"]})
    return _select(dicts, keys, anno_file)


# ---------------------------------------------------------------------------- registration
def register_keyframe_dataset(name: str, loader: Callable[[], List[dict]], *, f1_reduction: str, source: str) -> None:
    """Register ``name`` with keyframe metadata (evaluator ``keyframe``, mapper ``KeyframeMapper``)."""
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(evaluator_type="keyframe", mapper="KeyframeMapper", f1_reduction=f1_reduction,
                                  source=source)


def _h5_loader(root_fn, h5_name: str, splits_name: str, fold: Optional[int], part: Optional[str],
               with_anno: bool, prepare: Optional[Callable[[str], None]]):
    def load():
        root = root_fn()
        if prepare is not None:
            prepare(root)
        keys = None
        if fold is not None:
            splits = read_splits(os.path.join(root, splits_name))
            if fold >= len(splits):
                raise IndexError(f"Fold {fold} requested but '{splits_name}' under '{root}' has {len(splits)} folds.")
            keys = splits[fold][part]
        anno = find_anno_file(root) if with_anno else None
        return load_eccv16_h5(os.path.join(root, h5_name), keys=keys, anno_file=anno)
    return load


def _raw_loader(root_fn, splits_name: str, fold: Optional[int], part: Optional[str],
                prepare: Optional[Callable[[str], None]]):
    def load():
        root = root_fn()
        if prepare is not None:
            prepare(root)
        keys = read_splits(os.path.join(root, splits_name))[fold][part] if fold is not None else None
        return load_tvsum_videos(root, keys=keys)
    return load


def register_keyframe_family(prefix: str, root_fn: Callable[[], str], *, h5_name: str, splits_name: str,
                             f1_reduction: str, raw: bool, prepare: Optional[Callable[[str], None]] = None) -> None:
    """Register ``prefix`` (whole set) and ``prefix_split{k}_{train,test}`` (the 5 folds) reading the eccv16 h5
    ``h5_name`` under ``root_fn()``; with ``raw`` also ``prefix_raw*`` reading the videos. ``prepare(root)`` runs
    first (a demo generator)."""
    with_anno = f1_reduction == "avg"
    folds = [(None, None)] + [(k, part) for k in range(NUM_FOLDS) for part in ("train", "test")]
    for fold, part in folds:
        suffix = "" if fold is None else f"_split{fold}_{part}"
        register_keyframe_dataset(f"{prefix}{suffix}",
                                  _h5_loader(root_fn, h5_name, splits_name, fold, part, with_anno, prepare),
                                  f1_reduction=f1_reduction, source="h5")
        if raw:
            register_keyframe_dataset(f"{prefix}_raw{suffix}", _raw_loader(root_fn, splits_name, fold, part, prepare),
                                      f1_reduction=f1_reduction, source="video")


def register_all_tvsum() -> None:
    """Register TVSum and SumMe under ``$SGG_DATASETS`` (resolved when a dataset is loaded); the demo's
    ``demo_tvsum*`` are registered by ``sgg.data.demo``."""
    register_keyframe_family("tvsum", lambda: os.path.join(datasets_root(), "tvsum"), h5_name=TVSUM_H5,
                             splits_name=TVSUM_SPLITS, f1_reduction="avg", raw=True)
    register_keyframe_family("summe", lambda: os.path.join(datasets_root(), "summe"), h5_name=SUMME_H5,
                             splits_name="summe_splits.json", f1_reduction="max", raw=False)
