"""The default training batch sampler and the inference sampler."""

from __future__ import annotations

import itertools
import logging
from typing import Iterator, List

import torch
from torch.utils.data import Sampler

from sgg.config import configurable

from . import SAMPLER_REGISTRY

__all__ = ["TrainingSampler", "InferenceSampler", "epoch_permutation"]

logger = logging.getLogger(__name__)


def epoch_permutation(size: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The order of ``range(size)`` in epoch ``epoch`` of a stream seeded with ``seed`` (same on every rank)."""
    if not shuffle:
        return torch.arange(size)
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(size, generator=g)


@SAMPLER_REGISTRY.register()
class TrainingSampler(Sampler[List[int]]):
    """Infinite stream of shuffled epochs, split over ranks; yields per-rank batches of indices.

    All ranks walk the same global sequence (one seeded permutation per epoch, epochs concatenated); global
    batch ``b`` is the slice ``[b*B*W, (b+1)*B*W)`` of that sequence and rank ``r`` takes its ``r``-th chunk of ``B``.
    So every rank's stream differs, the union over ranks covers each epoch once, and skipping ``start_batch``
    batches is O(1) per epoch.
    """

    @configurable
    def __init__(self, *, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, start_batch: int = 0):
        if size <= 0:
            raise ValueError(f"TrainingSampler got an empty dataset (size={size}).")
        if batch_size <= 0:
            raise ValueError(f"TrainingSampler batch_size must be positive, got {batch_size}.")
        self._size, self._batch_size, self._seed = int(size), int(batch_size), int(seed)
        self._rank, self._world_size, self._shuffle = int(rank), int(world_size), bool(shuffle)
        self._start_batch = int(start_batch)

    @classmethod
    def from_config(cls, cfg, dataset_dicts, *, batch_size, seed, rank=0, world_size=1, start_batch=0):
        return {"size": len(dataset_dicts), "batch_size": batch_size, "seed": seed, "rank": rank,
                "world_size": world_size, "start_batch": start_batch}

    def _global_stream(self, start: int) -> Iterator[int]:
        epoch, offset = divmod(start, self._size)
        while True:
            perm = epoch_permutation(self._size, self._seed, epoch, self._shuffle).tolist()
            yield from perm[offset:]
            offset = 0
            epoch += 1

    def __iter__(self) -> Iterator[List[int]]:
        per_global = self._batch_size * self._world_size
        stream = self._global_stream(self._start_batch * per_global)
        while True:
            global_batch = list(itertools.islice(stream, per_global))
            lo = self._rank * self._batch_size
            yield global_batch[lo: lo + self._batch_size]

    def state_dict(self) -> dict:
        """Identity of the stream (resume checks it)."""
        return {"name": type(self).__name__, "seed": self._seed, "size": self._size,
                "batch_size": self._batch_size, "world_size": self._world_size}


@SAMPLER_REGISTRY.register()
class InferenceSampler(Sampler[int]):
    """Each rank gets a contiguous, disjoint shard of ``range(size)``; shards differ in length by at most one."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self._size = int(size)
        shard, extra = divmod(self._size, world_size)
        begin = shard * rank + min(rank, extra)
        end = begin + shard + (1 if rank < extra else 0)
        self._local_indices = range(begin, end)

    def __iter__(self):
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)
