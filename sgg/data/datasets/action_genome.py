"""Action Genome (Ji et al. 2020) for video scene graph generation, read the way STTran reads it.

Expected layout (``DATASETS.AG.ROOT``, default ``$SGG_DATASETS/action_genome``; datasets/README_action_genome.md)::

    annotations/person_bbox.pkl                    {frame_key: {bbox (N,4) xyxy, bbox_size (W,H), bbox_score, ...}}
    annotations/object_bbox_and_relationship.pkl   {frame_key: [{class, bbox (x,y,w,h) | None, visible,
                                                      attention_relationship, spatial_relationship,
                                                      contacting_relationship, metadata {tag, set}}, ...]}
    annotations/object_classes.txt                 36 lines, person first (txt spellings: ``closetcabinet`` ...)
    annotations/relationship_classes.txt           26 lines (txt spellings: ``lookingat`` ...)
    annotations/frame_list.txt                     every frame key (not needed by the loader)
    frames/<VID>.mp4/<frame:06d>.png

``frame_key`` is ``"<VID>.mp4/<frame:06d>.png"``. Pickles are read with a restricted unpickler (builtins + numpy arrays
only), never ``pickle.load``.

STTran's filters, in its order: ``datasize="mini"`` keeps the first 80 000 keys of ``person_bbox.pkl``; a frame is kept
when its objects' ``metadata.set`` is the split and at least one object is visible (after the optional small-box filter,
which drops objects whose box has a short edge < 16 px; STTran uses it for SGCls / SGDet); frames whose person box is
empty are dropped; videos need more than 2 remaining frames.

Each dataset dict is one video (the contract STTran-style models consume; docs/action_genome.md)::

    {"video_id": "50N4E", "dataset_name": "ag_test",
     "frames": [{"file_name": "<root>/frames/50N4E.mp4/000682.png", "frame_key": "50N4E.mp4/000682.png",
                 "height": 270, "width": 480,
                 "boxes": float32 (N, 4) xyxy pixels, row 0 = the person,
                 "labels": int64 (N,) AG classes 0-based (person = 0),
                 "relations": int64 (R, 3) [subject, object, predicate]}, ...]}

Predicates are 0-based over all 26 (attention 0-2, spatial 3-8, contacting 9-25); attention and contacting relations
are person -> object, spatial ones object -> person (AG's convention).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sgg.utils.errors import SGGError
from sgg.utils.pickles import DataOnlyUnpickler, RefusedPickleError, unpickle_file

from ..catalog import DatasetCatalog, MetadataCatalog, datasets_root

__all__ = [
    "AG_OBJECT_CLASSES", "AG_PREDICATES", "AG_ATTENTION_PREDICATES", "AG_SPATIAL_PREDICATES",
    "AG_CONTACTING_PREDICATES", "AG_OBJECT_CLASSES_TXT", "AG_PREDICATES_TXT", "ActionGenomeFormatError",
    "RestrictedUnpickler", "RefusedPickleError", "load_restricted_pickle", "load_action_genome",
    "AG_OPTIONS", "action_genome_options_from_config", "action_genome_root", "register_action_genome",
    "get_action_genome_metadata", "register_action_genome_split", "load_registered_action_genome",
]

logger = logging.getLogger(__name__)

# The spellings used inside the pickles (= STTran's class lists after its fix-ups), in the txt files' order.
AG_OBJECT_CLASSES = (
    "person", "bag", "bed", "blanket", "book", "box", "broom", "chair", "closet/cabinet", "clothes",
    "cup/glass/bottle", "dish", "door", "doorknob", "doorway", "floor", "food", "groceries", "laptop", "light",
    "medicine", "mirror", "paper/notebook", "phone/camera", "picture", "pillow", "refrigerator", "sandwich", "shelf",
    "shoe", "sofa/couch", "table", "television", "towel", "vacuum", "window",
)
AG_PREDICATES = (
    "looking_at", "not_looking_at", "unsure",
    "above", "beneath", "in_front_of", "behind", "on_the_side_of", "in",
    "carrying", "covered_by", "drinking_from", "eating", "have_it_on_the_back", "holding", "leaning_on", "lying_on",
    "not_contacting", "other_relationship", "sitting_on", "standing_on", "touching", "twisting", "wearing", "wiping",
    "writing_on",
)
AG_ATTENTION_PREDICATES = tuple(range(0, 3))
AG_SPATIAL_PREDICATES = tuple(range(3, 9))
AG_CONTACTING_PREDICATES = tuple(range(9, 26))
# The txt files drop '/' and '_' (``closetcabinet``, ``lookingat``); these are their exact lines.
AG_OBJECT_CLASSES_TXT = tuple(c.replace("/", "") for c in AG_OBJECT_CLASSES)
AG_PREDICATES_TXT = tuple(p.replace("_", "") for p in AG_PREDICATES)

_GROUP_FIELDS = (("attention_relationship", 0), ("spatial_relationship", 3), ("contacting_relationship", 9))
_DEFAULT_OPTIONS = {"root": "", "datasize": "large", "filter_small_box": False, "min_box_edge": 16.0,
                    "mini_num_frames": 80000}


class ActionGenomeFormatError(SGGError, ValueError):
    """An Action Genome file is missing, unreadable or not in the expected format (the message says how to fix it)."""


# ------------------------------------------------------------------------------------------ restricted unpickling
class RestrictedUnpickler(DataOnlyUnpickler):
    """Unpickler that only rebuilds builtins containers/scalars and numpy arrays; any other global is refused.

    Action Genome's annotation pickles hold nothing else, and a pickle that names e.g. ``os.system`` would otherwise
    execute code when loaded.
    """

    allowed = "Action Genome pickles may only contain dicts, lists, strings, numbers and numpy arrays"
    advice = "Re-download the official annotation file if this is unexpected."


def load_restricted_pickle(path: str):
    """Load ``path`` with :class:`RestrictedUnpickler`; errors name the file."""
    return unpickle_file(
        path, RestrictedUnpickler, error=ActionGenomeFormatError,
        missing=f"Action Genome file not found: '{path}'. See datasets/README_action_genome.md for the expected layout "
                "(set DATASETS.AG.ROOT or $SGG_DATASETS).",
        corrupt="the file is corrupt or not an Action Genome annotation pickle.")


# ----------------------------------------------------------------------------------------------------- options
AG_OPTIONS = "action_genome"  # the dataset option group of every ag_* / demo_ag_* loader


def action_genome_options_from_config(cfg) -> Dict[str, object]:
    """The loader options of ``cfg.DATASETS.AG`` (and ``TEST.RELATION.MODE``).

    ``DATASETS.AG.FILTER_SMALL_BOX``: ``"auto"`` filters small boxes for SGCls / SGDet and not for PredCls (STTran),
    ``"on"`` / ``"off"`` force it.
    """
    ag = cfg.DATASETS.AG
    small = str(ag.FILTER_SMALL_BOX).lower()
    if small not in ("auto", "on", "off", "true", "false"):
        raise ValueError(f"DATASETS.AG.FILTER_SMALL_BOX must be 'auto', 'on' or 'off', got {ag.FILTER_SMALL_BOX!r}.")
    filter_small = cfg.TEST.RELATION.MODE in ("sgcls", "sgdet") if small == "auto" else small in ("on", "true")
    return dict(root=ag.ROOT, datasize=ag.DATASIZE, filter_small_box=filter_small,
                min_box_edge=float(ag.SMALL_BOX_MIN_EDGE), mini_num_frames=int(ag.MINI_NUM_FRAMES))


def _validate_action_genome_options(options: Dict[str, object]) -> None:
    if options["datasize"] not in ("large", "mini"):
        raise ValueError(f"DATASETS.AG.DATASIZE must be 'large' or 'mini', got {options['datasize']!r}.")


DatasetCatalog.register_options(AG_OPTIONS, defaults=_DEFAULT_OPTIONS, from_config=action_genome_options_from_config,
                                validate=_validate_action_genome_options,
                                keys="DATASETS.AG.*, TEST.RELATION.MODE")


def action_genome_root() -> str:
    """``DATASETS.AG.ROOT`` if configured, else ``$SGG_DATASETS/action_genome``."""
    root = str(DatasetCatalog.options(AG_OPTIONS)["root"])
    return os.path.expanduser(root) or os.path.join(datasets_root(), "action_genome")


# ----------------------------------------------------------------------------------------------------- loading
def _read_class_file(path: str, expected: Sequence[str]) -> None:
    """Check a class txt file has exactly AG's lines (its order defines the class indices)."""
    if not os.path.isfile(path):
        raise ActionGenomeFormatError(f"Action Genome file not found: '{path}'. See datasets/README_action_genome.md.")
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    # The pickles' spellings are accepted too (some copies of the files were rewritten with them).
    normalized = [line.replace("/", "") if "/" in line else line.replace("_", "") for line in lines]
    if normalized != list(expected):
        diff = next((i for i, (a, b) in enumerate(zip(normalized, expected)) if a != b), min(len(lines), len(expected)))
        got = lines[diff] if diff < len(lines) else "<end of file>"
        want = expected[diff] if diff < len(expected) else "<end of file>"
        raise ActionGenomeFormatError(
            f"'{path}' must list Action Genome's {len(expected)} classes in the official order; line {diff + 1} is "
            f"'{got}' where '{want}' was expected ({len(lines)} lines found). Use the file shipped with the dataset."
        )


def _person_box(entry, key: str, path: str) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Row 0 of the frame's person boxes as float32 ``(4,)`` (or an empty array) and the frame size ``(W, H)``."""
    if not isinstance(entry, dict) or "bbox" not in entry or "bbox_size" not in entry:
        raise ActionGenomeFormatError(f"'{path}', frame '{key}': expected a dict with 'bbox' (N, 4) and 'bbox_size' "
                                      f"(W, H); got {type(entry).__name__} "
                                      f"with keys {sorted(entry) if isinstance(entry, dict) else '-'}.")
    try:
        bbox = np.asarray(entry["bbox"], dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ActionGenomeFormatError(f"'{path}', frame '{key}': 'bbox' must be a numeric (N, 4) xyxy array, got "
                                      f"{entry['bbox']!r:.80} ({e}).") from None
    try:
        size = tuple(int(v) for v in entry["bbox_size"])
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) <= 0:
        raise ActionGenomeFormatError(f"'{path}', frame '{key}': 'bbox_size' must be (width, height) in pixels, "
                                      f"got {entry['bbox_size']!r:.80}.")
    if bbox.size == 0:
        return np.zeros(0, np.float32), size
    if bbox.ndim != 2 or bbox.shape[1] != 4:
        raise ActionGenomeFormatError(f"'{path}', frame '{key}': 'bbox' must have shape (N, 4) xyxy, "
                                      f"got {bbox.shape}.")
    if not np.isfinite(bbox[0]).all():
        raise ActionGenomeFormatError(f"'{path}', frame '{key}': the person box {bbox[0].tolist()} holds NaN/Inf; "
                                      "every coordinate must be a finite number (re-download the annotation file).")
    return bbox[0], size


def _object_box_xyxy(obj: dict, key: str, index: int, path: str) -> np.ndarray:
    box = obj.get("bbox")
    if box is None:
        raise ActionGenomeFormatError(f"'{path}', frame '{key}', object {index} ('{obj.get('class')}'): visible "
                                      "object without 'bbox'; AG gives (x, y, w, h) for every visible object.")
    where = f"'{path}', frame '{key}', object {index} ('{obj.get('class')}')"
    try:
        values = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or values.size != 4:
        got = f"shape {values.shape}" if values is not None else repr(box)[:80]
        raise ActionGenomeFormatError(f"{where}: 'bbox' must be 4 numbers (x, y, w, h), got {got}.")
    x, y, w, h = (float(v) for v in values.reshape(4))
    if not np.isfinite([x, y, w, h]).all():
        raise ActionGenomeFormatError(f"{where}: 'bbox' {[x, y, w, h]} holds NaN/Inf; every coordinate must be a "
                                      "finite number (re-download the annotation file).")
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def _encode_relations(obj: dict, key: str, index: int, path: str, predicate_index: Dict[str, int],
                      object_row: int) -> List[List[int]]:
    rels = []
    for field, first in _GROUP_FIELDS:
        names = obj.get(field)
        if names is None or isinstance(names, str):
            raise ActionGenomeFormatError(f"'{path}', frame '{key}', object {index} ('{obj.get('class')}'): "
                                          f"'{field}' must be a list of predicate names, got {names!r}.")
        group = AG_PREDICATES[first:first + {0: 3, 3: 6, 9: 17}[first]]
        for name in names:
            if name not in group:
                raise ActionGenomeFormatError(
                    f"'{path}', frame '{key}', object {index}: unknown {field.split('_')[0]} predicate '{name}'. "
                    f"Valid: {', '.join(group)}."
                )
            pred = predicate_index[name]
            # AG convention: spatial relations are object -> person, the others person -> object.
            rels.append([object_row, 0, pred] if first == 3 else [0, object_row, pred])
    return rels


def _frame_split(objects, key: str, path: str) -> Optional[str]:
    if not isinstance(objects, list):
        raise ActionGenomeFormatError(f"'{path}', frame '{key}': expected a list of object dicts, "
                                      f"got {type(objects).__name__}.")
    if not objects:
        return None
    try:
        return objects[0]["metadata"]["set"]
    except (KeyError, TypeError):
        raise ActionGenomeFormatError(f"'{path}', frame '{key}': object 0 lacks metadata['set'] ('train' or "
                                      "'test').") from None


def _is_small(box_xyxy: np.ndarray, min_edge: float) -> bool:
    return min(box_xyxy[2] - box_xyxy[0], box_xyxy[3] - box_xyxy[1]) < min_edge


def _build_frame(key: str, person_box: np.ndarray, size, objects: list, *, root: str, obj_path: str,
                 filter_small_box: bool, min_box_edge: float, class_index: Dict[str, int],
                 predicate_index: Dict[str, int]) -> Optional[dict]:
    """One frame dict, or ``None`` when no (large enough) visible object remains."""
    boxes, labels, relations = [person_box], [0], []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict) or "visible" not in obj or "class" not in obj:
            raise ActionGenomeFormatError(f"'{obj_path}', frame '{key}', object {i}: expected a dict with 'class', "
                                          "'bbox', 'visible' and the three relationship lists.")
        if not obj["visible"]:
            continue
        box = _object_box_xyxy(obj, key, i, obj_path)
        if filter_small_box and _is_small(box, min_box_edge):
            continue
        if obj["class"] not in class_index or obj["class"] == "person":
            raise ActionGenomeFormatError(f"'{obj_path}', frame '{key}', object {i}: unknown object class "
                                          f"'{obj['class']}'. Valid: {', '.join(AG_OBJECT_CLASSES[1:])}.")
        relations.extend(_encode_relations(obj, key, i, obj_path, predicate_index, len(boxes)))
        boxes.append(box)
        labels.append(class_index[obj["class"]])
    if len(boxes) == 1:
        return None
    return {
        "file_name": os.path.join(root, "frames", key), "frame_key": key,
        "height": int(size[1]), "width": int(size[0]),
        "boxes": np.stack(boxes).astype(np.float32), "labels": np.asarray(labels, np.int64),
        "relations": np.asarray(relations, np.int64).reshape(-1, 3),
    }


def _frame_number(key: str) -> int:
    stem = os.path.splitext(key.split("/", 1)[1])[0]
    return int(stem) if stem.isdigit() else 0


def load_action_genome(root: str, split: str, *, datasize: str = "large", filter_small_box: bool = False,
                       min_box_edge: float = 16.0, mini_num_frames: int = 80000,
                       dataset_name: Optional[str] = None) -> List[dict]:
    """Read Action Genome under ``root`` and return one dict per video of ``split`` (``"train"`` / ``"test"``).

    Applies STTran's filters (module docstring). Frames of a video are ordered by frame number. Raises
    :class:`ActionGenomeFormatError` naming the file, the frame key and the field for malformed input, and
    ``pickle.UnpicklingError`` for pickles that reference anything but builtins and numpy arrays.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if datasize not in ("large", "mini"):
        raise ValueError(f"datasize must be 'large' or 'mini', got {datasize!r}.")
    ann = os.path.join(root, "annotations")
    if not os.path.isdir(ann):
        raise ActionGenomeFormatError(f"Action Genome annotations not found: '{ann}' is not a directory. Download the "
                                      "annotations (datasets/README_action_genome.md) or set DATASETS.AG.ROOT.")
    if not os.path.isdir(os.path.join(root, "frames")):
        raise ActionGenomeFormatError(f"Action Genome frames not found: '{os.path.join(root, 'frames')}'. Extract the "
                                      "frames with AG's tools/dump_frames.py (datasets/README_action_genome.md).")
    _read_class_file(os.path.join(ann, "object_classes.txt"), AG_OBJECT_CLASSES_TXT)
    _read_class_file(os.path.join(ann, "relationship_classes.txt"), AG_PREDICATES_TXT)
    person_path = os.path.join(ann, "person_bbox.pkl")
    obj_path = os.path.join(ann, "object_bbox_and_relationship.pkl")
    person_bbox, object_bbox = load_restricted_pickle(person_path), load_restricted_pickle(obj_path)
    for path, data in ((person_path, person_bbox), (obj_path, object_bbox)):
        if not isinstance(data, dict):
            raise ActionGenomeFormatError(f"'{path}' must hold a dict keyed by frame key ('VID.mp4/000123.png'), "
                                          f"got {type(data).__name__}.")
    keys = list(person_bbox)
    if datasize == "mini":
        keys = keys[:mini_num_frames]

    class_index = {c: i for i, c in enumerate(AG_OBJECT_CLASSES)}
    predicate_index = {p: i for i, p in enumerate(AG_PREDICATES)}
    videos: "OrderedDict[str, List[dict]]" = OrderedDict()
    stats = {"no_person_box": 0, "short_videos": 0}
    for key in keys:
        if key not in object_bbox:
            raise ActionGenomeFormatError(f"Frame '{key}' of '{person_path}' has no entry in '{obj_path}'; the two "
                                          "annotation files must cover the same frames.")
        objects = object_bbox[key]
        if _frame_split(objects, key, obj_path) != split:
            continue
        if "/" not in key:
            raise ActionGenomeFormatError(f"'{person_path}': frame key '{key}' is not 'VIDEO.mp4/NNNNNN.png'.")
        person_box, size = _person_box(person_bbox[key], key, person_path)
        frame = _build_frame(key, person_box if person_box.size else np.zeros(4, np.float32), size, objects,
                             root=root, obj_path=obj_path, filter_small_box=filter_small_box,
                             min_box_edge=min_box_edge, class_index=class_index, predicate_index=predicate_index)
        if frame is None:
            continue
        if person_box.size == 0:  # STTran: drop frames without a person box
            stats["no_person_box"] += 1
            continue
        videos.setdefault(key.split("/", 1)[0], []).append(frame)

    dicts = []
    for video, frames in videos.items():
        if len(frames) <= 2:
            stats["short_videos"] += 1
            continue
        frames.sort(key=lambda fr: _frame_number(fr["frame_key"]))
        dicts.append({"video_id": video[:-4] if video.endswith(".mp4") else video,
                      "dataset_name": dataset_name or f"ag_{split}", "frames": frames})
    logger.info("Action Genome %s (%s%s): %d videos, %d frames; dropped %d frames without a person box and %d videos "
                "with <= 2 frames.", split, datasize, ", small boxes filtered" if filter_small_box else "", len(dicts),
                sum(len(d["frames"]) for d in dicts), stats["no_person_box"], stats["short_videos"])
    return dicts


@functools.lru_cache(maxsize=4)
def _cached_load(root: str, split: str, datasize: str, filter_small_box: bool, min_box_edge: float,
                 mini_num_frames: int, dataset_name: str) -> Tuple[dict, ...]:
    # Real AG pickles take about a minute to read; the trainer, the test loader and the evaluator all ask for them.
    return tuple(load_action_genome(root, split, datasize=datasize, filter_small_box=filter_small_box,
                                    min_box_edge=min_box_edge, mini_num_frames=mini_num_frames,
                                    dataset_name=dataset_name))


def load_registered_action_genome(root: str, split: str, dataset_name: str) -> List[dict]:
    """The video dicts of ``split`` under ``root`` with the options in effect (cached: real AG pickles take about a
    minute to read, and the trainer, the test loader and the evaluator all ask for them)."""
    o = DatasetCatalog.options(AG_OPTIONS)
    cached = _cached_load(os.path.abspath(root), split, str(o["datasize"]), bool(o["filter_small_box"]),
                          float(o["min_box_edge"]), int(o["mini_num_frames"]), dataset_name)
    # Fresh video dicts each call (callers may add keys); the frame dicts are shared and must be treated read-only.
    return [dict(d) for d in cached]


def register_action_genome_split(name: str, split: str, root_fn: Callable[[], str]) -> None:
    """Register ``name`` as AG split ``split`` of the dataset at ``root_fn()`` (resolved at load time)."""
    DatasetCatalog.register(name, lambda: load_registered_action_genome(root_fn(), split, name),
                            option_group=AG_OPTIONS)
    MetadataCatalog.get(name).set(**get_action_genome_metadata())


# ---------------------------------------------------------------------------------------------------- catalogs
def get_action_genome_metadata() -> dict:
    """Metadata of every ``ag_*`` / ``demo_ag_*`` dataset."""
    return {
        "thing_classes": list(AG_OBJECT_CLASSES),
        "predicate_classes": list(AG_PREDICATES),
        "attention_predicates": list(AG_ATTENTION_PREDICATES),
        "spatial_predicates": list(AG_SPATIAL_PREDICATES),
        "contacting_predicates": list(AG_CONTACTING_PREDICATES),
        "evaluator_type": "video_scene_graph",
        "mapper": "ActionGenomeMapper",
    }


def register_action_genome() -> None:
    """Register ``ag_train`` and ``ag_test`` (the demo's ``demo_ag_*`` are registered by ``sgg.data.demo``)."""
    for split in ("train", "test"):
        register_action_genome_split(f"ag_{split}", split, action_genome_root)
