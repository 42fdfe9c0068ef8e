"""The machine's own limits, measured in the running process: dense matmul peak and memory bandwidth, and peak memory.

These are the denominators of ``tools/benchmark.py train_step``: a training step's achieved FLOP/s is compared with
the matmul peak measured *in the same run* (same threads, same load on a shared machine), never with a datasheet.

Units: FLOPs follow fvcore's convention everywhere in sgg (one fused multiply-add = one flop, see
:mod:`sgg.utils.analysis`), so an ``n x n @ n x n`` matmul counts ``n**3`` flops here.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from typing import Dict, Optional

import torch

__all__ = ["synchronize", "matmul_peak", "memory_bandwidth", "peak_memory_bytes", "reset_peak_memory",
           "current_rss_bytes", "median"]

logger = logging.getLogger(__name__)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA); nothing on CPU (its kernels run synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values) -> float:
    """Median of a non-empty sequence of numbers (the mean of the two middle ones for an even count)."""
    v = sorted(float(x) for x in values)
    if not v:
        raise ValueError("median() of an empty sequence")
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 0, repeats: int = 5,
                min_seconds: float = 0.2) -> Dict[str, float]:
    """Best achieved rate of a square dense matmul ``C = A @ B`` (``size x size``, ``dtype``) on ``device``.

    ``size`` 0 picks 2048 on CPU and 8192 on CUDA (large enough for the BLAS to reach its plateau). Each of
    ``repeats`` trials runs the matmul enough times to last ``min_seconds``; the fastest trial is the peak (on a
    shared machine the best trial is the least disturbed one). Returns ``{"flops_per_s", "size", "seconds"}`` in
    fvcore's units (``size**3`` flops per matmul).
    """
    if size <= 0:
        size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up (BLAS threads, kernel selection)
    synchronize(device)
    start = time.perf_counter()
    torch.matmul(a, b, out=out)
    synchronize(device)
    one = max(time.perf_counter() - start, 1e-6)
    reps = max(1, int(min_seconds / one))
    best = float("inf")
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return {"flops_per_s": size ** 3 / best, "size": float(size), "seconds": best}


def memory_bandwidth(device: torch.device, megabytes: int = 256, repeats: int = 5) -> Dict[str, float]:
    """Best achieved copy bandwidth ``dst.copy_(src)`` of a ``megabytes`` fp32 buffer: bytes read + written per
    second (STREAM's "copy" counts both). Returns ``{"bytes_per_s", "bytes", "seconds"}``."""
    n = max(1, megabytes * 2 ** 20 // 4)
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    moved = 2.0 * n * 4
    return {"bytes_per_s": moved / best, "bytes": moved, "seconds": best}


def current_rss_bytes() -> int:
    """Resident memory of this process now (bytes; Linux ``/proc/self/statm``, else the peak as a fallback)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return peak_memory_bytes(torch.device("cpu"))


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window on CUDA; on CPU the process peak cannot be reset (see
    :func:`peak_memory_bytes`)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory: on CUDA the caching allocator's peak of allocated tensors since :func:`reset_peak_memory`; on
    CPU the process's peak resident set size since it started (``getrusage``; it includes Python, torch and the
    model, and anything run before)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def device_name(device: torch.device) -> Optional[str]:
    """A short description of the device (CUDA name, or the CPU model from ``/proc/cpuinfo``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


__all__.append("device_name")
