"""``SceneGraphMapper``: a scene-graph dataset dict -> the model input dict (decoded, augmented image + targets).

Input (see :func:`sgg.data.datasets.visual_genome.load_vg_dicts`): ``file_name, image_id, height, width, boxes,
labels, relations`` (+ ``dataset_type``/``loss_weight`` in multi-dataset training; + optionally ``image``, the
already decoded (H, W, 3) uint8 pixels in ``INPUT.FORMAT``, which :class:`sgg.engine.Predictor` passes instead of a
file). Output::

    image          uint8 tensor (3, H', W'), RGB (or BGR with INPUT.FORMAT BGR)
    height, width  the ORIGINAL image size (what predictions are rescaled to)
    image_id, file_name, dataset_name
    gt_boxes       float32 (N, 4) xyxy in the transformed image
    gt_classes     int64 (N,) 0-based
    gt_relations   int64 (R, 3) [subject, object, predicate], 0-based
    dataset_type   "real" / "synthetic" ("real" outside multi-dataset training)
    loss_weight    float (1.0 outside multi-dataset training)

Training also applies Scene-Graph-Benchmark's duplicate-relation filter (one random predicate per pair, redrawn each
time the image is seen), drops boxes the crop removed (and their relations), and on a horizontal flip swaps the
predicates of the dataset's ``flip_predicate_pairs`` ("left of" <-> "right of").
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from sgg.config import configurable
from sgg.utils.errors import FileReadError, MissingFileError, one_line

from .build import MAPPER_REGISTRY, multi_dataset_enabled
from .catalog import DatasetCatalog, MetadataCatalog
from .datasets.visual_genome import filter_duplicate_relations
from .transforms import Augmentation, apply_augmentations, build_scene_graph_augmentations, flips_horizontally

__all__ = ["SceneGraphMapper", "read_image", "predicate_flip_permutation"]

logger = logging.getLogger(__name__)


def read_image(file_name: str, image_format: str = "RGB") -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 in ``image_format`` ("RGB" or "BGR").

    Raises :class:`~sgg.utils.errors.MissingFileError` (a ``FileNotFoundError``) for a missing file and
    :class:`~sgg.utils.errors.FileReadError` (an ``OSError``) for a truncated or corrupt one, both naming the file.
    """
    try:
        with Image.open(file_name) as img:
            array = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise MissingFileError(
            f"Image '{file_name}' does not exist. Check the dataset's image folder (datasets/README.md; "
            f"`python datasets/prepare_vg.py --check <dir>`)."
        ) from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL: truncated data, unknown format, bad header
        raise FileReadError(f"Image '{file_name}' cannot be decoded ({one_line(e)}); the file is truncated or corrupt. "
                            "Re-download or re-extract it (`python datasets/prepare_vg.py --check <dir>` lists such "
                            "files).") from None
    if image_format == "BGR":
        array = array[:, :, ::-1]
    elif image_format != "RGB":
        raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got '{image_format}'.")
    return array


def predicate_flip_permutation(pairs: Sequence[Sequence[int]], num_predicates: int) -> np.ndarray:
    """Lookup table ``perm[p]`` = the predicate ``p`` becomes under a horizontal flip."""
    perm = np.arange(num_predicates, dtype=np.int64)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def _train_dataset_names(cfg) -> List[str]:
    """The registered datasets a training mapper will see (the multi-dataset lists when that mode is on)."""

    m = cfg.DATASETS.MULTI_DATASET
    names = list(m.REAL_DATASETS) + list(m.SYNTHETIC_DATASETS) if multi_dataset_enabled(cfg) else cfg.DATASETS.TRAIN
    return list(dict.fromkeys(n for n in names if n in DatasetCatalog))


@MAPPER_REGISTRY.register()
class SceneGraphMapper:
    """Map a scene-graph dataset dict to a model input dict (module docstring has the format)."""

    @configurable
    def __init__(self, *, is_train: bool, augmentations: Sequence[Augmentation],
                 crop_augmentations: Optional[Sequence[Augmentation]] = None, crop_prob: float = 0.5,
                 image_format: str = "RGB", filter_duplicate_rels: bool = True,
                 flip_predicate_pairs: Optional[Dict[str, List[List[int]]]] = None):
        """
        Args:
            augmentations: applied in order; with ``crop_augmentations``, these are inserted before the last one
                with probability ``crop_prob`` (DETR / SpeaQ's recipe).
            flip_predicate_pairs: dataset name -> predicate index pairs swapped on a horizontal flip; names not
                listed are looked up in ``MetadataCatalog`` (``flip_predicate_pairs``) when first seen.
        """
        self.is_train = bool(is_train)
        self.augmentations = list(augmentations)
        self.crop_augmentations = list(crop_augmentations) if crop_augmentations else None
        self.crop_prob = float(crop_prob)
        self.image_format = image_format
        self.filter_duplicate_rels = bool(filter_duplicate_rels)
        self._flip_pairs: Dict[str, List[List[int]]] = dict(flip_predicate_pairs or {})
        self._size_warned = False

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        main, crop = build_scene_graph_augmentations(cfg, is_train)
        # Resolved here, in the main process, so worker processes need no catalog state; only training flips.
        names = _train_dataset_names(cfg) if is_train else []
        flips = {name: MetadataCatalog.get(name).get("flip_predicate_pairs", []) or [] for name in names}
        return {"is_train": is_train, "augmentations": main, "crop_augmentations": crop,
                "crop_prob": cfg.INPUT.CROP.PROB, "image_format": cfg.INPUT.FORMAT,
                "filter_duplicate_rels": cfg.DATASETS.VG.FILTER_DUPLICATE_RELS, "flip_predicate_pairs": flips}

    def _pairs_for(self, dataset_name: str) -> List[List[int]]:
        if dataset_name not in self._flip_pairs:
            pairs = MetadataCatalog.get(dataset_name).get("flip_predicate_pairs", []) if dataset_name else []
            self._flip_pairs[dataset_name] = pairs or []
        return self._flip_pairs[dataset_name]

    def _augment(self, image: np.ndarray):
        augs = self.augmentations
        if self.is_train and self.crop_augmentations and np.random.rand() < self.crop_prob:
            augs = augs[:-1] + self.crop_augmentations + augs[-1:]
        return apply_augmentations(augs, image)

    def _check_size(self, image: np.ndarray, d: dict, boxes: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (h, w) == (d["height"], d["width"]):
            return boxes
        if not self._size_warned:
            logger.warning("Image '%s' is %dx%d but its annotation says %dx%d; rescaling its boxes (warned once).",
                           d["file_name"], w, h, d["width"], d["height"])
            self._size_warned = True
        return boxes * np.array([w / d["width"], h / d["height"]] * 2, dtype=np.float32)

    def __call__(self, dataset_dict: dict) -> dict:
        """Decode, augment and package one sample (see the module docstring)."""
        d = dataset_dict
        image = d["image"] if d.get("image") is not None else read_image(d["file_name"], self.image_format)
        boxes = self._check_size(image, d, np.asarray(d["boxes"], dtype=np.float32).reshape(-1, 4))
        labels = np.asarray(d["labels"], dtype=np.int64).reshape(-1)
        relations = np.asarray(d["relations"], dtype=np.int64).reshape(-1, 3)
        if self.is_train and self.filter_duplicate_rels:
            relations = filter_duplicate_relations(relations)

        image, transforms = self._augment(image)
        h, w = image.shape[:2]
        boxes = transforms.apply_box(boxes)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        if self.is_train:
            boxes, labels, relations = _drop_empty_boxes(boxes, labels, relations)
        if flips_horizontally(transforms) and len(relations):
            pairs = self._pairs_for(d.get("dataset_name", ""))
            if pairs:
                perm = predicate_flip_permutation(pairs, max(int(relations[:, 2].max()) + 1,
                                                             max(max(p) for p in pairs) + 1))
                relations = np.concatenate([relations[:, :2], perm[relations[:, 2:]]], axis=1)

        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "height": d["height"], "width": d["width"], "image_id": d["image_id"], "file_name": d["file_name"],
            "dataset_name": d.get("dataset_name", ""),
            "gt_boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "gt_classes": torch.from_numpy(np.ascontiguousarray(labels)),
            "gt_relations": torch.from_numpy(np.ascontiguousarray(relations)),
            "dataset_type": d.get("dataset_type", "real"), "loss_weight": float(d.get("loss_weight", 1.0)),
        }


def _drop_empty_boxes(boxes: np.ndarray, labels: np.ndarray, relations: np.ndarray):
    """Remove boxes a crop reduced to nothing, and the relations that used them (indices are renumbered)."""
    keep = ((boxes[:, 2] - boxes[:, 0]) > 1e-5) & ((boxes[:, 3] - boxes[:, 1]) > 1e-5)
    if keep.all():
        return boxes, labels, relations
    new_index = np.cumsum(keep) - 1
    rel_keep = keep[relations[:, 0]] & keep[relations[:, 1]]
    relations = relations[rel_keep]
    relations = np.stack([new_index[relations[:, 0]], new_index[relations[:, 1]], relations[:, 2]], axis=1)
    return boxes[keep], labels[keep], relations.reshape(-1, 3)
