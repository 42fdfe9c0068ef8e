"""Distributed helpers that work with or without an initialised process group."""

from __future__ import annotations

import functools
import pickle
from typing import Any, Dict, List

import torch
import torch.distributed as dist

__all__ = [
    "get_world_size", "get_rank", "get_local_rank", "get_local_size", "is_main_process", "synchronize",
    "all_gather", "gather", "reduce_dict", "shared_random_seed", "set_local_process_group",
]

_LOCAL_PROCESS_GROUP = None


def set_local_process_group(group) -> None:
    """Record the process group of this machine's workers (set by ``launch``)."""
    global _LOCAL_PROCESS_GROUP
    _LOCAL_PROCESS_GROUP = group


def _ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if _ready() else 1


def get_rank() -> int:
    """Global rank (0 when not distributed)."""
    return dist.get_rank() if _ready() else 0


def get_local_rank() -> int:
    """Rank within this machine."""
    if not _ready() or _LOCAL_PROCESS_GROUP is None:
        return 0
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def get_local_size() -> int:
    """Workers on this machine."""
    if not _ready() or _LOCAL_PROCESS_GROUP is None:
        return 1
    return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)


def is_main_process() -> bool:
    """True on global rank 0."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes (no-op when not distributed)."""
    if get_world_size() > 1:
        if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@functools.lru_cache()
def _cpu_group():
    """A gloo group for gathering picklable objects regardless of the main backend."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any) -> List[Any]:
    """Gather any picklable object from every rank; returns the list ordered by rank."""
    if get_world_size() == 1:
        return [data]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, data, group=_cpu_group())
    return out


def gather(data: Any, dst: int = 0) -> List[Any]:
    """Gather picklable objects on ``dst``; other ranks get ``[]``."""
    if get_world_size() == 1:
        return [data]
    group = _cpu_group()
    if get_rank() == dst:
        out: List[Any] = [None] * get_world_size()
        dist.gather_object(data, out, dst=dst, group=group)
        return out
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def reduce_dict(input_dict: Dict[str, torch.Tensor], average: bool = True) -> Dict[str, torch.Tensor]:
    """All-reduce a dict of scalar tensors (sum or average); the result is identical on every rank."""
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict)
        values = torch.stack([input_dict[k].detach().float().reshape(()) for k in names])
        dist.all_reduce(values)
        if average:
            values /= world_size
    return dict(zip(names, values))


def shared_random_seed() -> int:
    """A random int that is the same on every rank (rank 0's)."""
    seed = int(torch.randint(2**31, (1,)).item())
    return all_gather(seed)[0]


def _size_of(obj: Any) -> int:  # pragma: no cover - debugging helper
    return len(pickle.dumps(obj))
