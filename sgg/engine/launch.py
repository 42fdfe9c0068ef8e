"""``launch``: run a function on N worker processes per machine (NCCL on GPUs, gloo on CPU), or join ``torchrun``.

* ``num_gpus_per_machine`` workers are spawned with ``torch.multiprocessing``; without CUDA they are CPU workers on
  gloo (``--num-gpus 2`` on a laptop = 2 CPU processes), with CUDA one per GPU on NCCL.
* ``dist_url="auto"`` picks a free loopback port (single machine only); multi-machine runs pass
  ``tcp://HOST:PORT`` with ``num_machines``/``machine_rank`` — torch.distributed's own rendezvous.
* Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) the current process joins that group instead.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any, Callable, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sgg.utils import comm

__all__ = ["launch", "find_free_port", "running_under_torchrun", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running_under_torchrun() -> bool:
    """True when the environment describes a torchrun/elastic worker."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str | None = None, args: Tuple[Any, ...] = (), timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Run ``main_func(*args)`` on ``num_machines × num_gpus_per_machine`` processes (see the module docstring)."""
    if running_under_torchrun() and not dist.is_initialized():
        _join_torchrun(timeout)
        main_func(*args)
        return
    if num_gpus_per_machine < 1:
        raise ValueError(f"--num-gpus must be >= 1, got {num_gpus_per_machine}.")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs are visible.")
    if dist_url in (None, "", "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; pass tcp://HOST:PORT of machine 0.")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// init is unreliable across machines; prefer tcp://HOST:PORT.")
    logger.info("Launching %d workers (%s) with dist_url %s", world_size, _backend(), dist_url)
    # When one worker fails, torch terminates the others and logs a warning per process; the failure itself is
    # reported (as one line for user errors) by the caller, so those warnings only add noise.
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level
    spawn_log.setLevel(max(level, logging.ERROR))
    try:
        context = mp.start_processes(
            _distributed_worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
            daemon=False,
            start_method="spawn",
            join=False,
        )
        try:
            while not context.join():
                pass
        except KeyboardInterrupt:
            # Ctrl-C reached the workers too (same process group): give them a moment to stop; the first one's
            # report (which says where the last checkpoint is) then surfaces as the ProcessRaisedException.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if context.join(timeout=1):
                    break
            raise
    finally:
        spawn_log.setLevel(level)


def _join_torchrun(timeout: timedelta) -> None:
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=_backend(), init_method="env://", timeout=timeout)
    _create_local_group(int(os.environ.get("LOCAL_WORLD_SIZE", torch.cuda.device_count() or 1)))
    comm.synchronize()


def _create_local_group(num_per_machine: int) -> None:
    world = dist.get_world_size()
    if world % num_per_machine != 0:
        num_per_machine = world
    for i in range(world // num_per_machine):
        ranks = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if dist.get_rank() in ranks:
            comm.set_local_process_group(group)


def _distributed_worker(local_rank: int, main_func: Callable, world_size: int, num_gpus_per_machine: int,
                        machine_rank: int, dist_url: str, args: Tuple[Any, ...], timeout: timedelta) -> None:
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    elif "OMP_NUM_THREADS" not in os.environ:
        # CPU workers share the machine's cores; N workers x default threads oversubscribe them (torchrun does the same)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_gpus_per_machine))
    try:
        dist.init_process_group(backend=_backend(), init_method=dist_url, world_size=world_size, rank=global_rank,
                                timeout=timeout)
    except Exception as e:
        raise RuntimeError(f"Worker {global_rank} could not join the process group at {dist_url}: {e}") from e
    _create_local_group(num_gpus_per_machine)
    comm.synchronize()
    try:
        main_func(*args)
        # No rank may tear the group down while another still talks to it (gloo aborts the process otherwise).
        comm.synchronize()
    finally:
        dist.destroy_process_group()
