"""Repeat-factor sampling over predicate frequencies, for the long tail of scene-graph predicates.

LVIS-style (Gupta et al. 2019) with predicates in place of object categories: the predicate frequency ``f(p)`` is the
fraction of training images that contain ``p``; ``r(p) = max(1, sqrt(t / f(p)))``; an image repeats
``r(I) = max over its predicates`` times per epoch (1 for an image without relations), with stochastic rounding
redrawn every epoch.
"""

from __future__ import annotations

import logging
from typing import Iterator, List, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from sgg.config import configurable

from . import SAMPLER_REGISTRY

__all__ = ["RepeatFactorTrainingSampler", "predicate_repeat_factors"]

logger = logging.getLogger(__name__)


def predicate_repeat_factors(dataset_dicts: Sequence[dict], repeat_threshold: float) -> np.ndarray:
    """Per-image repeat factors ``(N,)`` float64 from the predicates in each dict's ``relations`` (R, 3)."""
    if repeat_threshold <= 0:
        raise ValueError(f"DATALOADER.REPEAT_THRESHOLD must be > 0 for repeat-factor sampling, got {repeat_threshold}.")
    per_image = []
    for i, d in enumerate(dataset_dicts):
        if "relations" not in d:
            raise ValueError(f"RepeatFactorTrainingSampler: dataset dict {i} ('{d.get('file_name', '?')}') has no "
                             "'relations'; it needs scene-graph dicts.")
        per_image.append(np.unique(np.asarray(d["relations"]).reshape(-1, 3)[:, 2]))
    num_predicates = int(max((p.max() + 1 for p in per_image if p.size), default=0))
    images_with = np.zeros(num_predicates, dtype=np.float64)
    for preds in per_image:
        images_with[preds] += 1
    freq = images_with / max(len(dataset_dicts), 1)
    with np.errstate(divide="ignore"):
        pred_factor = np.maximum(1.0, np.sqrt(repeat_threshold / np.where(freq > 0, freq, np.inf)))
    return np.array([pred_factor[p].max() if p.size else 1.0 for p in per_image], dtype=np.float64)


@SAMPLER_REGISTRY.register()
class RepeatFactorTrainingSampler(Sampler[List[int]]):
    """Infinite per-rank batch sampler whose epochs repeat each image ``r(I)`` times (stochastically rounded).

    Every rank walks the same global sequence (epoch ``e`` = seeded rounding + permutation), global batch ``b`` is
    its slice ``[b G, (b + 1) G)`` with ``G = batch_size x world_size``, and rank ``k`` takes the ``k``-th chunk. Resume
    at ``start_batch`` replays only the epoch lengths (a vectorised draw per epoch), not the batches.
    """

    @configurable
    def __init__(self, *, repeat_factors: Sequence[float], batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_batch: int = 0):
        factors = np.asarray(repeat_factors, dtype=np.float64)
        if factors.size == 0:
            raise ValueError("RepeatFactorTrainingSampler got an empty dataset.")
        if batch_size <= 0:
            raise ValueError(f"RepeatFactorTrainingSampler batch_size must be positive, got {batch_size}.")
        self._int_part, self._frac_part = np.floor(factors), factors - np.floor(factors)
        self._batch_size, self._seed = int(batch_size), int(seed)
        self._rank, self._world_size, self._start_batch = int(rank), int(world_size), int(start_batch)
        logger.info("Repeat-factor sampling: %d images -> %.0f expected per epoch.", factors.size, factors.sum())

    @classmethod
    def from_config(cls, cfg, dataset_dicts, *, batch_size, seed, rank=0, world_size=1, start_batch=0):
        factors = predicate_repeat_factors(dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD)
        return {"repeat_factors": factors, "batch_size": batch_size, "seed": seed, "rank": rank,
                "world_size": world_size, "start_batch": start_batch}

    def _epoch(self, epoch: int) -> np.ndarray:
        """Indices of epoch ``epoch`` (each image repeated by its stochastically rounded factor), shuffled."""
        g = torch.Generator()
        g.manual_seed(self._seed * 1_000_003 + epoch)
        draws = torch.rand(len(self._frac_part), generator=g, dtype=torch.float64).numpy()
        reps = (self._int_part + (draws < self._frac_part)).astype(np.int64)
        indices = np.repeat(np.arange(len(reps)), reps)
        return indices[torch.randperm(len(indices), generator=g).numpy()]

    def _global_stream(self, start: int) -> Iterator[int]:
        epoch = 0
        indices = self._epoch(epoch)
        while start >= len(indices):
            start -= len(indices)
            epoch += 1
            indices = self._epoch(epoch)
        while True:
            yield from indices[start:].tolist()
            start = 0
            epoch += 1
            indices = self._epoch(epoch)

    def __iter__(self) -> Iterator[List[int]]:
        per_global = self._batch_size * self._world_size
        stream = self._global_stream(self._start_batch * per_global)
        lo = self._rank * self._batch_size
        while True:
            global_batch = [next(stream) for _ in range(per_global)]
            yield global_batch[lo: lo + self._batch_size]

    def state_dict(self) -> dict:
        """Identity of the stream (resume checks it)."""
        return {"name": type(self).__name__, "seed": self._seed, "size": len(self._int_part),
                "batch_size": self._batch_size, "world_size": self._world_size}
