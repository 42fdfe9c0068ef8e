"""Seed 002's real + synthetic mixing sampler with an exact per-batch composition (DESIGN.md §3).

Composition: the *global* batch ``G = batch_size x world_size x accumulation`` (= ``SOLVER.IMS_PER_BATCH``) holds
exactly ``R = round(G * r)`` real samples (round half up) and ``G - R`` synthetic ones. ``R`` is split over the
``S = world_size x accumulation`` per-rank micro-batches ("slots") of an optimizer step: every slot gets ``R // S`` and
``R % S`` of them one more; which slots get the extra one rotates by ``R % S`` every step, so over ``S`` consecutive
steps each slot receives exactly as many real samples as every other. When the per-rank ``batch_size x r`` is an
integer, ``R % S == 0`` and every slot's batch is exact as well.

Order: each source is an infinite stream of seeded per-epoch permutations shared by all ranks; step ``s`` consumes
positions ``[s R, (s + 1) R)`` of the real stream (and likewise of the synthetic stream), sliced between slots in slot
order. So ranks never draw the same sample within a step, the stream is a pure function of (seed, config), and
resuming at ``start_batch`` is O(1) per epoch skipped.

With ``flatten=True`` the same stream is yielded one index at a time (a per-sample sampler): batch ``k`` is then
indices ``[k B, (k + 1) B)``. That is what detectron2's loaders take as ``sampler=``
(``build_detection_train_loader(..., sampler=..., total_batch_size=G, aspect_ratio_grouping=False)``: its
per-worker sharding hands out whole chunks of ``B``, so every batch it forms is one batch of this sampler).
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

from sgg.config import configurable

from ..dicts import dict_field_values
from . import SAMPLER_REGISTRY
from .curriculum import CurriculumSchedule, build_curriculum, staged_steps

__all__ = ["MultiDatasetDynamicSampler", "real_count", "slot_real_counts", "validate_multi_dataset_ratios"]

logger = logging.getLogger(__name__)

DATASET_TYPES = ("real", "synthetic")
_MISSING = object()
_KEY = "DATASETS.MULTI_DATASET"


def real_count(global_batch: int, real_ratio: float) -> int:
    """round(global_batch x real_ratio), rounding halves up (14 for 20 x 0.7; 3 for 5 x 0.5)."""
    return int(math.floor(global_batch * real_ratio + 0.5 + 1e-9))


def validate_multi_dataset_ratios(real_ratio: float, synthetic_ratio: float, global_batch: int) -> int:
    """Check the two sampling ratios against the global batch; return the real count per global batch.

    Raises ``ValueError`` naming the config keys when a ratio is outside [0, 1], they do not sum to 1, or a source with
    a positive ratio would get zero samples per batch.
    """
    for name, value in (("REAL_SAMPLING_RATIO", real_ratio), ("SYNTHETIC_SAMPLING_RATIO", synthetic_ratio)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{_KEY}.{name} must be in [0, 1], got {value}.")
    if abs(real_ratio + synthetic_ratio - 1.0) > 1e-6:
        raise ValueError(
            f"{_KEY}.REAL_SAMPLING_RATIO ({real_ratio}) + SYNTHETIC_SAMPLING_RATIO ({synthetic_ratio}) = "
            f"{real_ratio + synthetic_ratio:g}; they must sum to 1."
        )
    if global_batch <= 0:
        raise ValueError(f"The global batch size must be positive, got {global_batch}.")
    n_real = real_count(global_batch, real_ratio)
    for name, ratio, count in (("REAL", real_ratio, n_real), ("SYNTHETIC", synthetic_ratio, global_batch - n_real)):
        if ratio > 0 and count == 0:
            raise ValueError(
                f"{_KEY}.{name}_SAMPLING_RATIO={ratio} gives 0 {name.lower()} samples in a global batch of "
                f"{global_batch} (SOLVER.IMS_PER_BATCH); raise the batch size or the ratio."
            )
    return n_real


def slot_real_counts(n_real: int, num_slots: int, step: int) -> List[int]:
    """Real samples of each slot (rank-major within a micro-batch) in optimizer step ``step``; sums to ``n_real``."""
    base, extra = divmod(n_real, num_slots)
    offset = (step * extra) % num_slots
    return [base + (1 if (k - offset) % num_slots < extra else 0) for k in range(num_slots)]


def _source_stream(indices: np.ndarray, seed: int, salt: int, start: int) -> Iterator[int]:
    """Infinite stream of seeded permutations of ``indices``, starting at position ``start``."""
    size = len(indices)
    epoch, offset = divmod(start, size)
    while True:
        g = torch.Generator()
        g.manual_seed(int(seed) * 1_000_003 + salt * 7_919 + epoch)
        perm = indices[torch.randperm(size, generator=g).numpy()]
        yield from perm[offset:].tolist()
        offset = 0
        epoch += 1


def _take(stream: Iterator[int], n: int) -> List[int]:
    return [next(stream) for _ in range(n)]


@SAMPLER_REGISTRY.register()
class MultiDatasetDynamicSampler(Sampler[List[int]]):
    """Infinite per-rank batch sampler mixing ``dataset_type == "real"`` and ``"synthetic"`` dicts at an exact ratio.

    Yields lists of ``batch_size`` indices into ``dataset_dicts`` (real ones first). See the module docstring for the
    composition and ordering guarantees. ``accumulation`` is ``SOLVER.ACCUMULATE_GRAD_STEPS``: consecutive batches of
    one optimizer step count as slots of the same global batch. ``flatten=True`` yields the same indices one by one
    (for detectron2's ``build_detection_train_loader``; see the module docstring). With a ``curriculum``
    (``DATALOADER.CURRICULUM``) each source draws from the easiest part of itself that the step's stage allows
    (:mod:`~sgg.data.samplers.curriculum`); the per-batch composition stays exact.
    """

    @configurable
    def __init__(self, *, dataset_types: Sequence[str], batch_size: int, real_ratio: float, synthetic_ratio: float,
                 seed: int, rank: int = 0, world_size: int = 1, accumulation: int = 1, start_batch: int = 0,
                 flatten: bool = False, curriculum: Optional[CurriculumSchedule] = None):
        if batch_size <= 0:
            raise ValueError(f"MultiDatasetDynamicSampler batch_size must be positive, got {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}.")
        types = np.asarray(list(dataset_types), dtype=object)
        unknown = sorted({str(t) for t in types.tolist()} - set(DATASET_TYPES))
        if unknown:
            raise ValueError(
                f"MultiDatasetDynamicSampler: dataset dicts carry dataset_type {unknown}; expected 'real' or "
                f"'synthetic' (build them with sgg.data.get_multi_dataset_dicts)."
            )
        self._real = np.flatnonzero(types == "real")
        self._synthetic = np.flatnonzero(types == "synthetic")
        self._batch_size, self._world_size, self._rank = int(batch_size), int(world_size), int(rank)
        self._accumulation, self._seed, self._start_batch = max(1, int(accumulation)), int(seed), int(start_batch)
        self._global_batch = self._batch_size * self._world_size * self._accumulation
        self._n_real = validate_multi_dataset_ratios(real_ratio, synthetic_ratio, self._global_batch)
        self._real_ratio, self._synthetic_ratio = float(real_ratio), float(synthetic_ratio)
        self._flatten = bool(flatten)
        self._curriculum = curriculum
        if curriculum is not None and len(curriculum.difficulties) != len(types):
            raise ValueError(f"MultiDatasetDynamicSampler: the curriculum has {len(curriculum.difficulties)} "
                             f"difficulties for {len(types)} dataset dicts.")
        for name, idx, count in (("REAL", self._real, self._n_real),
                                 ("SYNTHETIC", self._synthetic, self._global_batch - self._n_real)):
            if count > 0 and len(idx) == 0:
                raise ValueError(
                    f"{_KEY}.{name}_DATASETS gave no samples but {count} per global batch are requested; check that "
                    f"the datasets exist and are not empty, or set {name}_SAMPLING_RATIO to 0."
                )
        if self._n_real % (self._world_size * self._accumulation):
            logger.info("Multi-dataset: %d real + %d synthetic per global batch of %d; per-rank real counts rotate.",
                        self._n_real, self._global_batch - self._n_real, self._global_batch)

    @classmethod
    def from_config(cls, cfg, dataset_dicts, *, batch_size, seed, rank=0, world_size=1, start_batch=0):
        m = cfg.DATASETS.MULTI_DATASET

        # Column-wise where the sequence offers it (VG's lazy dataset dicts): no dict is built just to read a tag.
        types = dict_field_values(dataset_dicts, "dataset_type", _MISSING)
        missing = [i for i, t in enumerate(types) if t is _MISSING]
        if missing:
            raise ValueError(
                f"MultiDatasetDynamicSampler needs 'dataset_type' in every dataset dict; dict {missing[0]} "
                f"('{dataset_dicts[missing[0]].get('dataset_name', '?')}') has none. Enable {_KEY}.ENABLED so that "
                "build_train_loader tags them."
            )
        return {"dataset_types": types, "batch_size": batch_size,
                "real_ratio": m.REAL_SAMPLING_RATIO, "synthetic_ratio": m.SYNTHETIC_SAMPLING_RATIO, "seed": seed,
                "rank": rank, "world_size": world_size, "accumulation": cfg.SOLVER.ACCUMULATE_GRAD_STEPS,
                "start_batch": start_batch, "curriculum": build_curriculum(cfg, dataset_dicts)}

    @property
    def global_composition(self) -> Tuple[int, int]:
        """(real, synthetic) samples per global batch."""
        return self._n_real, self._global_batch - self._n_real

    def _slot_span(self, step: int, slot: int) -> Tuple[int, int, int]:
        """(real count of this slot, its offset among the step's real samples, its offset among synthetic ones)."""
        counts = slot_real_counts(self._n_real, self._world_size * self._accumulation, step)
        real_before = sum(counts[:slot])
        synthetic_before = slot * self._batch_size - real_before
        return counts[slot], real_before, synthetic_before

    def __iter__(self) -> Iterator:
        if self._flatten:
            return (index for batch in self._batches() for index in batch)
        return self._batches()

    def _batches(self) -> Iterator[List[int]]:
        n_real, n_syn = self.global_composition
        step, micro = divmod(self._start_batch, self._accumulation)
        if self._curriculum is not None:
            real_steps = staged_steps(self._curriculum, self._real, self._seed, 1, step, n_real) if n_real else None
            syn_steps = staged_steps(self._curriculum, self._synthetic, self._seed, 2, step, n_syn) if n_syn else None
        else:
            real_stream = _source_stream(self._real, self._seed, 1, step * n_real) if n_real else None
            syn_stream = _source_stream(self._synthetic, self._seed, 2, step * n_syn) if n_syn else None
        while True:
            if self._curriculum is not None:
                real_step = next(real_steps) if n_real else []
                syn_step = next(syn_steps) if n_syn else []
            else:
                real_step = _take(real_stream, n_real) if n_real else []
                syn_step = _take(syn_stream, n_syn) if n_syn else []
            for m in range(micro, self._accumulation):
                slot = m * self._world_size + self._rank  # micro-batch major: one micro-batch of all ranks together
                count, real_off, syn_off = self._slot_span(step, slot)
                syn_count = self._batch_size - count
                yield real_step[real_off: real_off + count] + syn_step[syn_off: syn_off + syn_count]
            micro = 0
            step += 1

    def state_dict(self) -> dict:
        """Identity of the stream (resume checks it); the position is the trainer's batch count."""
        return {"name": type(self).__name__, "seed": self._seed, "batch_size": self._batch_size,
                "world_size": self._world_size, "accumulation": self._accumulation,
                "real_ratio": self._real_ratio, "synthetic_ratio": self._synthetic_ratio,
                "num_real": len(self._real), "num_synthetic": len(self._synthetic),
                **({"curriculum": {"boundaries": self._curriculum.boundaries, "fractions": self._curriculum.fractions}}
                   if self._curriculum is not None else {})}
