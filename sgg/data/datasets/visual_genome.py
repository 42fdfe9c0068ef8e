"""Visual Genome (VG150) scene-graph data in the Scene-Graph-Benchmark h5 layout, vectorised with numpy.

One loader reads the real VG150 files, the synthetic genome (seed 002) and the generated demo sets, because they all
share the layout (DESIGN.md §3)::

    <root>/VG-SGG-with-attri.h5          labels, boxes_1024/boxes_512 [cx,cy,w,h], img_to_{first,last}_{box,rel},
                                         relationships (global box indices), predicates, split, attributes
    <root>/VG-SGG-dicts-with-attri.json  label_to_idx, predicate_to_idx, attribute_to_idx (1-based; 0 = background)
    <root>/image_data.json               [{width, height, image_id, url, coco_id, flickr_id}, ...]
    <root>/VG_100K/<image_id>.jpg

Decoding follows Scene-Graph-Benchmark's ``load_graphs`` + ``get_groundtruth`` exactly (same boxes, same filters), but
over whole arrays instead of a Python loop per image: only the final split into per-image dicts is a loop, and it
only slices views. Every class index returned is 0-based (labels 0..149, predicates 0..49, attributes 0..199 with
-1 for "no attribute").
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import itertools
import json
import logging
import operator
import os
import tempfile
import zipfile
from collections import abc
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from sgg.structures.boxes import paired_intersection
from sgg.utils.errors import SGGError

from ..catalog import DatasetCatalog, Metadata, MetadataCatalog, datasets_root

__all__ = [
    "VGFormatError", "VGFiles", "VG_H5_FILE", "VG_DICTS_FILE", "VG_IMAGE_DATA_FILE", "VG_IMAGE_DIR",
    "CORRUPTED_IMAGE_IDS", "NUM_VG_IMAGES", "load_vg_vocabulary", "load_vg_image_data", "read_vg_h5",
    "decode_vg_boxes", "select_split_images", "load_vg_dicts", "load_vg_graphs", "VGGraphs", "VGImageInfo",
    "read_vg_split", "VGSplitRows",
    "load_vg_image_info", "clear_vg_caches", "VGDatasetDicts", "image_info_cache_files",
    "remove_image_info_cache", "vg_predicate_frequencies",
    "filter_duplicate_relations", "LazyMetadata", "register_vg_format_dataset", "register_all_vg",
    "VG_OPTIONS", "vg_options_from_config", "vg_options",
]

logger = logging.getLogger(__name__)

VG_H5_FILE = "VG-SGG-with-attri.h5"
VG_DICTS_FILE = "VG-SGG-dicts-with-attri.json"
VG_IMAGE_DATA_FILE = "image_data.json"
VG_IMAGE_DIR = "VG_100K"
# Images listed in image_data.json that have no row in the h5 (Scene-Graph-Benchmark drops them the same way).
CORRUPTED_IMAGE_IDS = (1592, 1722, 4616, 4617)
NUM_VG_IMAGES = 108_073
SPLIT_FLAGS = {"train": 0, "val": 0, "test": 2}
HELP = "See datasets/README.md; `python datasets/prepare_vg.py --check <dir>` lists what is missing or wrong."


class VGFormatError(SGGError, ValueError):
    """A Visual-Genome-format file is missing, unreadable or inconsistent; the message names the file and key."""


@dataclass(frozen=True)
class VGFiles:
    """The four paths of a VG-format dataset rooted at ``root``."""

    root: str

    @property
    def h5(self) -> str:
        """``VG-SGG-with-attri.h5``."""
        return os.path.join(self.root, VG_H5_FILE)

    @property
    def dicts(self) -> str:
        """``VG-SGG-dicts-with-attri.json``."""
        return os.path.join(self.root, VG_DICTS_FILE)

    @property
    def image_data(self) -> str:
        """``image_data.json``."""
        return os.path.join(self.root, VG_IMAGE_DATA_FILE)

    @property
    def image_dir(self) -> str:
        """``VG_100K/``."""
        return os.path.join(self.root, VG_IMAGE_DIR)


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise VGFormatError(f"Missing {what}: '{path}' does not exist. {HELP}")


# ---------------------------------------------------------------------------- vocabulary / image list
def _names_by_index(mapping: dict, path: str, key: str) -> List[str]:
    """Names of a 1-based ``name -> index`` mapping, ordered by index; the indices must be exactly 1..K."""
    if not isinstance(mapping, dict) or not mapping:
        raise VGFormatError(f"'{path}': key '{key}' must be a non-empty mapping name -> 1-based index.")
    try:
        pairs = sorted((int(v), str(k)) for k, v in mapping.items())
    except (TypeError, ValueError) as e:
        raise VGFormatError(f"'{path}': key '{key}' holds a non-integer index ({e}).") from None
    indices = [i for i, _ in pairs]
    if indices != list(range(1, len(pairs) + 1)):
        raise VGFormatError(
            f"'{path}': key '{key}' must map names to the indices 1..{len(pairs)} (0 is background); "
            f"got indices {indices[:5]}...{indices[-3:]}."
        )
    return [name for _, name in pairs]


def load_vg_vocabulary(dicts_path: str) -> Dict[str, List[str]]:
    """Read ``VG-SGG-dicts-with-attri.json`` -> ``{thing_classes, predicate_classes, attribute_classes}`` (0-based)."""
    _require_file(dicts_path, "VG dictionary file")
    try:
        with open(dicts_path) as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise VGFormatError(f"'{dicts_path}' is not valid JSON ({e}). Re-download it. {HELP}") from None
    out = {}
    for key, field in (("label_to_idx", "thing_classes"), ("predicate_to_idx", "predicate_classes"),
                       ("attribute_to_idx", "attribute_classes")):
        if key not in info:
            raise VGFormatError(f"'{dicts_path}' has no key '{key}' (expected a name -> 1-based index mapping). {HELP}")
        out[field] = _names_by_index(info[key], dicts_path, key)
    return out


def _read_image_entries(path: str) -> list:
    """``image_data.json``'s entries without the 4 corrupted VG images (no count check)."""
    _require_file(path, "VG image list")
    try:
        with open(path) as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise VGFormatError(f"'{path}' is not valid JSON ({e}). {HELP}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise VGFormatError(f"'{path}' must hold a list of {{width, height, image_id, ...}} entries.")
    bad = set(CORRUPTED_IMAGE_IDS)
    return [e for e in entries if e.get("image_id") not in bad]


def _check_image_count(path: str, count: int, num_rows: int) -> None:
    if count != num_rows:
        raise VGFormatError(
            f"'{path}' lists {count} images (after dropping ids {list(CORRUPTED_IMAGE_IDS)}) but the h5 has "
            f"{num_rows} rows in 'split'; the two files must come from the same release (real VG150: "
            f"{NUM_VG_IMAGES}). {HELP}"
        )


def load_vg_image_data(path: str, num_rows: int) -> List[dict]:
    """Entries of ``image_data.json`` aligned with the h5 rows (the 4 corrupted VG images dropped).

    Raises :class:`VGFormatError` when, after dropping them, the count differs from the h5's ``num_rows``.
    """
    kept = _read_image_entries(path)
    _check_image_count(path, len(kept), num_rows)
    for key in ("width", "height", "image_id"):
        if kept and key not in kept[0]:
            raise VGFormatError(f"'{path}': entries have no key '{key}'.")
    return kept


@dataclass(frozen=True)
class VGImageInfo:
    """``image_data.json`` as arrays aligned with the h5 rows: ``image_ids``, ``widths``, ``heights`` (int64)."""

    image_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray


_INFO_FIELDS = (("image_ids", "image_id"), ("widths", "width"), ("heights", "height"))


def _parse_image_info(path: str) -> VGImageInfo:
    """Parse ``image_data.json`` into arrays: with msgspec, decoding only the three fields into typed records
    (~0.04 s for VG's 108 k entries); where that fails (not installed, malformed file, values that are not plain
    JSON integers), with the stdlib ``json`` (~0.15-0.4 s), which accepts what it always accepted and names the
    entry and key of an error."""
    info = _parse_image_info_typed(path)
    if info is not None:
        return info
    kept = _read_image_entries(path)
    columns = []
    for _, key in _INFO_FIELDS:
        try:
            columns.append(np.array([e[key] for e in kept], dtype=np.int64).reshape(-1))
        except KeyError:
            row = next(i for i, e in enumerate(kept) if key not in e)
            raise VGFormatError(f"'{path}': entry {row} (after dropping the corrupted ids) has no key '{key}'. "
                                f"{HELP}") from None
        except (TypeError, ValueError) as e:
            raise VGFormatError(f"'{path}': key '{key}' must hold integers in every entry ({e}). {HELP}") from None
    return VGImageInfo(*columns)


@functools.lru_cache(maxsize=1)
def _image_entry_decoder():
    """msgspec's decoder of ``image_data.json`` as a list of (image_id, width, height) records, or None."""
    try:
        import msgspec
    except ImportError:
        return None

    class Entry(msgspec.Struct, gc=False):  # other keys (url, coco_id, ...) are skipped, not built
        image_id: int
        width: int
        height: int

    return msgspec.json.Decoder(List[Entry])


def _parse_image_info_typed(path: str) -> Optional[VGImageInfo]:
    """The fast path of :func:`_parse_image_info`: None where it cannot decode the file exactly as required (a JSON
    list of objects, each with integer ``image_id``, ``width`` and ``height``; duplicate keys: the last wins, as with
    ``json``)."""
    decoder = _image_entry_decoder()
    if decoder is None:
        return None
    import msgspec

    with open(path, "rb") as f:
        data = f.read()
    try:
        entries = decoder.decode(data)
        columns = [np.fromiter(map(operator.attrgetter(key), entries), dtype=np.int64, count=len(entries))
                   for _, key in _INFO_FIELDS]
    except (msgspec.DecodeError, OverflowError):  # (ValidationError is a DecodeError)
        return None
    keep = ~np.isin(columns[0], CORRUPTED_IMAGE_IDS)
    return VGImageInfo(*(c[keep] for c in columns))


# ---------------------------------------------------------------------------- image_data.json cache on disk
# The parsed image list is the only input worth caching (the h5 reads at memory speed): a 2.6 MB .npz loads in ~1 ms
# where json needs 0.1-0.4 s. It is keyed like Python's .pyc files (source size + mtime) and written atomically.
_IMAGE_INFO_CACHE_VERSION = 1


def image_info_cache_files(path: str) -> List[str]:
    """Where the parsed ``image_data.json`` at ``path`` is cached, in the order tried: ``$SGG_CACHE/vg_image_data/``
    only, when that variable is set; else a hidden ``.npz`` beside the file, then (for a dataset directory that is
    not writable) ``$XDG_CACHE_HOME/sgg/vg_image_data/`` (default ``~/.cache/sgg/...``). Files in a cache directory
    are named by the hash of the path."""
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    in_cache_dir = os.path.join("vg_image_data", f"{name}.{digest}.npz")
    if os.environ.get("SGG_CACHE"):
        return [os.path.join(os.environ["SGG_CACHE"], in_cache_dir)]
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(folder, f".{name}.sgg-cache.npz"), os.path.join(user_cache, "sgg", in_cache_dir)]


def _image_info_cache_key(stat: os.stat_result) -> List[int]:
    return [_IMAGE_INFO_CACHE_VERSION, int(stat.st_size), int(stat.st_mtime_ns)]


def _read_image_info_cache(path: str, key: List[int]) -> Optional[VGImageInfo]:
    """The cached arrays of ``path`` if a cache file matches ``key``; unreadable or stale files are ignored."""
    for cache in image_info_cache_files(path):
        try:
            with np.load(cache, allow_pickle=False) as z:
                if z["key"].tolist() != key:
                    continue
                columns = [z[field] for field, _ in _INFO_FIELDS]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue  # absent, or damaged by something else: parse again (and rewrite it)
        if all(c.dtype == np.int64 and c.shape == columns[0].shape and c.ndim == 1 for c in columns):
            return VGImageInfo(*columns)
    return None


def _write_image_info_cache(path: str, key: List[int], info: VGImageInfo) -> Optional[str]:
    """Write the cache to the first location that accepts it (temporary file + rename, so a reader or a concurrent
    writer never sees a partial file); returns the path written, or None (loading then simply parses again)."""
    for cache in image_info_cache_files(path):
        tmp = None
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache), prefix=os.path.basename(cache) + ".", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, key=np.array(key, dtype=np.int64),
                         **{field: getattr(info, field) for field, _ in _INFO_FIELDS})
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users of a shared dataset
            os.replace(tmp, cache)
            return cache
        except OSError as e:  # read-only dataset directory, full disk ...: try the next location
            logger.debug("Cannot cache the parsed '%s' at '%s': %s", path, cache, e)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    logger.info("Could not cache the parsed '%s' (tried %s); it will be parsed again next time.", path,
                ", ".join(image_info_cache_files(path)))
    return None


_IMAGE_INFO_CACHE: Dict[tuple, VGImageInfo] = {}


def load_vg_image_info(path: str, num_rows: int) -> VGImageInfo:
    """:func:`load_vg_image_data` as arrays, parsed once per file version: cached in the process (train/val/test share
    it) and on disk (:func:`image_info_cache_files`), both keyed by the file's size and mtime, so an edited file is
    parsed again."""
    _require_file(path, "VG image list")
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    info = _IMAGE_INFO_CACHE.get(key)
    if info is None:
        disk_key = _image_info_cache_key(stat)
        info = _read_image_info_cache(path, disk_key)
        if info is None:
            info = _parse_image_info(path)
            _write_image_info_cache(path, disk_key, info)
        _IMAGE_INFO_CACHE.clear()  # keep one file's worth: the cache is for split after split of the same file
        _IMAGE_INFO_CACHE[key] = info
    _check_image_count(path, len(info.image_ids), num_rows)
    return info


def clear_vg_caches(*, disk: bool = False) -> None:
    """Forget parsed ``image_data.json`` files in this process; ``disk=True`` also deletes their on-disk caches
    (benchmarks use it to time a first use)."""
    if disk:
        for path, *_ in list(_IMAGE_INFO_CACHE):
            remove_image_info_cache(path)
    _IMAGE_INFO_CACHE.clear()


def remove_image_info_cache(path: str) -> None:
    """Delete the on-disk caches of the ``image_data.json`` at ``path`` (if any)."""
    for cache in image_info_cache_files(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cache)


# ---------------------------------------------------------------------------- h5
_PER_IMAGE_KEYS = ("split", "img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel")


def read_vg_h5(h5_path: str, box_scale: int = 1024, keys: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Read the arrays of a VG h5 (``keys``; default: everything the loader needs) and check their shapes.

    Returns numpy arrays; ``labels``/``predicates`` are flattened to 1-D. Raises :class:`VGFormatError` naming the file
    and key on a missing file, an unreadable (e.g. truncated) file, a missing key or an inconsistent shape.
    """
    return _read_h5(h5_path, box_scale, keys, mapped=())


# Box- and relation-row arrays: the loader maps them from the file and gathers only the split's rows.
_MAPPED_KEYS = frozenset(("labels", "attributes", "relationships", "predicates", "boxes_512", "boxes_1024"))


def _read_h5(h5_path: str, box_scale: int, keys: Optional[Sequence[str]], mapped) -> Dict[str, np.ndarray]:
    """:func:`read_vg_h5`, except that the datasets named in ``mapped`` come back as read-only views of the file
    mapped in memory where their storage allows it (:func:`_map_dataset`), so that a split reads only its own rows
    (the pages it touches) instead of a fresh copy of every row (for VG150: 90 MB of attributes)."""
    import h5py

    _require_file(h5_path, "VG annotation h5")
    box_key = f"boxes_{box_scale}"
    if keys is None:
        keys = _PER_IMAGE_KEYS + ("labels", box_key, "relationships", "predicates", "attributes")
    try:
        f = h5py.File(h5_path, "r")
    except OSError as e:
        raise VGFormatError(
            f"'{h5_path}' is not a readable HDF5 file (truncated or corrupt download?): {e}. Re-download it. {HELP}"
        ) from None
    arrays = {}
    file_map = _FileMap(h5_path)
    with f, file_map:
        for key in keys:
            if key not in f:
                raise VGFormatError(
                    f"'{h5_path}' has no key '{key}' (present: {', '.join(sorted(f.keys()))}). "
                    f"{'Set DATASETS.VG.BOX_SCALE to a scale present in the file. ' if key == box_key else ''}{HELP}"
                )
            try:
                view = _map_dataset(f, f[key], file_map) if key in mapped else None
                arrays[key] = f[key][()] if view is None else view
            except OSError as e:
                raise VGFormatError(f"'{h5_path}': key '{key}' cannot be read (truncated file?): {e}. {HELP}") from None
    _check_shapes(arrays, h5_path, box_key)
    for key in ("labels", "predicates"):
        if key in arrays:
            arrays[key] = arrays[key].reshape(-1)
    return arrays


class _FileMap:
    """The whole file mapped read-only in memory, on first use (a context manager: leaving it drops this object's
    reference; the views made from the map keep it alive as long as they live)."""

    def __init__(self, path: str):
        self.path, self.map, self.size = path, None, 0

    def get(self):
        """The ``mmap`` of the file (its size is ``self.size``)."""
        if self.map is None:
            import mmap

            with open(self.path, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self.map

    def __enter__(self) -> "_FileMap":
        return self

    def __exit__(self, *exc) -> None:
        self.map = None


def _map_dataset(f, dset, file_map: _FileMap) -> Optional[np.ndarray]:
    """A read-only view of the h5 dataset ``dset`` in the mapped file, or None where its storage is not one plain
    block of the file (chunked, compressed, compact, external or virtual datasets, a user block, non-numeric types,
    a file that cannot be mapped): those are read through h5py. The view's first and last rows are checked against
    h5py's own reads, and a block that runs past the end of the file (a truncated download) is an error."""
    import h5py

    if (dset.dtype.kind not in "iuf" or dset.size == 0 or f.userblock_size
            or dset.id.get_create_plist().get_layout() != h5py.h5d.CONTIGUOUS):
        return None
    offset = dset.id.get_offset()
    if offset is None:
        return None
    try:
        buffer = file_map.get()
    except (OSError, ValueError):  # a file system without mmap ...: read it instead
        return None
    if offset + dset.size * dset.dtype.itemsize > file_map.size:
        raise OSError(f"its data (bytes {offset}..{offset + dset.nbytes}) runs past the end of the "
                      f"{file_map.size}-byte file")
    view = np.frombuffer(buffer, dtype=dset.dtype, count=dset.size, offset=offset).reshape(dset.shape)
    if not (np.array_equal(view[:1], dset[:1]) and np.array_equal(view[-1:], dset[-1:])):
        return None  # not laid out as assumed: never trust the mapping then
    return view


def _check_shapes(arrays: Dict[str, np.ndarray], path: str, box_key: str) -> None:
    def fail(key, expected):
        raise VGFormatError(f"'{path}': key '{key}' has shape {arrays[key].shape}, expected {expected}. {HELP}")

    n_img = arrays["split"].shape[0] if "split" in arrays else None
    for key in _PER_IMAGE_KEYS:
        if key in arrays and (arrays[key].ndim != 1 or arrays[key].shape[0] != n_img):
            fail(key, f"({n_img},) like 'split'")
    n_obj = arrays["labels"].shape[0] if "labels" in arrays else None
    if "labels" in arrays and arrays["labels"].ndim == 2 and arrays["labels"].shape[1] != 1:
        fail("labels", "(N_obj, 1)")
    if box_key in arrays and arrays[box_key].shape != (n_obj, 4):
        fail(box_key, f"({n_obj}, 4) [cx, cy, w, h]")
    if "attributes" in arrays and (arrays["attributes"].ndim != 2 or arrays["attributes"].shape[0] != n_obj):
        fail("attributes", f"({n_obj}, 10)")
    if "relationships" in arrays:
        n_rel = arrays["relationships"].shape[0]
        if arrays["relationships"].shape != (n_rel, 2):
            fail("relationships", "(N_rel, 2) global box indices")
        if "predicates" in arrays and arrays["predicates"].reshape(-1).shape[0] != n_rel:
            fail("predicates", f"({n_rel}, 1) like 'relationships'")


def decode_vg_boxes(boxes_cxcywh: np.ndarray) -> np.ndarray:
    """``[cx, cy, w, h]`` integer boxes of the h5 -> ``[x1, y1, x2, y2]`` in the same (box-scale) frame, float64.

    Scene-Graph-Benchmark converts in place on the int32 array, so x1 = trunc(cx - w / 2) and x2 = x1 + w; reproduced
    here so that boxes (and thus IoU-based metrics) match the reference to the pixel.
    """
    return np.ascontiguousarray(_decoded_columns(boxes_cxcywh).T)


def _decoded_columns(boxes_cxcywh: np.ndarray) -> np.ndarray:
    """:func:`decode_vg_boxes` as (4, N) rows x1, y1, x2, y2 (float64), computed in place on contiguous rows: one
    vectorised pass per numpy call, where on the (N, 2) column pairs of an (N, 4) array numpy loops over rows of 2
    (~5x slower). Integers go through float64 as in SGB (``boxes[:, :2] - boxes[:, 2:] / 2`` is float64 there too,
    truncated when stored back into the int32 array); floats keep their own precision."""
    b = np.asarray(boxes_cxcywh).reshape(-1, 4)
    c = b.T.astype(np.float64 if np.issubdtype(b.dtype, np.integer) else b.dtype, order="C")
    np.subtract(c[:2], c[2:] / 2, out=c[:2])
    np.trunc(c[:2], out=c[:2])  # x1, y1
    c[2:] += c[:2]  # x2, y2 = x1 + w, y1 + h
    return c.astype(np.float64, copy=False)


def select_split_images(split_flags: np.ndarray, first_box: np.ndarray, first_rel: np.ndarray, split: str, *,
                        num_val_images: int, filter_empty_rels: bool, num_images: int = -1) -> np.ndarray:
    """h5 row indices of ``split`` ("train"/"val"/"test") after the standard filters (DESIGN.md §3).

    Images without boxes are always dropped, images without relations when ``filter_empty_rels``; "val" is the first
    ``num_val_images`` remaining train images and "train" the rest.
    """
    if split not in SPLIT_FLAGS:
        raise ValueError(f"Unknown VG split '{split}'; expected one of {sorted(SPLIT_FLAGS)}.")
    mask = (split_flags == SPLIT_FLAGS[split]) & (first_box >= 0)
    if filter_empty_rels:
        mask &= first_rel >= 0
    index = np.flatnonzero(mask)
    if num_images > -1:
        index = index[:num_images]
    if num_val_images > 0 and split == "val":
        index = index[:num_val_images]
    elif num_val_images > 0 and split == "train":
        index = index[num_val_images:]
    return index


def _concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concat([arange(s, s + c) for s, c in zip(starts, counts)])`` without a Python loop."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    shift = np.repeat(starts.astype(np.int64) - (ends - counts), counts)
    return np.arange(total, dtype=np.int64) + shift


def _check_range(values: np.ndarray, low: int, high: int, path: str, key: str, what: str) -> None:
    """Raise :class:`VGFormatError` unless every value lies in [low, high]. For int64 one unsigned-max pass checks
    both bounds (values below ``low`` wrap to huge ones)."""
    if not values.size:
        return
    if values.dtype == np.int64:
        outside = int((values - low if low else values).view(np.uint64).max()) > high - low
    else:
        outside = values.min() < low or values.max() > high
    if outside:
        bad = values[(values < low) | (values > high)]
        raise VGFormatError(
            f"'{path}': key '{key}' holds {bad.size} value(s) outside [{low}, {high}] ({what}), "
            f"e.g. {bad[:3].tolist()}. The h5 and the dictionary JSON must come from the same release. {HELP}"
        )


def _slice_rows(array: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> List[np.ndarray]:
    """Views ``array[start:start + count]``, one per image (``map`` keeps the per-image work in C: ~5x ``np.split``;
    each slice object is freed as soon as used, so that 60 k of them alive at once do not set off the garbage
    collector, which would double the time)."""
    starts = np.asarray(starts, dtype=np.int64)
    return list(map(array.__getitem__, map(slice, starts.tolist(), (starts + counts).tolist())))


def _split_by_counts(array: np.ndarray, counts: np.ndarray) -> List[np.ndarray]:
    """Per-image views of a concatenated array."""
    ends = np.cumsum(counts)
    return _slice_rows(array, ends - counts, counts)


def _check_boxes(raw: np.ndarray, path: str, box_key: str) -> None:
    """Every box has w, h > 0 and a centre >= 0. One contiguous pass settles it when every value is >= 1 (the usual
    case); otherwise each column is checked on its own (a 1-D strided pass is ~10x faster than a reduction over
    ``raw[:, 2:]``)."""
    if not raw.size or raw.min() >= 1:
        return
    if min(raw[:, 2].min(), raw[:, 3].min()) <= 0 or min(raw[:, 0].min(), raw[:, 1].min()) < 0:
        raise VGFormatError(f"'{path}': key '{box_key}' holds boxes with w/h <= 0 or a negative centre. {HELP}")


@dataclass
class VGSplitRows:
    """One split of a VG h5, checked but not yet decoded: the columnar store behind :class:`VGDatasetDicts`.

    ``index`` (I,) h5 rows of the kept images; ``n_boxes``/``n_rels`` (I,) per-image counts; the box-row arrays
    ``raw_boxes`` (B, 4) [cx, cy, w, h] in the box-scale frame, ``labels`` (B,) int64 0-based and ``attributes``
    (B, 10) int64 0-based (-1 = none) hold the split's rows, gathered from the file image after image; image i owns
    rows ``box_start[i]:box_start[i] + n_boxes[i]`` (``box_start`` is the running sum of ``n_boxes`` unless
    :func:`_drop_non_overlapping` left the rows of dropped images in place). The dataset dicts' labels and
    attributes are views of them. ``relations`` (sum n_rels, 3) are final too: [local subject, local object, 0-based
    predicate].
    """

    index: np.ndarray
    n_boxes: np.ndarray
    n_rels: np.ndarray
    box_start: np.ndarray
    raw_boxes: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray
    relations: np.ndarray
    num_rows: int = 0  # images in the whole h5 (image_data.json must list as many)

    def box_rows(self) -> np.ndarray:
        """Rows of the box-row arrays that belong to the kept images, image after image."""
        return _concat_ranges(self.box_start, self.n_boxes)

    def compact(self) -> "VGSplitRows":
        """The same split without the rows of dropped images in the box-row arrays (for pickling); ``self`` when it
        has none."""
        if int(self.n_boxes.sum()) == len(self.labels):
            return self
        rows = self.box_rows()
        return dataclasses.replace(self, raw_boxes=np.take(self.raw_boxes, rows, axis=0), labels=self.labels[rows],
                                   attributes=np.take(self.attributes, rows, axis=0),
                                   box_start=np.cumsum(self.n_boxes) - self.n_boxes)


@dataclass
class VGGraphs:
    """One split's scene graphs as decoded arrays (what SGB's ``load_graphs`` returns, vectorised).

    ``index``, ``n_boxes``, ``n_rels``, ``relations`` and ``box_start`` as in :class:`VGSplitRows`; ``boxes``
    (sum n_boxes, 4) float64 xyxy in the box-scale frame; ``labels`` and ``attributes`` (N, 10) are 0-based (-1 = no
    attribute), the box-row arrays of :class:`VGSplitRows` (image i owns rows ``box_start[i]:box_start[i] +
    n_boxes[i]``).
    """

    index: np.ndarray
    n_boxes: np.ndarray
    n_rels: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray
    relations: np.ndarray
    num_rows: int = 0  # images in the whole h5
    box_start: Optional[np.ndarray] = None  # (I,) first row of each image in labels/attributes

    def per_image(self, key: str) -> List[np.ndarray]:
        """Per-image views of ``boxes``/``labels``/``attributes`` (``n_boxes`` rows each) or ``relations``."""
        if key in ("labels", "attributes"):
            return _slice_rows(getattr(self, key), self.box_start, self.n_boxes)
        return _split_by_counts(getattr(self, key), self.n_rels if key == "relations" else self.n_boxes)


def read_vg_split(h5_path: str, split: str, *, box_scale: int = 1024, num_val_images: int = 5000,
                  filter_empty_rels: bool = True, filter_non_overlap: bool = False, num_images: int = -1,
                  num_classes: int, num_predicates: int, num_attributes: int) -> VGSplitRows:
    """Read and check one split of a VG h5 with whole-array numpy operations (what SGB's ``load_graphs`` does in a
    loop over images), leaving the per-image box decoding to the consumer. The per-image arrays are read whole; of
    the box and relation arrays only the split's rows are read (gathered from the file mapped in memory where its
    layout allows, see :func:`_map_dataset`). Raises :class:`VGFormatError` naming the file and key on any
    inconsistency in the split's rows."""
    if filter_non_overlap and split != "train":
        raise ValueError(f"filter_non_overlap applies to the train split only (got split '{split}').")
    h5 = h5_path
    box_key = f"boxes_{box_scale}"
    a = _read_h5(h5, box_scale, None, mapped=_MAPPED_KEYS)
    n_obj, n_rel = a["labels"].shape[0], a["relationships"].shape[0]
    index = select_split_images(a["split"], a["img_to_first_box"], a["img_to_first_rel"], split,
                                num_val_images=num_val_images, filter_empty_rels=filter_empty_rels,
                                num_images=num_images)
    first_box = a["img_to_first_box"][index].astype(np.int64, copy=False)
    last_box = a["img_to_last_box"][index].astype(np.int64, copy=False)
    first_rel = a["img_to_first_rel"][index].astype(np.int64, copy=False)
    last_rel = a["img_to_last_rel"][index].astype(np.int64, copy=False)
    n_boxes = last_box - first_box + 1
    has_rel = first_rel >= 0
    n_rels = np.where(has_rel, last_rel - first_rel + 1, 0)
    _check_range(first_box, 0, n_obj - 1, h5, "img_to_first_box", f"box rows 0..{n_obj - 1}")
    _check_range(last_box, 0, n_obj - 1, h5, "img_to_last_box", f"box rows 0..{n_obj - 1}")
    _check_range(n_boxes, 1, n_obj, h5, "img_to_last_box", "must be >= img_to_first_box")
    _check_range(first_rel[has_rel], 0, n_rel - 1, h5, "img_to_first_rel", f"relation rows 0..{n_rel - 1}")
    _check_range(last_rel[has_rel], 0, n_rel - 1, h5, "img_to_last_rel", f"relation rows 0..{n_rel - 1}")
    _check_range(n_rels[has_rel], 1, n_rel, h5, "img_to_last_rel", "must be >= img_to_first_rel")

    # The split's box rows, image after image (np.take on rows of 2-D arrays: ~9x faster than fancy indexing on
    # numpy 2). The gathers are fresh arrays, so the in-place shifts below never touch the file's data.
    box_rows = _concat_ranges(first_box, n_boxes)
    labels = a["labels"].take(box_rows).astype(np.int64, copy=False)
    _check_range(labels, 1, num_classes, h5, "labels", f"1-based object classes 1..{num_classes}")
    raw_boxes = np.take(a[box_key], box_rows, axis=0)
    _check_boxes(raw_boxes, h5, box_key)
    attributes = np.take(a["attributes"], box_rows, axis=0).astype(np.int64, copy=False)
    _check_range(attributes, 0, num_attributes, h5, "attributes", f"0 = none, else 1..{num_attributes}")
    relations = _split_relations(a, first_box, n_boxes, first_rel, n_rels, h5, num_predicates)
    labels -= 1  # 0-based
    attributes -= 1
    rows = VGSplitRows(index, n_boxes, n_rels, np.cumsum(n_boxes) - n_boxes, raw_boxes, labels, attributes,
                       relations, num_rows=len(a["split"]))
    return _drop_non_overlapping(rows) if filter_non_overlap else rows


def _split_relations(a: Dict[str, np.ndarray], first_box: np.ndarray, n_boxes: np.ndarray, first_rel: np.ndarray,
                     n_rels: np.ndarray, h5: str, num_predicates: int):
    """The split's relations as (R, 3) [local subject, local object, 0-based predicate]."""
    rel_rows = _concat_ranges(first_rel, n_rels)
    predicates = a["predicates"][rel_rows]
    _check_range(predicates, 1, num_predicates, h5, "predicates", f"1-based predicates 1..{num_predicates}")
    # Global -> image-local object indices, written column by column into the final (R, 3) array (1-D passes: numpy
    # loops over rows of 2 when it broadcasts over an (R, 2) array). Every relation must point inside its own image's
    # box range (one unsigned comparison per index: a negative one wraps to a huge value).
    pairs = np.take(a["relationships"], rel_rows, axis=0).astype(np.int64, copy=False)
    first = np.repeat(first_box, n_rels)
    relations = np.empty((len(rel_rows), 3), dtype=np.int64)
    for column in (0, 1):
        np.subtract(pairs[:, column], first, out=relations[:, column])
    np.subtract(predicates, 1, out=relations[:, 2])
    outside = np.maximum(relations[:, 0].view(np.uint64), relations[:, 1].view(np.uint64)) >= \
        np.repeat(n_boxes, n_rels).view(np.uint64)
    if outside.any():
        bad = np.flatnonzero(outside)
        row = int(rel_rows[bad[0]])
        raise VGFormatError(
            f"'{h5}': key 'relationships' row {row} = {a['relationships'][row].tolist()} points outside its image's "
            f"boxes (img_to_first_box..img_to_last_box); {len(bad)} such relation(s). {HELP}"
        )
    return relations


def _drop_non_overlapping(s: VGSplitRows) -> VGSplitRows:
    """SGB's ``filter_non_overlap``: keep relations whose two boxes intersect (+1-pixel convention, box-scale frame),
    then drop the images left without a relation (their boxes stay in the box-row arrays, unreferenced)."""
    rel_image = np.repeat(np.arange(len(s.index)), s.n_rels)
    ends = s.box_start[rel_image, None] + s.relations[:, :2]  # box-row array rows of subject and object
    pair = decode_vg_boxes(np.take(s.raw_boxes, ends.reshape(-1), axis=0)).reshape(-1, 2, 4)
    overlap = paired_intersection(pair[:, 0], pair[:, 1], plus_one=True) > 0
    n_rels = np.bincount(rel_image[overlap], minlength=len(s.index))
    keep = n_rels > 0
    return dataclasses.replace(s, index=s.index[keep], n_boxes=s.n_boxes[keep], n_rels=n_rels[keep],
                               box_start=s.box_start[keep], relations=s.relations[overlap])


def load_vg_graphs(h5_path: str, split: str, *, box_scale: int = 1024, num_val_images: int = 5000,
                   filter_empty_rels: bool = True, filter_non_overlap: bool = False, num_images: int = -1,
                   num_classes: int, num_predicates: int, num_attributes: int) -> VGGraphs:
    """:func:`read_vg_split` decoded like SGB's ``load_graphs``: boxes [x1, y1, x2, y2] in the box-scale frame, 0-based
    labels and attributes."""
    s = read_vg_split(h5_path, split, box_scale=box_scale, num_val_images=num_val_images,
                      filter_empty_rels=filter_empty_rels, filter_non_overlap=filter_non_overlap,
                      num_images=num_images, num_classes=num_classes, num_predicates=num_predicates,
                      num_attributes=num_attributes).compact()
    boxes = decode_vg_boxes(s.raw_boxes)
    return VGGraphs(s.index, s.n_boxes, s.n_rels, boxes, s.labels, s.attributes, s.relations, num_rows=s.num_rows,
                    box_start=s.box_start)


def _pixel_boxes(raw: np.ndarray, widths: np.ndarray, heights: np.ndarray, counts: np.ndarray,
                 box_scale: int) -> np.ndarray:
    """h5 boxes of consecutive images (``counts[i]`` rows of size ``widths[i]`` x ``heights[i]``) -> (N, 4) float32
    xyxy in image pixels, as SGB's ``get_groundtruth``: decode, scale by max(W, H) / box_scale, clip to [0, W-1] x
    [0, H-1]. Computed on (4, N) rows in float64 and rounded to float32 on output: the same values as SGB's
    clip + astype."""
    boxes = _decoded_columns(raw)
    boxes *= np.repeat(np.maximum(widths, heights) / box_scale, counts)
    np.maximum(boxes, 0, out=boxes)
    limits = np.repeat(np.stack((widths - 1, heights - 1)).astype(np.float64), counts, axis=1)  # rows W-1, H-1
    out = np.empty((len(raw), 4), dtype=np.float32)
    np.minimum(boxes[:2], limits, out=out.T[:2])
    np.minimum(boxes[2:], limits, out=out.T[2:])
    return out


def _pixel_boxes_one(raw: np.ndarray, scale: float, limits: list) -> np.ndarray:
    """:func:`_pixel_boxes` for one image's few boxes, with fewer numpy calls (each costs 1-2 us at this size);
    the same float64 arithmetic as decode_vg_boxes."""
    b = raw.astype(np.float64)
    x1y1 = np.trunc(b[:, :2] - 0.5 * b[:, 2:])
    boxes = np.concatenate((x1y1, x1y1 + b[:, 2:]), axis=1)
    boxes *= scale
    np.maximum(boxes, 0, out=boxes)
    return np.minimum(boxes, limits, out=np.empty(boxes.shape, dtype=np.float32))


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building many acyclic objects at once: otherwise their allocation
    triggers collections that rescan every object of the process (~40 % of the time to build 60 k dicts)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_ARRAY_KEYS = ("boxes", "labels", "relations", "attributes")
_DICT_KEYS = ("file_name", "image_id", "height", "width") + _ARRAY_KEYS
_CHUNK = 4096  # dicts built per vectorised step when iterating


class VGDatasetDicts(abc.Sequence):
    """One split's dataset dicts (what :func:`load_vg_dicts` returns), each built on first access from the split's
    checked columnar arrays (:class:`VGSplitRows`) and then kept.

    It stands in for the ``list[dict]`` of a Detectron2 loader: ``len``, indexing (negative too), slices (-> list),
    iteration and ``+`` (-> list) behave as with the list, and changes made to a dict persist. What it saves is the
    per-image work at load time (a dict, four arrays and the box scaling for each of ~60 k images cost as much as
    reading and checking the whole h5), which a training run spreads over the images its sampler draws, as
    Scene-Graph-Benchmark's ``__getitem__`` does. Iteration and slices build dicts in vectorised chunks; pickling
    (spawned DataLoader workers) sends the split's rows only, not the whole-file label/attribute arrays.

    :meth:`set_fields` and :meth:`field_values` are the column-wise forms of ``for d in dicts: d.update(fields)`` (or
    ``d.setdefault``) and ``[d.get(key, default) for d in dicts]``; the data loader tags datasets with them without
    building every dict. Two threads building the same index at once may both build it; the first stored is kept.
    """

    def __init__(self, rows: VGSplitRows, image_ids: np.ndarray, heights: np.ndarray, widths: np.ndarray, *,
                 image_prefix: str, box_scale: int, fields: Optional[dict] = None,
                 built: Optional[Dict[int, dict]] = None):
        self._rows = rows = rows.compact()  # box rows of consecutive images are consecutive
        self._image_ids, self._heights, self._widths = image_ids, heights, widths
        self._prefix, self._box_scale = image_prefix, box_scale
        self._fields = dict(fields or {})
        self._rel_offsets = np.concatenate([[0], np.cumsum(rows.n_rels)]).astype(np.int64)
        self._memo: List[Optional[dict]] = [None] * len(image_ids)
        for i, d in (built or {}).items():
            self._memo[i] = d

    # ------------------------------------------------------------------ building dicts
    def _build(self, i: int) -> dict:
        """Dict ``i`` on its own (random access by a sampler)."""
        r = self._rows
        s = int(r.box_start[i])
        e = s + int(r.n_boxes[i])
        image_id, h, w = int(self._image_ids[i]), int(self._heights[i]), int(self._widths[i])
        boxes = _pixel_boxes_one(r.raw_boxes[s:e], max(w, h) / self._box_scale, [w - 1, h - 1] * 2)
        return {"file_name": f"{self._prefix}{image_id}.jpg", "image_id": image_id, "height": h, "width": w,
                "boxes": boxes, "labels": r.labels[s:e],
                "relations": r.relations[int(self._rel_offsets[i]):int(self._rel_offsets[i + 1])],
                "attributes": r.attributes[s:e], **self._fields}

    def _build_range(self, lo: int, hi: int) -> List[dict]:
        """Dicts ``lo:hi`` in one vectorised pass: the chunk's boxes decoded, scaled and clipped by whole-chunk numpy
        calls; then per image only views and one dict literal. The chunk's boxes, labels and attributes are
        consecutive rows (the store is compact), so one slice per image serves all three (views of chunk-wide views),
        and a second one the relations. Validation was done on whole arrays when the split was read."""
        r, counts = self._rows, self._rows.n_boxes[lo:hi]
        first = int(r.box_start[lo])
        ends = np.cumsum(counts)
        last = first + int(ends[-1])
        widths, heights = self._widths[lo:hi], self._heights[lo:hi]
        boxes = _pixel_boxes(r.raw_boxes[first:last], widths, heights, counts, self._box_scale)
        labels, attributes, relations = r.labels[first:last], r.attributes[first:last], r.relations
        rows = list(map(slice, (ends - counts).tolist(), ends.tolist()))
        rel_offsets = self._rel_offsets[lo:hi + 1].tolist()
        image_ids, prefix = self._image_ids[lo:hi].tolist(), self._prefix
        columns = zip(image_ids, heights.tolist(), widths.tolist(), rows, rel_offsets, rel_offsets[1:])
        fields = self._fields
        if fields.keys() == {"dataset_name"}:  # the usual case: one more literal key (~20 % faster than **fields)
            name = fields["dataset_name"]
            return [{"file_name": f"{prefix}{i}.jpg", "image_id": i, "height": h, "width": w, "boxes": boxes[s],
                     "labels": labels[s], "relations": relations[a:b], "attributes": attributes[s],
                     "dataset_name": name} for i, h, w, s, a, b in columns]
        return [{"file_name": f"{prefix}{i}.jpg", "image_id": i, "height": h, "width": w, "boxes": boxes[s],
                 "labels": labels[s], "relations": relations[a:b], "attributes": attributes[s], **fields}
                for i, h, w, s, a, b in columns]

    def _materialize(self, lo: int, hi: int) -> None:
        chunk = self._memo[lo:hi]
        missing = chunk.count(None)
        if missing:
            with _gc_paused():
                built = self._build_range(lo, hi)
            self._memo[lo:hi] = built if missing == len(chunk) else [
                b if c is None else c for c, b in zip(chunk, built)]

    # ------------------------------------------------------------------ the list protocol
    def __len__(self) -> int:
        return len(self._memo)

    def __getitem__(self, item):
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            for lo in range(start, stop, _CHUNK):
                self._materialize(lo, min(lo + _CHUNK, stop))
            return self._memo[start:stop]
        i = operator.index(item)
        n = len(self._memo)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"dataset dict index {item} out of range for {n} images")
        d = self._memo[i]
        if d is None:
            built = self._build(i)
            d = self._memo[i]  # another thread may have stored one meanwhile: keep the first
            if d is None:
                d = self._memo[i] = built
        return d

    def __iter__(self):
        # Chunk after chunk, built when reached; the items are then handed out by C iterators (a generator's
        # per-item resume costs ~5 % of building the dicts).
        return itertools.chain.from_iterable(map(self._chunk, range(0, len(self), _CHUNK)))

    def _chunk(self, lo: int) -> List[dict]:
        hi = min(lo + _CHUNK, len(self))
        self._materialize(lo, hi)
        return self._memo[lo:hi]

    def __add__(self, other):
        return list(self) + list(other)

    def __radd__(self, other):
        return list(other) + list(self)

    def __repr__(self) -> str:
        return f"VGDatasetDicts({len(self)} images, {self.num_built} built, fields={self._fields})"

    @property
    def num_built(self) -> int:
        """How many dicts exist so far."""
        return len(self._memo) - self._memo.count(None)

    # ------------------------------------------------------------------ column-wise access
    def set_fields(self, fields: dict, *, overwrite: bool = True) -> None:
        """``d.update(fields)`` (``overwrite``) or ``d.setdefault(k, v)`` for every dict, without building them."""
        for key, value in fields.items():
            if overwrite or (key not in self._fields and key not in _DICT_KEYS):
                self._fields[key] = value
        for d in self._memo:
            if d is None:
                continue
            if overwrite:
                d.update(fields)
            else:
                for key, value in fields.items():
                    d.setdefault(key, value)

    def field_values(self, key: str, default=None) -> list:
        """``[d.get(key, default) for d in self]``; builds the dicts only for the array keys."""
        n = len(self)
        if key in _ARRAY_KEYS and key not in self._fields:
            return [d[key] for d in self]
        if key in self._fields:
            values = [self._fields[key]] * n
        elif key == "file_name":
            values = [f"{self._prefix}{i}.jpg" for i in self._image_ids.tolist()]
        elif key in ("image_id", "height", "width"):
            values = {"image_id": self._image_ids, "height": self._heights, "width": self._widths}[key].tolist()
        else:
            values = [default] * n
        if self._memo.count(None) != n:  # dicts already built may have been changed by their users
            values = [v if d is None else d.get(key, default) for v, d in zip(values, self._memo)]
        return values

    def __reduce__(self):
        built = {i: d for i, d in enumerate(self._memo) if d is not None}
        return (_restore_vg_dicts, (self._rows.compact(), self._image_ids, self._heights, self._widths, self._prefix,
                                    self._box_scale, self._fields, built))


def _restore_vg_dicts(rows, image_ids, heights, widths, prefix, box_scale, fields, built) -> VGDatasetDicts:
    return VGDatasetDicts(rows, image_ids, heights, widths, image_prefix=prefix, box_scale=box_scale, fields=fields,
                          built=built)


def load_vg_dicts(root: str, split: str, *, dataset_name: str = "", box_scale: int = 1024, num_val_images: int = 5000,
                  filter_empty_rels: bool = True, filter_non_overlap: bool = False, num_images: int = -1,
                  num_classes: Optional[int] = None, num_predicates: Optional[int] = None,
                  num_attributes: Optional[int] = None) -> VGDatasetDicts:
    """Dataset dicts of one split of a VG-format dataset (see the module docstring for the layout), as a
    :class:`VGDatasetDicts`: every file is read and checked now, each dict is built on first access
    (``list(dicts)`` gives a plain list).

    Each dict: ``file_name``, ``image_id``, ``height``, ``width`` (from image_data.json), ``boxes`` float32 (N, 4)
    xyxy in original-image pixels (clipped to [0, W-1] x [0, H-1] as Scene-Graph-Benchmark does), ``labels`` int64 (N,)
    0-based, ``relations`` int64 (R, 3) [subject, object, predicate] (image-local box indices, predicate 0-based),
    ``attributes`` int64 (N, 10) 0-based with -1 = none, ``dataset_name``.

    ``filter_non_overlap`` (train only, as in SGB) keeps relations whose boxes overlap (+1-pixel convention) and drops
    images left without one. The class counts default to the dictionary JSON's and bound the index checks.
    """
    files = VGFiles(root)
    if num_classes is None or num_predicates is None or num_attributes is None:
        vocab = load_vg_vocabulary(files.dicts)
        num_classes = len(vocab["thing_classes"]) if num_classes is None else num_classes
        num_predicates = len(vocab["predicate_classes"]) if num_predicates is None else num_predicates
        num_attributes = len(vocab["attribute_classes"]) if num_attributes is None else num_attributes
    rows = read_vg_split(files.h5, split, box_scale=box_scale, num_val_images=num_val_images,
                         filter_empty_rels=filter_empty_rels, filter_non_overlap=filter_non_overlap,
                         num_images=num_images, num_classes=num_classes, num_predicates=num_predicates,
                         num_attributes=num_attributes)
    info = load_vg_image_info(files.image_data, rows.num_rows)
    return VGDatasetDicts(rows, info.image_ids[rows.index], info.heights[rows.index], info.widths[rows.index],
                          image_prefix=os.path.join(files.image_dir, ""), box_scale=box_scale,
                          fields={"dataset_name": dataset_name})


def vg_predicate_frequencies(root: str, num_predicates: int, *, num_val_images: int = 5000,
                             filter_empty_rels: bool = True) -> List[int]:
    """Number of relations of each (0-based) predicate in the train split (after the val hold-out), as a list."""
    files = VGFiles(root)
    a = _read_h5(files.h5, 1024, ("split", "img_to_first_box", "img_to_first_rel", "img_to_last_rel", "predicates"),
                 mapped=_MAPPED_KEYS)
    index = select_split_images(a["split"], a["img_to_first_box"], a["img_to_first_rel"], "train",
                                num_val_images=num_val_images, filter_empty_rels=filter_empty_rels)
    first, last = a["img_to_first_rel"][index].astype(np.int64), a["img_to_last_rel"][index].astype(np.int64)
    counts = np.where(first >= 0, last - first + 1, 0)
    predicates = a["predicates"][_concat_ranges(first, counts)].astype(np.int64)
    _check_range(predicates, 1, num_predicates, files.h5, "predicates", f"1-based predicates 1..{num_predicates}")
    return np.bincount(predicates - 1, minlength=num_predicates).tolist()


def filter_duplicate_relations(relations: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Keep one predicate per (subject, object) pair, chosen uniformly at random (SGB's train-time filter).

    ``relations`` is (R, 3) [sub, obj, pred]; returns (R', 3) with unique pairs, in order of first appearance.
    ``rng`` defaults to numpy's global RNG (which the train loader seeds per sample).
    """
    relations = np.asarray(relations)
    if len(relations) < 2:
        return relations
    pairs, inverse, counts = np.unique(relations[:, :2], axis=0, return_inverse=True, return_counts=True)
    if len(pairs) == len(relations):
        return relations
    inverse = inverse.reshape(-1)
    draw = rng.random(len(relations)) if rng is not None else np.random.random(len(relations))
    # The member with the smallest random key wins: a uniform choice among each pair's predicates.
    order = np.lexsort((draw, inverse))
    first_of_group = np.concatenate([[0], np.cumsum(counts)[:-1]])
    chosen = np.sort(order[first_of_group])
    return relations[chosen]


# ---------------------------------------------------------------------------- metadata and registration
class LazyMetadata(Metadata):
    """Metadata whose file-derived attributes (class names, predicate frequencies, ...) are read on first access.

    Registration stays cheap (no file is opened at import) while ``MetadataCatalog.get(name).thing_classes`` works
    before the dataset dicts are ever loaded. ``_loader()`` returns a dict of attributes.
    """

    def __init__(self, name: str = "N/A", _loader: Optional[Callable[[], dict]] = None, _lazy_keys=(), **kwargs):
        super().__init__(name=name, _loader=_loader, _lazy_keys=tuple(_lazy_keys), **kwargs)

    def _load_lazy(self) -> None:
        loader = self.__dict__.get("_loader")
        if loader is not None:
            values = loader()
            self.__dict__["_loader"] = None  # before setting, so a failing attribute cannot recurse
            self.set(**values)

    def __getattr__(self, key: str):
        if not key.startswith("_") and key in self.__dict__.get("_lazy_keys", ()) and self.__dict__.get("_loader"):
            self._load_lazy()
            return self.__dict__[key]
        return super().__getattr__(key)

    def get(self, key: str, default=None):
        """Attribute ``key`` (loading the lazy ones first if needed) or ``default``."""
        if key in self.__dict__.get("_lazy_keys", ()) and self.__dict__.get("_loader"):
            self._load_lazy()
        return self.__dict__.get(key, default)

    def as_dict(self) -> dict:
        """All public attributes, lazy ones loaded."""
        self._load_lazy()
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __reduce__(self):
        # Pickles (e.g. to spawned workers) as plain loaded values: the loader closure is not picklable.
        return (_metadata_from_dict, (self.as_dict(),))


def _metadata_from_dict(values: dict) -> Metadata:
    return Metadata(**values)


_LAZY_KEYS = ("thing_classes", "predicate_classes", "attribute_classes", "predicate_frequencies")

VG_OPTIONS = "visual_genome"  # the dataset option group of the built-in VG-format datasets
_DEFAULT_OPTIONS: Dict[str, object] = {
    "vg_root": "", "synthetic_root": "", "filter_empty_rels": True, "filter_non_overlap": False,
    "num_val_images": 5000, "box_scale": 1024,
}


def vg_options_from_config(cfg) -> Dict[str, object]:
    """The options of ``DATASETS.VG.*`` and ``DATASETS.SYNTHETIC_GENOME.ROOT`` for the VG-format loaders."""
    vg = cfg.DATASETS.VG
    synthetic = cfg.DATASETS.SYNTHETIC_GENOME.ROOT if "SYNTHETIC_GENOME" in cfg.DATASETS else ""
    return dict(vg_root=vg.ROOT, synthetic_root=synthetic, filter_empty_rels=bool(vg.FILTER_EMPTY_RELS),
                filter_non_overlap=bool(vg.FILTER_NON_OVERLAP), num_val_images=int(vg.NUM_VAL_IMAGES),
                box_scale=int(vg.BOX_SCALE))


DatasetCatalog.register_options(VG_OPTIONS, defaults=_DEFAULT_OPTIONS, from_config=vg_options_from_config,
                                keys="DATASETS.VG.*, DATASETS.SYNTHETIC_GENOME.ROOT")


def vg_options() -> Dict[str, object]:
    """A copy of the options of the built-in VG-format datasets in effect."""
    return dict(DatasetCatalog.options(VG_OPTIONS))


def _load_metadata(root_fn: Callable[[], str], num_val_images: Callable[[], int]) -> dict:
    root = root_fn()
    vocab = load_vg_vocabulary(VGFiles(root).dicts)
    freqs = vg_predicate_frequencies(root, len(vocab["predicate_classes"]), num_val_images=num_val_images(),
                                     filter_empty_rels=bool(vg_options()["filter_empty_rels"]))
    return dict(vocab, predicate_frequencies=freqs)


def flip_pairs_from_names(predicate_classes: Sequence[str]) -> List[List[int]]:
    """Index pairs of predicates that swap on a horizontal flip ("left of" <-> "right of"), found by name."""
    names = {n: i for i, n in enumerate(predicate_classes)}
    pairs = []
    for a_name, b_name in (("left of", "right of"), ("to the left of", "to the right of"), ("left", "right")):
        if a_name in names and b_name in names:
            pairs.append([names[a_name], names[b_name]])
    return pairs


def _load_metadata_with_flips(root_fn, num_val_images) -> dict:
    meta = _load_metadata(root_fn, num_val_images)
    meta["flip_predicate_pairs"] = flip_pairs_from_names(meta["predicate_classes"])
    return meta


def register_vg_format_dataset(name: str, *, root_fn: Callable[[], str], split: str,
                               num_val_images: Callable[[], int], prepare: Optional[Callable[[], None]] = None,
                               **metadata) -> None:
    """Register ``name`` as split ``split`` of the VG-format dataset at ``root_fn()``.

    ``root_fn``/``num_val_images`` are called when the data is needed (so ``$SGG_DATASETS`` and config changes made
    after import apply); ``prepare`` (e.g. the demo generator) runs first. Metadata: the vocabulary and predicate
    frequencies (lazy), ``flip_predicate_pairs``, ``evaluator_type="scene_graph"``, ``mapper="SceneGraphMapper"``.
    """

    def load() -> List[dict]:
        if prepare is not None:
            prepare()
        options = vg_options()
        return load_vg_dicts(
            root_fn(), split, dataset_name=name, box_scale=int(options["box_scale"]), num_val_images=num_val_images(),
            filter_empty_rels=bool(options["filter_empty_rels"]),
            filter_non_overlap=bool(options["filter_non_overlap"]) and split == "train",
        )

    def load_metadata() -> dict:
        if prepare is not None:
            prepare()
        return _load_metadata_with_flips(root_fn, num_val_images)

    DatasetCatalog.register(name, load, option_group=VG_OPTIONS)
    MetadataCatalog[name] = LazyMetadata(
        name=name, _loader=load_metadata, _lazy_keys=_LAZY_KEYS + ("flip_predicate_pairs",),
        evaluator_type="scene_graph", mapper="SceneGraphMapper", split=split, **metadata,
    )


def register_all_vg() -> None:
    """Register ``vg_{train,val,test}`` and ``synthetic_genome_{train,test}``; roots are resolved at load time
    (``DATASETS.VG.ROOT`` / ``DATASETS.SYNTHETIC_GENOME.ROOT``, else under ``$SGG_DATASETS``). The demo's
    ``demo_vg_*`` / ``demo_synthetic_*`` are registered by ``sgg.data.demo``."""

    def vg_root() -> str:
        return str(vg_options()["vg_root"]) or os.path.join(datasets_root(), "vg")

    def synthetic_root() -> str:
        return str(vg_options()["synthetic_root"]) or os.path.join(datasets_root(), "synthetic_genome")

    def vg_num_val() -> int:
        return int(vg_options()["num_val_images"])

    for split in ("train", "val", "test"):
        register_vg_format_dataset(f"vg_{split}", root_fn=vg_root, split=split, num_val_images=vg_num_val)
    for split in ("train", "test"):
        # The synthetic genome has no val hold-out: every split-0 image trains.
        register_vg_format_dataset(f"synthetic_genome_{split}", root_fn=synthetic_root, split=split,
                                   num_val_images=lambda: 0)
