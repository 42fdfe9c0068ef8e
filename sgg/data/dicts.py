"""Sequences of dataset dicts: concatenation without building them, and column-wise tagging / reading.

Loaders may return a plain ``list[dict]`` or a lazy sequence that builds each dict on access (VG's
:class:`~sgg.data.datasets.visual_genome.VGDatasetDicts`). These helpers treat both alike, and use a lazy sequence's
``set_fields`` / ``field_values`` methods so that tagging every dict or reading one key of every dict builds none.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections import abc
from typing import List, Sequence

__all__ = ["ConcatDatasetDicts", "concat_dataset_dicts", "set_dict_fields", "dict_field_values"]


class ConcatDatasetDicts(abc.Sequence):
    """Several datasets' dict sequences end to end, without building their dicts (see :func:`get_dataset_dicts`).

    Indexing, slices (-> list), iteration; ``set_fields`` / ``field_values`` delegate to the parts (the column-wise
    forms of tagging every dict and of reading one key of every dict, like
    :class:`sgg.data.datasets.visual_genome.VGDatasetDicts`).
    """

    def __init__(self, parts: Sequence[Sequence[dict]]):
        self._parts = list(parts)
        self._ends = list(itertools.accumulate(len(p) for p in self._parts))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        i = operator.index(item)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"dataset dict index {item} out of range for {len(self)} dicts")
        part = bisect.bisect_right(self._ends, i)
        return self._parts[part][i - (self._ends[part - 1] if part else 0)]

    def __iter__(self):
        return itertools.chain.from_iterable(self._parts)

    def set_fields(self, fields: dict, *, overwrite: bool = True) -> None:
        """``d.update(fields)`` (``overwrite``) or ``d.setdefault(k, v)`` for every dict of every part."""
        for part in self._parts:
            set_dict_fields(part, fields, overwrite=overwrite)

    def field_values(self, key: str, default=None) -> list:
        """``[d.get(key, default) for d in self]``."""
        return [v for part in self._parts for v in dict_field_values(part, key, default)]


def set_dict_fields(dicts: Sequence[dict], fields: dict, *, overwrite: bool = True) -> None:
    """Set ``fields`` in every dict (``setdefault`` when not ``overwrite``); column-wise for sequences that build their
    dicts on demand (they have a ``set_fields`` method), so none is built."""
    setter = getattr(dicts, "set_fields", None)
    if setter is not None:
        setter(fields, overwrite=overwrite)
        return
    for d in dicts:
        if overwrite:
            d.update(fields)
        else:
            for key, value in fields.items():
                d.setdefault(key, value)


def dict_field_values(dicts: Sequence[dict], key: str, default=None) -> list:
    """``[d.get(key, default) for d in dicts]``, column-wise where the sequence supports it (``field_values``)."""
    getter = getattr(dicts, "field_values", None)
    return getter(key, default) if getter is not None else [d.get(key, default) for d in dicts]


def concat_dataset_dicts(parts: List[Sequence[dict]]) -> Sequence[dict]:
    """Several datasets' dicts as one sequence: plain lists give a plain list, a single lazy sequence is returned as
    is, anything else is a :class:`ConcatDatasetDicts` (no dict gets built)."""
    if all(isinstance(p, list) for p in parts):
        return [d for p in parts for d in p]
    return parts[0] if len(parts) == 1 else ConcatDatasetDicts(parts)
