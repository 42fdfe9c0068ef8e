"""Training metrics: ``EventStorage`` (per-iteration scalars) and its writers (console, metrics.json, TensorBoard)."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = ["EventStorage", "get_event_storage", "EventWriter", "JSONWriter", "TensorboardXWriter",
           "CommonMetricPrinter", "TIMING_KEYS"]

logger = logging.getLogger(__name__)

_CURRENT_STORAGE_STACK: List["EventStorage"] = []

# Metrics that measure wall-clock time; they legitimately differ between otherwise identical runs.
TIMING_KEYS = ("time", "data_time", "eta_seconds")

_STATE_WINDOW = 200  # history values kept in checkpoints so smoothed metrics continue identically after resume


def get_event_storage() -> "EventStorage":
    """The storage of the innermost ``with EventStorage():`` block."""
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() must be called inside a 'with EventStorage(...)' block.")
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Scalars reported during training, keyed by name, with per-name history and smoothing hints."""

    def __init__(self, start_iter: int = 0):
        self._history: Dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest: Dict[str, Tuple[float, int]] = {}
        self._iter = start_iter
        self.start_iter = start_iter  # values from before it (restored on resume) were written by the earlier run
        self._vis_data: List[Tuple[str, np.ndarray, int]] = []

    def put_image(self, name: str, image) -> None:
        """Queue an image summary ``name`` at the current iteration: ``(3, H, W)`` uint8 RGB (or a PIL image / an
        ``(H, W, 3)`` array); the TensorBoard writer writes and then drops it (images are not kept in the history)."""
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 3 and array.shape[0] != 3:
            array = array.transpose(2, 0, 1)
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"put_image('{name}') expects (3, H, W) or (H, W, 3) RGB, got shape {array.shape}.")
        self._vis_data.append((name, np.ascontiguousarray(array, dtype=np.uint8), self._iter))

    @property
    def vis_data(self) -> List[Tuple[str, np.ndarray, int]]:
        """The queued ``(name, (3, H, W) uint8, iteration)`` image summaries."""
        return self._vis_data

    def clear_images(self) -> None:
        """Drop the queued image summaries (after a writer wrote them)."""
        self._vis_data = []

    def put_scalar(self, name: str, value, smoothing_hint: bool = True) -> None:
        """Record ``value`` for ``name`` at the current iteration."""
        value = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, self._iter)
        self._latest[name] = (value, self._iter)
        existing = self._smoothing_hints.get(name)
        if existing is not None and existing != smoothing_hint:
            raise ValueError(f"Scalar '{name}' was put with different smoothing_hint values.")
        self._smoothing_hints[name] = smoothing_hint

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs) -> None:
        """Record several scalars."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def history(self, name: str) -> HistoryBuffer:
        """The HistoryBuffer of ``name``; KeyError naming known scalars if absent."""
        if name not in self._history:
            raise KeyError(f"No history metric '{name}'. Known: {', '.join(sorted(self._history))}")
        return self._history[name]

    def histories(self) -> Dict[str, HistoryBuffer]:
        return self._history

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """name -> (latest value, iteration it was put)."""
        return self._latest

    def latest_with_smoothing_hint(self, window_size: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like ``latest`` but smoothed (median over ``window_size``) for scalars with ``smoothing_hint``."""
        out = {}
        for k, (v, itr) in self._latest.items():
            out[k] = (self._history[k].median(window_size) if self._smoothing_hints[k] else v, itr)
        return out

    @property
    def iter(self) -> int:
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    def step(self) -> None:
        """Advance to the next iteration."""
        self._iter += 1

    def state_dict(self) -> dict:
        """Recent history (last 200 values per scalar) so that a resumed run's smoothed metrics are identical."""
        return {
            "history": {k: list(h.values()[-_STATE_WINDOW:]) for k, h in self._history.items()},
            "hints": dict(self._smoothing_hints),
            "latest": {k: list(v) for k, v in self._latest.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`."""
        self._history = defaultdict(HistoryBuffer)
        for k, values in state.get("history", {}).items():
            for value, itr in values:
                self._history[k].update(float(value), int(itr))
        self._smoothing_hints = dict(state.get("hints", {}))
        self._latest = {k: (float(v[0]), int(v[1])) for k, v in state.get("latest", {}).items()}

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()




class EventWriter:
    """Writes the storage's metrics somewhere; called periodically by the PeriodicWriter hook."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """Appends one JSON line per logged iteration to ``metrics.json`` (smoothed where hinted)."""

    def __init__(self, json_file: str, window_size: int = 20):
        self._path = json_file
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        by_iter: Dict[int, dict] = defaultdict(dict)
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr <= self._last_write or itr < storage.start_iter:
                continue
            by_iter[itr][k] = v
        if not by_iter:
            return
        with open(self._path, "a") as f:
            for itr in sorted(by_iter):
                f.write(json.dumps({"iteration": itr, **by_iter[itr]}, sort_keys=True) + "\n")
            f.flush()
        self._last_write = max(by_iter)


class TensorboardXWriter(EventWriter):
    """Writes scalars to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str, window_size: int = 20):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last = self._last_write
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write and itr >= storage.start_iter:
                self._writer.add_scalar(k, v, itr)
                new_last = max(new_last, itr)
        self._last_write = new_last
        for name, image, itr in storage.vis_data:
            self._writer.add_image(name, image, itr, dataformats="CHW")
        storage.clear_images()
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Logs ``iter`` (and ``epoch`` when ``iters_per_epoch`` > 0), ETA, losses, LR, grad norm, timing and memory to
    the console / log.txt."""

    def __init__(self, max_iter: int, window_size: int = 20, iters_per_epoch: int = 0):
        self._max_iter = max_iter
        self._iters_per_epoch = int(iters_per_epoch)
        self._window_size = window_size
        self._last: Optional[Tuple[int, float]] = None

    def _eta(self, storage: EventStorage) -> str:
        iteration = storage.iter
        try:
            eta = storage.history("time").median(1000) * (self._max_iter - iteration - 1)
            storage.put_scalar("eta_seconds", eta, smoothing_hint=False)
            return str(datetime.timedelta(seconds=int(eta)))
        except KeyError:
            now = time.perf_counter()
            eta_str = "N/A"
            if self._last is not None:
                per_iter = (now - self._last[1]) / max(1, iteration - self._last[0])
                eta_str = str(datetime.timedelta(seconds=int(per_iter * (self._max_iter - iteration - 1))))
            self._last = (iteration, now)
            return eta_str

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._max_iter:
            return  # the final iteration is reported by the hooks' after_train
        hist = storage.histories()

        def med(name):
            return f"{hist[name].median(self._window_size):.4f}" if name in hist else "N/A"

        losses = "  ".join(
            f"{k}: {h.median(self._window_size):.4g}" for k, h in hist.items() if "loss" in k
        )
        lr = f"{hist['lr'].latest():.5g}" if "lr" in hist else "N/A"
        mem = ""
        if torch.cuda.is_available():
            mem = f"  max_mem: {torch.cuda.max_memory_allocated() / 1024 / 1024:.0f}M"
        skipped = f"  nonfinite_steps: {int(hist['nonfinite_steps'].latest())}" if "nonfinite_steps" in hist else ""
        grad = f"  grad_norm: {hist['grad_norm'].median(self._window_size):.4g}" if "grad_norm" in hist else ""
        # iteration i (0-based) completes (i + 1) / iters_per_epoch epochs
        epoch = f"  epoch: {(iteration + 1) / self._iters_per_epoch:.2f}" if self._iters_per_epoch > 0 else ""
        logger.info(
            f" eta: {self._eta(storage)}{epoch}  iter: {iteration}  {losses}  time: {med('time')}  "
            f"data_time: {med('data_time')}  lr: {lr}{grad}{skipped}{mem}"
        )


