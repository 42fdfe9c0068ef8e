"""Environment helpers: seeding, determinism switches, environment report."""

from __future__ import annotations

import os
import platform
import random
import sys
from datetime import datetime

import numpy as np
import torch

__all__ = ["seed_all_rng", "set_deterministic", "collect_env_info", "get_rng_state", "set_rng_state"]


def seed_all_rng(seed: int | None = None) -> int:
    """Seed python, numpy and torch; ``None`` or negative draws a seed from the OS and time. Returns the seed."""
    if seed is None or seed < 0:
        seed = (os.getpid() + int(datetime.now().strftime("%S%f")) + int.from_bytes(os.urandom(2), "big")) % 2**31
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    random.seed(seed)
    return int(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic algorithms (needed for bit-identical resume); raises where an op has no deterministic kernel."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(bool(enabled), warn_only=False)
    torch.backends.cudnn.deterministic = bool(enabled)


def get_rng_state() -> dict:
    """All RNG states (python, numpy, torch CPU, CUDA), picklable with plain types + tensors."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`get_rng_state`'s output."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def collect_env_info() -> str:
    """A short multi-line report of the software/hardware environment."""
    lines = [
        f"sys.platform: {sys.platform}",
        f"Python: {sys.version.split()[0]}",
        f"platform: {platform.platform()}",
        f"numpy: {np.__version__}",
        f"torch: {torch.__version__} (CUDA available: {torch.cuda.is_available()})",
        f"CPU threads: {torch.get_num_threads()}",
    ]
    try:
        import torchvision

        lines.append(f"torchvision: {torchvision.__version__}")
    except Exception as e:  # a broken torchvision is worth reporting, not crashing on
        lines.append(f"torchvision: unavailable ({e})")
    for mod in ("fvcore", "iopath", "yacs"):
        try:
            lines.append(f"{mod}: {__import__(mod).__version__}")
        except Exception:
            lines.append(f"{mod}: installed")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            lines.append(f"GPU {i}: {torch.cuda.get_device_name(i)}")
    return "\n".join(lines)
