"""Something-Something V2 for text-to-video: annotation loading and catalog registration.

Layout under the dataset root ``$SGG_DATASETS/ssv2`` (symlink the official files there, see datasets/README_ssv2.md)::

    labels.json        {"<template without brackets>": "<class id>", ...}     (174 templates in the real dataset)
    train.json         [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
                         "template": "Holding [something] next to [something]",
                         "placeholders": ["potato", "vicks vaporub bottle"]}, ...]
    validation.json    same fields
    videos/<id>.webm

Each dataset dict is ``{file_name, video_id, label, template, placeholders, label_id, caption}``; the caption is the
template with its ``[...]`` slots filled by the placeholders (e.g. "Holding potato next to vicks vaporub bottle").
Catalog names: ``ssv2_{train,validation}``, ``ssv2_validation_mini`` (first 256 validation clips) and
``demo_ssv2_{train,validation}`` (generated on first use).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Dict, List, Optional

from sgg.data.catalog import DatasetCatalog, MetadataCatalog, datasets_root
from sgg.utils.errors import DataFormatError, one_line

__all__ = ["load_ssv2_json", "fill_template", "register_ssv2", "register_all_ssv2", "SSV2_SPLITS", "REQUIRED_KEYS"]

logger = logging.getLogger(__name__)

SSV2_SPLITS = ("train", "validation")
REQUIRED_KEYS = ("id", "label", "template", "placeholders")
_SLOT = re.compile(r"\[[^\]]*\]")


def fill_template(template: str, placeholders: List[str]) -> Optional[str]:
    """Replace the ``[...]`` slots of ``template`` in order by ``placeholders``.

    A capitalised slot (``[Something]``) gets a capitalised placeholder. Returns ``None`` when the number of slots and
    placeholders differ (a few real annotations are like that; callers then fall back to the ``label`` text).
    """
    slots = _SLOT.findall(template)
    if len(slots) != len(placeholders):
        return None
    values = iter(placeholders)

    def _fill(match: re.Match) -> str:
        value = str(next(values))
        return value[:1].upper() + value[1:] if match.group(0)[1:2].isupper() else value

    return _SLOT.sub(_fill, template)


def _read_json(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"SSv2 {what} '{path}' not found. Expected the layout in datasets/README_ssv2.md under the dataset root "
            "($SGG_DATASETS/ssv2)."
        )
    with open(path) as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(f"SSv2 {what} '{path}' is not valid JSON: {one_line(e)}") from e


def _load_labels(root: str) -> Dict[str, int]:
    path = os.path.join(root, "labels.json")
    labels = _read_json(path, "labels file")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"SSv2 labels file '{path}' must map template text to a class id, "
                         f"got {type(labels).__name__}.")
    out = {}
    for template, idx in labels.items():
        try:
            if isinstance(idx, bool) or isinstance(idx, float) and not idx.is_integer():
                raise ValueError
            out[template] = int(idx)
        except (TypeError, ValueError):
            raise DataFormatError(f"SSv2 labels file '{path}': template {template!r} has class id {idx!r}, expected "
                                  "an integer (or a string of digits) as in the official labels.json.") from None
    return out


def _check_entry(entry, index: int, path: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"SSv2 annotation '{path}' entry {index} must be an object, got {type(entry).__name__}.")
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        raise KeyError(
            f"SSv2 annotation '{path}' entry {index} (id {entry.get('id', '?')!r}) lacks key(s) {missing}; every entry "
            f"needs {list(REQUIRED_KEYS)} as in the official train/validation json files."
        )


def load_ssv2_json(root: str, split: str, *, video_dir: str = "videos") -> List[dict]:
    """Read ``<root>/<split>.json`` (+ ``labels.json``) into dataset dicts (see the module docstring).

    Raises ``FileNotFoundError`` / ``KeyError`` / ``ValueError`` naming the file, the entry and what was expected.
    Video files are not opened here (decoding errors surface in the mapper, naming the file).
    """
    if split not in SSV2_SPLITS:
        raise ValueError(f"Unknown SSv2 split '{split}'; expected one of {SSV2_SPLITS} (the test split has no labels).")
    labels = _load_labels(root)
    path = os.path.join(root, f"{split}.json")
    entries = _read_json(path, f"{split} annotation file")
    if not isinstance(entries, list):
        raise ValueError(f"SSv2 annotation '{path}' must hold a list of clips, got {type(entries).__name__}.")
    dicts = []
    for i, entry in enumerate(entries):
        _check_entry(entry, i, path)
        # labels.json keys are the templates without the brackets of the per-clip "template" field.
        key = entry["template"].replace("[", "").replace("]", "")
        if key not in labels:
            raise KeyError(f"SSv2 annotation '{path}' entry {i}: template {entry['template']!r} is not in "
                           f"'{os.path.join(root, 'labels.json')}' (looked up as {key!r}).")
        caption = fill_template(entry["template"], list(entry["placeholders"])) or entry["label"]
        dicts.append({
            "file_name": os.path.join(root, video_dir, f"{entry['id']}.webm"),
            "video_id": str(entry["id"]),
            "label": entry["label"],
            "template": entry["template"],
            "placeholders": list(entry["placeholders"]),
            "label_id": labels[key],
            "caption": caption,
        })
    logger.info("Loaded %d SSv2 %s clips (%d templates) from %s", len(dicts), split, len(labels), root)
    return dicts


def register_ssv2(name: str, root_fn, split: str, *, prepare=None, limit: Optional[int] = None) -> None:
    """Register ``name`` reading ``split`` under ``root_fn()`` (resolved at load time so $SGG_DATASETS may change).

    ``prepare(root)`` runs first when given (the demo twin uses it to generate its files on first use); ``limit``
    keeps the first N clips (a fixed subset for periodic validation).
    """

    def _load() -> List[dict]:
        root = root_fn()
        if prepare is not None:
            prepare(root)
        dicts = load_ssv2_json(root, split)
        return dicts[:limit] if limit is not None else dicts

    DatasetCatalog.register(name, _load)
    MetadataCatalog.get(name).set(mapper="TextToVideoMapper", evaluator_type="video_generation", split=split,
                                  dataset_family="ssv2")


def register_all_ssv2() -> None:
    """Register ``ssv2_{train,validation}`` and ``ssv2_validation_mini`` (its first 256 clips: periodic validation of
    24 777 clips with sampling would take longer than training), reading ``$SGG_DATASETS/ssv2``; the demo's
    ``demo_ssv2_*`` are registered by ``sgg.data.demo``."""
    for split in SSV2_SPLITS:
        register_ssv2(f"ssv2_{split}", lambda: os.path.join(datasets_root(), "ssv2"), split)
    register_ssv2("ssv2_validation_mini", lambda: os.path.join(datasets_root(), "ssv2"), "validation", limit=256)
