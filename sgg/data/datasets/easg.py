"""EASG — Egocentric Action Scene Graphs (Rodin et al., CVPR 2024; fpv-iplab/EASG), read from its released files.

Expected layout (``DATASETS.EASG.ROOT``, default ``$SGG_DATASETS/easg``; = upstream's
``easg-generation/annts_in_new_format/`` plus the optional downloads; docs/easg.md)::

    objects.txt                391 object classes, one per line (upstream keeps both ``TABLE`` and ``table``: kept)
    relationships.txt          13 relations (around, dobj, from, in, inside, into, on, onto, through, to, towards, ...)
    verbs.txt                  198 verbs
    easg_train.pkl / easg_val.pkl
        {graph_uid: {"clip_frame_number": {"pre" | "pnr" | "post": int},
                     "annotations": {annotator_id: [{"verb": str, "obj": str, "rel": str,
                                                      "bbox": {"pre" | "pnr" | "post": float32 (n, 4)
                                                               normalised [x, y, w, h]}}, ...]}}}
        graph_uid = "<clip_uid>_<pnr_frame:06d>"
    verb_features.pt           optional: {annotator_id: float (2304,)} SlowFast clip features (torch.save)
    roi_feats_{train,val}.pkl  optional: {graph_uid: {annotator_id: [{frame type: float (n, 1024)} per row]}}
                               (a pickle of torch tensors, read by a restricted unpickler)
    frames/<graph_uid>/<clip_uid>_{pre,pnr,post}.jpg   optional: the annotated frames

``DATASETS.EASG.FEATURES_DIR`` (default: the root) is where the two feature files are looked for. Pickles are read with
restricted unpicklers (builtins + numpy arrays; for ``roi_feats`` also torch's tensor rebuild), never ``pickle.load``.

One dataset dict per (graph_uid, verb) — upstream's ``run_easg.py`` grouping: the rows of all annotators of a graph
with the same verb are merged, objects are merged by class, and an object's relations are the union over its rows (3
train graphs have annotators that disagree on the verb; each verb becomes its own graph, as upstream)::

    {"graph_id": "<graph_uid>" (+ "#<verb>" for the rare second verb), "graph_uid", "clip_uid", "dataset_name",
     "verb": int, "annotators": [annotator ids],
     "objects": [{"category_id": int, "relations": [int, ...] sorted,
                  "boxes": {frame type: float32 (n, 4) normalised xyxy}  (every row's boxes of that object),
                  "roi_features": {frame type: float32 (n, 1024)} (only with roi_feats_*.pkl)}, ...],
     "triplets": int64 (M, 3) [verb, object class, relation] (the graph's GT, distinct),
     "frames": [{"frame_type": "pre" | "pnr" | "post", "clip_frame_number": int, "file_name": str}] (the frame types
               that hold a box, in pre, pnr, post order; file_name = the jpg path, "" when frames/ is absent),
     "verb_feature": float32 (2304,) (only with verb_features.pt; the last annotator's with that verb, as upstream)}
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from sgg.utils.errors import SGGError
from sgg.utils.pickles import DataOnlyUnpickler, unpickle_file

from ..catalog import DatasetCatalog, MetadataCatalog, datasets_root

__all__ = [
    "EASG_SPLITS", "EASG_FRAME_TYPES", "EASG_NUM_OBJECTS", "EASG_NUM_RELATIONS", "EASG_NUM_VERBS", "EASGFormatError",
    "EASG_OPTIONS", "easg_options_from_config", "easg_root", "read_vocabulary", "load_easg_pickle",
    "load_roi_features", "load_verb_features", "load_easg", "load_registered_easg", "register_easg_split",
    "get_easg_metadata", "easg_vocabulary", "register_easg",
]

logger = logging.getLogger(__name__)

EASG_SPLITS = ("train", "val")  # upstream has no test split: val is the test set
EASG_FRAME_TYPES = ("pre", "pnr", "post")
# Sizes of the released vocabularies (VIDEO_MODELS.md §6.1); the loader reads any size, these document the real one.
EASG_NUM_OBJECTS, EASG_NUM_RELATIONS, EASG_NUM_VERBS = 391, 13, 198
VOCAB_FILES = (("objects", "objects.txt"), ("relations", "relationships.txt"), ("verbs", "verbs.txt"))
_DEFAULT_OPTIONS = {"root": "", "features_dir": "", "features": "auto"}


class EASGFormatError(SGGError, ValueError):
    """An EASG file is missing, unreadable or not in the expected format (the message says how to fix it)."""


# ------------------------------------------------------------------------------------------------------ options
EASG_OPTIONS = "easg"  # the option group of every easg_* / demo_easg_* loader


def easg_options_from_config(cfg) -> Dict[str, object]:
    """The loader options of ``cfg.DATASETS.EASG``: ``ROOT``, ``FEATURES_DIR`` and ``FEATURES`` ("auto": read the
    feature files when present; "on": they must exist; "off": never read)."""
    e = cfg.DATASETS.EASG
    return {"root": e.ROOT, "features_dir": e.FEATURES_DIR, "features": str(e.FEATURES).lower()}


def _validate_options(options: Mapping[str, object]) -> None:
    if options["features"] not in ("auto", "on", "off"):
        raise ValueError(f"DATASETS.EASG.FEATURES must be 'auto', 'on' or 'off', got {options['features']!r}.")


DatasetCatalog.register_options(EASG_OPTIONS, defaults=_DEFAULT_OPTIONS, from_config=easg_options_from_config,
                                validate=_validate_options, keys="DATASETS.EASG.*")


def easg_root() -> str:
    """``DATASETS.EASG.ROOT`` if configured, else ``$SGG_DATASETS/easg``."""
    root = str(DatasetCatalog.options(EASG_OPTIONS)["root"])
    return os.path.expanduser(root) or os.path.join(datasets_root(), "easg")


# ----------------------------------------------------------------------------------------------------- reading
class _EASGUnpickler(DataOnlyUnpickler):
    allowed = "EASG annotation pickles may only contain dicts, lists, strings, numbers and numpy arrays"
    advice = "Re-download easg_{train,val}.pkl from fpv-iplab/EASG (easg-generation/annts_in_new_format/)."


def _safe_storage_from_bytes(data: bytes):
    # torch's own _load_from_bytes unpickles with weights_only=False; the storage bytes need nothing beyond tensors.
    return torch.load(io.BytesIO(data), weights_only=True)


class _TensorUnpickler(DataOnlyUnpickler):
    """Data-only unpickler that also rebuilds torch tensors (``roi_feats_*.pkl`` is a plain pickle of tensors)."""

    allowed = "EASG feature pickles may only contain dicts, lists, strings, numbers, numpy arrays and torch tensors"
    advice = "Regenerate it with upstream's utils/produce_roi_features.py."

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _safe_storage_from_bytes
        return super().find_class(module, name)


def _unpickle(path: str, unpickler, what: str):
    return unpickle_file(
        path, unpickler, error=EASGFormatError,
        missing=f"EASG file not found: '{path}' ({what}). See docs/easg.md for the layout; set DATASETS.EASG.ROOT "
                "(or $SGG_DATASETS/easg).",
        corrupt=f"expected {what}. The file is corrupt or not an EASG file: re-download it.")


def load_easg_pickle(path: str) -> dict:
    """``easg_{split}.pkl`` as a dict (restricted unpickler); error unless it is ``{graph_uid: dict}``."""
    data = _unpickle(path, _EASGUnpickler, "the {graph_uid: {clip_frame_number, annotations}} graph pickle")
    if not isinstance(data, dict):
        raise EASGFormatError(f"'{path}' must hold a dict keyed by graph_uid ('<clip_uid>_<pnr:06d>'), got "
                              f"{type(data).__name__}. Use upstream's easg_{{train,val}}.pkl.")
    return data


def load_roi_features(path: str) -> dict:
    """``roi_feats_{split}.pkl``: ``{graph_uid: {annotator_id: [{frame type: (n, 1024) tensor}, ...]}}``."""
    data = _unpickle(path, _TensorUnpickler, "{graph_uid: {annotator_id: [{frame type: (n, D) tensor}]}}")
    if not isinstance(data, dict):
        raise EASGFormatError(f"'{path}' must hold a dict keyed by graph_uid, got {type(data).__name__}.")
    return data


def load_verb_features(path: str) -> dict:
    """``verb_features.pt``: ``{annotator_id: (2304,) tensor}`` (``torch.load(weights_only=True)``)."""
    if not os.path.isfile(path):
        raise EASGFormatError(f"EASG file not found: '{path}' (verb features). Set DATASETS.EASG.FEATURES_DIR or "
                              "DATASETS.EASG.FEATURES off.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EASGFormatError(f"Could not read '{path}' ({type(e).__name__}: {str(e)[:120]}); expected a torch.save "
                              "of {annotator_id: (2304,) tensor} (upstream's utils/extract_verb_features.py).") from e
    if not isinstance(data, dict):
        raise EASGFormatError(f"'{path}' must hold a dict {{annotator_id: (D,) tensor}}, got {type(data).__name__}.")
    return data


def read_vocabulary(root: str) -> Dict[str, List[str]]:
    """``{"objects", "relations", "verbs"}`` name lists from the three txt files (line order = class index).

    Duplicate-looking names (``TABLE`` / ``table``) are distinct classes, as upstream has them; an exact duplicate
    line would make ``list.index`` (upstream's lookup) ambiguous and is an error.
    """
    vocab = {}
    for key, name in VOCAB_FILES:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise EASGFormatError(f"EASG file not found: '{path}'. The root must hold objects.txt, "
                                  "relationships.txt and verbs.txt (upstream's annts_in_new_format/); set "
                                  "DATASETS.EASG.ROOT.")
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        while lines and not lines[-1]:
            lines.pop()
        if not lines or "" in lines:
            where = lines.index("") + 1 if "" in lines else 1
            raise EASGFormatError(f"'{path}': line {where} is empty; expected one class name per line.")
        seen: Dict[str, int] = {}
        for i, line in enumerate(lines):
            if line in seen:
                raise EASGFormatError(f"'{path}': '{line}' appears on lines {seen[line] + 1} and {i + 1}; every class "
                                      "name must be unique (use the file shipped with EASG).")
            seen[line] = i
        vocab[key] = lines
    return vocab


# ----------------------------------------------------------------------------------------------------- parsing
def _row_boxes(row: dict, where: str) -> Dict[str, np.ndarray]:
    bbox = row.get("bbox")
    if not isinstance(bbox, dict) or not bbox:
        raise EASGFormatError(f"{where}: 'bbox' must be a non-empty dict {{'pre' | 'pnr' | 'post': (n, 4) array}}, "
                              f"got {bbox!r:.80}.")
    out = {}
    for ft, arr in bbox.items():
        if ft not in EASG_FRAME_TYPES:
            raise EASGFormatError(f"{where}: unknown frame type '{ft}' in 'bbox'; expected pre, pnr or post.")
        try:
            b = np.asarray(arr, dtype=np.float32).reshape(-1, 4) if np.size(arr) % 4 == 0 else None
        except (TypeError, ValueError):
            b = None
        if b is None or not len(b):
            raise EASGFormatError(f"{where}: bbox['{ft}'] must be an (n, 4) array of normalised [x, y, w, h], got "
                                  f"{arr!r:.80}.")
        if not np.isfinite(b).all() or (b[:, 2:] < 0).any():
            raise EASGFormatError(f"{where}: bbox['{ft}'] {b.tolist()!r:.80} holds NaN/Inf or a negative size; "
                                  "re-download the annotation pickle.")
        out[ft] = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)  # xywh -> xyxy, still normalised
    return out


def _index(vocab: Sequence[str], lookup: Dict[str, int], name, what: str, where: str, txt: str) -> int:
    if name not in lookup:
        raise EASGFormatError(f"{where}: {what} {name!r} is not in {txt} ({len(vocab)} names); the pickle and the "
                              "vocabulary files must come from the same EASG release.")
    return lookup[name]


def _parse_graph(graph_uid: str, graph, vocab, lookups, path: str) -> List[dict]:
    where = f"'{path}', graph '{graph_uid}'"
    if not isinstance(graph, dict) or "annotations" not in graph or "clip_frame_number" not in graph:
        raise EASGFormatError(f"{where}: expected a dict with 'clip_frame_number' and 'annotations', got "
                              f"{type(graph).__name__} with keys {sorted(graph) if isinstance(graph, dict) else '-'}.")
    numbers = graph["clip_frame_number"]
    if not isinstance(numbers, dict) or any(ft not in EASG_FRAME_TYPES for ft in numbers):
        raise EASGFormatError(f"{where}: 'clip_frame_number' must be {{'pre', 'pnr', 'post': int}}, got "
                              f"{numbers!r:.80}.")
    anns = graph["annotations"]
    if not isinstance(anns, dict) or not anns:
        raise EASGFormatError(f"{where}: 'annotations' must be a non-empty dict {{annotator_id: [rows]}}, got "
                              f"{anns!r:.80}.")
    verbs: "OrderedDict[int, dict]" = OrderedDict()
    for aid, rows in anns.items():
        if not isinstance(rows, list):
            raise EASGFormatError(f"{where}, annotator '{aid}': expected a list of rows, got {type(rows).__name__}.")
        for i, row in enumerate(rows):
            rwhere = f"{where}, annotator '{str(aid)[:12]}...', row {i}"
            if not isinstance(row, dict) or any(k not in row for k in ("verb", "obj", "rel", "bbox")):
                raise EASGFormatError(f"{rwhere}: expected a dict with 'verb', 'obj', 'rel' and 'bbox', got "
                                      f"{sorted(row) if isinstance(row, dict) else type(row).__name__}.")
            v = _index(vocab["verbs"], lookups["verbs"], row["verb"], "verb", rwhere, "verbs.txt")
            o = _index(vocab["objects"], lookups["objects"], row["obj"], "object", rwhere, "objects.txt")
            r = _index(vocab["relations"], lookups["relations"], row["rel"], "relation", rwhere, "relationships.txt")
            g = verbs.setdefault(v, {"annotators": [], "objects": OrderedDict(), "rows": []})
            if aid not in g["annotators"]:
                g["annotators"].append(aid)
            obj = g["objects"].setdefault(o, {"category_id": o, "relations": set(), "boxes": {}, "rows": []})
            obj["relations"].add(r)
            for ft, b in _row_boxes(row, rwhere).items():
                obj["boxes"][ft] = np.concatenate([obj["boxes"][ft], b]) if ft in obj["boxes"] else b
            obj["rows"].append((aid, i))
    clip_uid = graph_uid.rsplit("_", 1)[0]
    out = []
    for n, (v, g) in enumerate(verbs.items()):
        objects = []
        for obj in g["objects"].values():
            obj["relations"] = sorted(obj["relations"])
            objects.append(obj)
        triplets = np.array([[v, o["category_id"], r] for o in objects for r in o["relations"]], dtype=np.int64)
        present = [ft for ft in EASG_FRAME_TYPES if any(ft in o["boxes"] for o in objects)]
        missing = [ft for ft in present if ft not in numbers]
        if missing:
            raise EASGFormatError(f"{where}: boxes in frame '{missing[0]}' but no clip_frame_number for it.")
        out.append({"graph_id": graph_uid if n == 0 else f"{graph_uid}#{vocab['verbs'][v]}", "graph_uid": graph_uid,
                    "clip_uid": clip_uid, "verb": v, "annotators": list(g["annotators"]), "objects": objects,
                    "triplets": triplets,
                    "frames": [{"frame_type": ft, "clip_frame_number": int(numbers[ft])} for ft in present]})
    return out


def _as_array(value, where: str, dim: Optional[int] = None) -> np.ndarray:
    try:
        arr = (value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value))
        arr = arr.astype(np.float32)
    except (TypeError, ValueError, AttributeError):
        arr = None
    if arr is None or arr.ndim == 0 or (dim is not None and arr.shape[-1] != dim):
        raise EASGFormatError(f"{where}: expected a float tensor of width {dim or 'D'}, got "
                              f"{getattr(arr, 'shape', type(value).__name__)}.")
    return arr


def _attach_roi_features(graphs: List[dict], roi: dict, pickle_rows: Dict[str, dict], path: str) -> None:
    for g in graphs:
        uid = g["graph_uid"]
        if uid not in roi:
            raise EASGFormatError(f"'{path}': no features for graph '{uid}'; regenerate the file for this split "
                                  "(or set DATASETS.EASG.FEATURES off).")
        for obj in g["objects"]:
            feats: Dict[str, List[np.ndarray]] = {}
            for aid, i in obj["rows"]:
                rows = roi[uid].get(aid) if isinstance(roi[uid], dict) else None
                if not isinstance(rows, list) or i >= len(rows) or not isinstance(rows[i], dict):
                    raise EASGFormatError(f"'{path}', graph '{uid}', annotator '{str(aid)[:12]}...': expected a list "
                                          f"with one {{frame type: (n, D)}} dict per annotation row (row {i} of "
                                          f"{len(pickle_rows[uid]['annotations'][aid])}).")
                for ft, t in rows[i].items():
                    feats.setdefault(ft, []).append(_as_array(t, f"'{path}', graph '{uid}', row {i}, '{ft}'")
                                                    .reshape(-1, np.shape(t)[-1]))
            obj["roi_features"] = {ft: np.concatenate(v) for ft, v in feats.items()}


def load_easg(root: str, split: str, *, dataset_name: str = "", features: str = "auto",
              features_dir: str = "") -> List[dict]:
    """The graph dicts of ``split`` ("train" / "val") under ``root`` (see the module docstring).

    ``features``: "auto" attaches ``verb_feature`` / ``roi_features`` when the files exist in ``features_dir`` (default
    ``root``), "on" requires them, "off" skips them.
    """
    if split not in EASG_SPLITS:
        raise ValueError(f"EASG split must be 'train' or 'val' (val is the test set), got {split!r}.")
    if not os.path.isdir(root):
        raise EASGFormatError(f"EASG root not found: '{root}' is not a directory. Point DATASETS.EASG.ROOT at the "
                              "folder holding objects.txt, relationships.txt, verbs.txt and easg_{train,val}.pkl.")
    vocab = read_vocabulary(root)
    lookups = {k: {name: i for i, name in enumerate(v)} for k, v in vocab.items()}
    path = os.path.join(root, f"easg_{split}.pkl")
    data = load_easg_pickle(path)
    graphs: List[dict] = []
    for uid, graph in data.items():
        if not isinstance(uid, str) or "_" not in uid:
            raise EASGFormatError(f"'{path}': graph key {uid!r} is not '<clip_uid>_<pnr_frame:06d>'.")
        graphs.extend(_parse_graph(uid, graph, vocab, lookups, path))
    fdir = features_dir or root
    verb_path = os.path.join(fdir, "verb_features.pt")
    roi_path = os.path.join(fdir, f"roi_feats_{split}.pkl")
    if features == "on" or (features == "auto" and os.path.isfile(verb_path)):
        verb = load_verb_features(verb_path)
        for g in graphs:
            aid = next((a for a in reversed(g["annotators"]) if a in verb), None)
            if aid is None:
                raise EASGFormatError(f"'{verb_path}': no verb feature for any annotator of graph '{g['graph_id']}' "
                                      f"(annotators {[str(a)[:12] for a in g['annotators']]}).")
            g["verb_feature"] = _as_array(verb[aid], f"'{verb_path}', '{str(aid)[:12]}...'").reshape(-1)
    if features == "on" or (features == "auto" and os.path.isfile(roi_path)):
        _attach_roi_features(graphs, load_roi_features(roi_path), data, roi_path)
    frames_dir = os.path.join(root, "frames")
    has_frames = os.path.isdir(frames_dir)
    for g in graphs:
        g["dataset_name"] = dataset_name or f"easg_{split}"
        for fr in g["frames"]:
            fr["file_name"] = (os.path.join(frames_dir, g["graph_uid"], f"{g['clip_uid']}_{fr['frame_type']}.jpg")
                               if has_frames else "")
        for obj in g["objects"]:
            del obj["rows"]
    logger.info("EASG %s from %s: %d graphs from %d graph uids (%d clips), %d GT triplets%s%s.", split, root,
                len(graphs), len(data), len({g["clip_uid"] for g in graphs}), sum(len(g["triplets"]) for g in graphs),
                ", verb features" if graphs and "verb_feature" in graphs[0] else "",
                ", RoI features" if graphs and "roi_features" in graphs[0]["objects"][0] else "")
    return graphs


@functools.lru_cache(maxsize=4)
def _cached_load(root: str, split: str, dataset_name: str, features: str, features_dir: str) -> Tuple[dict, ...]:
    return tuple(load_easg(root, split, dataset_name=dataset_name, features=features, features_dir=features_dir))


def load_registered_easg(root: str, split: str, dataset_name: str) -> List[dict]:
    """The graph dicts of ``split`` under ``root`` with the options in effect (cached; callers get fresh outer dicts,
    the objects/frames inside are shared and must be treated read-only)."""
    o = DatasetCatalog.options(EASG_OPTIONS)
    fdir = os.path.abspath(os.path.expanduser(str(o["features_dir"]))) if o["features_dir"] else ""
    return [dict(d) for d in _cached_load(os.path.abspath(root), split, dataset_name, str(o["features"]), fdir)]


# ---------------------------------------------------------------------------------------------------- catalogs
@functools.lru_cache(maxsize=8)
def _vocabulary_of(root: str) -> Tuple[Tuple[str, ...], ...]:
    v = read_vocabulary(root)
    return tuple(v["objects"]), tuple(v["relations"]), tuple(v["verbs"])


def get_easg_metadata(root_fn: Callable[[], str]) -> dict:
    """Metadata of an ``easg_*`` / ``demo_easg_*`` dataset; the class lists are read from the root's txt files on
    first access (``MetadataCatalog.get(name).thing_classes`` etc. through :func:`easg_vocabulary`)."""
    return {"evaluator_type": "easg_graph", "mapper": "EASGMapper", "easg_root_fn": root_fn}


def easg_vocabulary(dataset_name: str) -> Dict[str, List[str]]:
    """``{"objects", "relations", "verbs"}`` of a registered EASG dataset (read from its root's txt files)."""
    root_fn = MetadataCatalog.get(dataset_name).get("easg_root_fn")
    if root_fn is None:
        raise KeyError(f"Dataset '{dataset_name}' is not an EASG dataset (registered: easg_train, easg_val, "
                       "demo_easg_train, demo_easg_val).")
    objects, relations, verbs = _vocabulary_of(os.path.abspath(root_fn()))
    return {"objects": list(objects), "relations": list(relations), "verbs": list(verbs)}


def register_easg_split(name: str, split: str, root_fn: Callable[[], str]) -> None:
    """Register ``name`` as EASG split ``split`` of the dataset at ``root_fn()`` (resolved at load time)."""
    DatasetCatalog.register(name, lambda: load_registered_easg(root_fn(), split, name), option_group=EASG_OPTIONS)
    MetadataCatalog.get(name).set(**get_easg_metadata(root_fn))


def register_easg() -> None:
    """Register ``easg_train`` and ``easg_val`` (``demo_easg_*`` are registered by ``sgg.data.demo``)."""
    for split in EASG_SPLITS:
        register_easg_split(f"easg_{split}", split, easg_root)
