"""Standard hooks: timing, LR schedule, checkpoints, evaluation, best checkpoint, early stopping, two-stage
training, diffusers-folder export, metric writers. Hooks with state save it through ``state_dict`` so that
``--resume`` restores it."""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import random
import re
import shutil
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from sgg.config import ConfigError, configurable
from sgg.data import DatasetCatalog
from sgg.evaluation.testing import flatten_results_dict
from sgg.utils import comm
from sgg.utils.events import EventWriter, get_event_storage
from sgg.utils.visualizer import SceneGraphVisualizer, best_frame, frame_title

from .ema import EMAHook, unwrap_model
from .predictor import Predictor
from .train_loop import HookBase

__all__ = [
    "CallbackHook", "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "BestCheckpointer",
    "EarlyStopping", "PlateauLR", "TwoStageTraining", "DiffusersExportHook", "VisualizationHook", "PeriodicWriter",
    "WeightHistograms",
]

logger = logging.getLogger(__name__)


class CallbackHook(HookBase):
    """A hook made of plain functions ``f(trainer)``."""

    def __init__(self, *, before_train=None, after_train=None, before_step=None, after_step=None):
        self._before_train, self._after_train = before_train, after_train
        self._before_step, self._after_step = before_step, after_step

    def before_train(self):
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self):
        if self._after_train:
            self._after_train(self.trainer)

    def before_step(self):
        if self._before_step:
            self._before_step(self.trainer)

    def after_step(self):
        if self._after_step:
            self._after_step(self.trainer)


class IterationTimer(HookBase):
    """Puts ``time`` (seconds per iteration, hooks excluded) in the storage; logs the total at the end."""

    def __init__(self, warmup_iter: int = 3):
        self._warmup_iter = warmup_iter
        self._step_start = 0.0
        self._train_start = 0.0
        self._timed_time = 0.0
        self._timed_iters = 0

    def before_train(self):
        self._train_start = time.perf_counter()

    def before_step(self):
        self._step_start = time.perf_counter()

    def after_step(self):
        seconds = time.perf_counter() - self._step_start
        if self.trainer.iter + 1 - self.trainer.start_iter > self._warmup_iter:
            self._timed_time += seconds
            self._timed_iters += 1
            self.trainer.storage.put_scalar("time", seconds)

    def after_train(self):
        total = time.perf_counter() - self._train_start
        if self._timed_iters:
            logger.info("Overall training speed: %d iterations in %.1f s (%.4f s / it); total time %.1f s",
                        self._timed_iters, self._timed_time, self._timed_time / self._timed_iters, total)


class LRScheduler(HookBase):
    """Records the LR and advances the per-iteration scheduler after every step."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler):
        self._optimizer, self.scheduler = optimizer, scheduler

    def after_step(self):
        groups = self._optimizer.param_groups
        biggest = max(groups, key=lambda g: len(g["params"]))
        self.trainer.storage.put_scalar("lr", biggest["lr"], smoothing_hint=False)
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves ``model_{iter:07d}.pth`` every ``period`` iterations and ``model_final.pth`` at the end.

    ``before_save(trainer)`` is called on every rank first (collective work, e.g. gathering RNG states).
    Keeps at most ``max_to_keep`` periodic checkpoints (``None`` = all). Nothing is saved after a failed run.
    """

    def __init__(self, checkpointer, period: int, *, max_to_keep: Optional[int] = None,
                 before_save: Optional[Callable] = None, file_prefix: str = "model"):
        self.checkpointer, self.period, self.max_to_keep = checkpointer, int(period), max_to_keep
        self.before_save, self.file_prefix = before_save, file_prefix
        self._recent: List[str] = []
        self._last_saved_iter = -1

    def _save(self, name: str, iteration: int) -> None:
        if self.before_save is not None:
            self.before_save(self.trainer)
        self.checkpointer.save(name, iteration=iteration)
        self._last_saved_iter = iteration

    def after_step(self):
        it = self.trainer.iter
        if self.period > 0 and (it + 1) % self.period == 0 and it + 1 < self.trainer.max_iter:
            name = f"{self.file_prefix}_{it:07d}"
            self._save(name, it)
            if self.max_to_keep and comm.is_main_process():
                self._recent.append(os.path.join(self.checkpointer.save_dir, name + ".pth"))
                while len(self._recent) > self.max_to_keep:
                    old = self._recent.pop(0)
                    if os.path.exists(old):
                        os.remove(old)

    def after_train(self):
        if self.trainer.completed:
            self._save(f"{self.file_prefix}_final", self.trainer.iter - 1)


class EvalHook(HookBase):
    """Runs ``eval_function()`` every ``eval_period`` iterations and after training.

    Results are flattened (``"task/metric"``), put in the storage, and kept in ``trainer.latest_eval``
    (``(iteration, results)``) for the hooks that react to them (best checkpoint, early stop, plateau LR).
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], Dict]):
        self._period, self._func = int(eval_period), eval_function
        self._last_eval_iter = -1

    def _do_eval(self):
        results = self._func() or {}
        flat = flatten_results_dict(results)
        for k, v in flat.items():
            if not math.isfinite(v):
                logger.warning("Evaluation metric %s is not finite: %s", k, v)
        if flat:
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        self.trainer.latest_eval = (self.trainer.iter, flat)
        self._last_eval_iter = self.trainer.iter
        comm.synchronize()

    def after_step(self):
        nxt = self.trainer.iter + 1
        if self._period > 0 and nxt % self._period == 0 and nxt != self.trainer.max_iter:
            self._do_eval()

    def after_train(self):
        # trainer.iter is one past the last iteration run; skip if that iteration was just evaluated (early stop)
        if self.trainer.completed and self._last_eval_iter != self.trainer.iter - 1:
            self._do_eval()
        del self._func  # free the closure (data loaders) early


def _improved(value: float, best: Optional[float], mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _fresh_metric(trainer, metric: str) -> Optional[float]:
    latest = getattr(trainer, "latest_eval", None)
    if latest is None or latest[0] != trainer.iter:
        return None
    if metric not in latest[1]:
        raise KeyError(f"Metric '{metric}' was not reported by the evaluators; reported: {sorted(latest[1])}")
    return latest[1][metric]


def _best_file_prefix(metric: str) -> str:
    """``model_best_<metric>`` with the metric's separators made file-name safe (``video_sgg/with/R@20`` ->
    ``model_best_video_sgg-with-R@20``)."""
    return "model_best_" + re.sub(r"[^A-Za-z0-9@._-]+", "-", metric).strip("-")


class BestCheckpointer(HookBase):
    """After each evaluation, saves ``model_best.pth`` when ``metric`` improves (``mode`` max or min), and
    ``model_best_<metric>.pth`` for each of ``extra_metrics`` when that one improves (e.g. TEMPURA keeps the best by
    mR@20 and by R@20)."""

    def __init__(self, checkpointer, metric: str, mode: str = "max", file_prefix: str = "model_best",
                 before_save: Optional[Callable] = None, extra_metrics: Sequence[str] = ()):
        if mode not in ("max", "min"):
            raise ValueError(f"BestCheckpointer mode must be 'max' or 'min', got '{mode}'.")
        self.checkpointer, self.metric, self.mode, self.file_prefix = checkpointer, metric, mode, file_prefix
        self.before_save = before_save
        self.best_value: Optional[float] = None
        self.best_iter: Optional[int] = None
        # metric -> [best value, iteration, file prefix]
        self.extra = {m: [None, None, _best_file_prefix(m)] for m in extra_metrics if m != metric}

    def _improvement(self, metric: str, best: Optional[float]) -> Optional[float]:
        """The fresh value of ``metric`` when it beats ``best`` (finite), else None."""
        value = _fresh_metric(self.trainer, metric)
        if value is None or not math.isfinite(value) or not _improved(value, best, self.mode):
            return None
        return float(value)

    def _check(self):
        records = [(self.metric, self.best_value, self.file_prefix)] + \
            [(m, r[0], r[2]) for m, r in self.extra.items()]
        improved = []
        for metric, best, prefix in records:
            value = self._improvement(metric, best)
            if value is not None:
                improved.append((metric, best, prefix, value))
        if not improved:
            return
        if self.before_save is not None:
            self.before_save(self.trainer)  # once per step, however many metrics improved
        for metric, best, prefix, value in improved:
            logger.info("New best %s = %.4f at iteration %d (previous %s) -> %s.pth", metric, value,
                        self.trainer.iter, best, prefix)
            self.checkpointer.save(prefix, iteration=self.trainer.iter, best_metric=metric, best_value=value)
            if metric == self.metric:
                self.best_value, self.best_iter = value, int(self.trainer.iter)
            else:
                self.extra[metric][:2] = [value, int(self.trainer.iter)]

    def after_step(self):
        self._check()

    def after_train(self):
        if self.trainer.completed:
            self._check()

    def state_dict(self):
        return {"best_value": self.best_value, "best_iter": self.best_iter,
                "extra": {m: r[:2] for m, r in self.extra.items()}}

    def load_state_dict(self, state):
        self.best_value, self.best_iter = state["best_value"], state["best_iter"]
        for metric, (value, iteration) in state.get("extra", {}).items():
            if metric in self.extra:
                self.extra[metric][:2] = [value, iteration]


class EarlyStopping(HookBase):
    """Stops training when ``metric`` has not improved by ``min_delta`` for ``patience`` evaluations."""

    def __init__(self, metric: str, mode: str = "max", patience: int = 5, min_delta: float = 0.0):
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, int(patience), float(min_delta)
        self.best_value: Optional[float] = None
        self.num_bad = 0

    def after_step(self):
        value = _fresh_metric(self.trainer, self.metric)
        if value is None:
            return
        if _improved(value, self.best_value, self.mode, self.min_delta):
            self.best_value, self.num_bad = float(value), 0
            return
        self.num_bad += 1
        if self.num_bad >= self.patience:
            logger.info("Early stopping at iteration %d: %s did not improve for %d evaluations (best %.4f).",
                        self.trainer.iter, self.metric, self.num_bad, self.best_value)
            self.trainer.request_stop()

    def state_dict(self):
        return {"best_value": self.best_value, "num_bad": self.num_bad}

    def load_state_dict(self, state):
        self.best_value, self.num_bad = state["best_value"], int(state["num_bad"])


class PlateauLR(HookBase):
    """Feeds an evaluation metric to the scheduler's ReduceLROnPlateau logic after each evaluation."""

    def __init__(self, scheduler, metric: str):
        self.scheduler, self.metric = scheduler, metric

    def after_step(self):
        value = _fresh_metric(self.trainer, self.metric)
        if value is not None:
            self.scheduler.report_metric(value)


class TwoStageTraining(HookBase):
    """Stage 2 from ``start_iter``: unfreeze parameters under ``prefixes`` and scale every LR by ``lr_factor``.

    Generic (used by the keyframe detector: frozen EfficientNet first, then its last blocks at a 10x lower LR; and by
    SceneLLM: LLM adapters frozen first, then trained). A prefix with a wildcard is an ``fnmatch`` pattern on the
    full parameter name (``llm.*lora_*``).
    Resuming past ``start_iter`` re-applies stage 2 before the first step. ``on_unfreeze(trainer)`` lets the trainer
    re-wrap a DDP model, since DDP only synchronises parameters that required grad when it was built.
    """

    def __init__(self, *, start_iter: int, prefixes: Sequence[str], lr_factor: float, scheduler,
                 on_unfreeze: Optional[Callable] = None):
        if not prefixes:
            raise ValueError("SOLVER.STAGE2.UNFREEZE is empty: name the parameter prefixes to unfreeze in stage 2.")
        self.start_iter, self.prefixes, self.lr_factor = int(start_iter), list(prefixes), float(lr_factor)
        self.scheduler, self.on_unfreeze = scheduler, on_unfreeze
        self.active = False

    def _module(self):
        model = self.trainer.model
        return model.module if hasattr(model, "module") else model

    @staticmethod
    def _selects(name: str, prefix: str) -> bool:
        """A parameter name under ``prefix``; an entry with a wildcard (``*?[``, e.g. ``llm.*lora_*``: only the
        LoRA adapters of SceneLLM's LLM) is matched against the whole name with ``fnmatch`` instead."""
        if any(c in prefix for c in "*?["):
            return fnmatch.fnmatchcase(name, prefix)
        return name == prefix or name.startswith(prefix if prefix.endswith(".") else prefix + ".")

    def _activate(self):
        names = []
        for name, param in self._module().named_parameters():
            if any(self._selects(name, p) for p in self.prefixes):
                if not param.requires_grad:
                    param.requires_grad_(True)
                    names.append(name)
        if not names and not any(
            any(n.startswith(p) or self._selects(n, p) for p in self.prefixes)
            for n, _ in self._module().named_parameters()
        ):
            raise ValueError(f"SOLVER.STAGE2.UNFREEZE prefixes {self.prefixes} match no parameter of the model.")
        self.scheduler.set_stage_scale(self.lr_factor)
        if self.on_unfreeze is not None:
            self.on_unfreeze(self.trainer)
        self.active = True
        logger.info("Stage 2 from iteration %d: unfroze %d tensors under %s, LR x%g", self.trainer.iter, len(names),
                    self.prefixes, self.lr_factor)

    def before_train(self):
        if self.trainer.start_iter >= self.start_iter and not self.active:
            self._activate()

    def before_step(self):
        if self.trainer.iter == self.start_iter and not self.active:
            self._activate()


class DiffusersExportHook(HookBase):
    """Also writes the model as a diffusers folder: ``<output_dir>/checkpoint-<N>/`` every ``period`` iterations
    (only the latest is kept) and ``<output_dir>/final/`` after training. Main process only.

    The model must provide ``save_pretrained(path, unet_state_dict=None)`` and a ``unet`` submodule
    (``TextToVideoDiffusion`` does). With an :class:`EMAHook` registered on the same trainer, the EMA weights
    (relative to ``MODEL.EMA.PREFIX``, which should then be ``unet.``) are written instead of the live ones.
    ``DefaultTrainer`` registers it when ``MODEL.T2V.EXPORT_DIFFUSERS`` is set.
    """

    @configurable
    def __init__(self, *, output_dir: str, period: int):
        """
        Args:
            output_dir: folder holding ``checkpoint-<N>/`` and ``final/`` (``OUTPUT_DIR/diffusers``).
            period: iterations between exports (``SOLVER.CHECKPOINT_PERIOD``); <= 0 = only at the end.
        """
        self.output_dir, self.period = output_dir, int(period)
        self._last_periodic: Optional[str] = None

    @classmethod
    def from_config(cls, cfg) -> dict:
        """``OUTPUT_DIR/diffusers`` at the checkpoint period."""
        return {"output_dir": os.path.join(cfg.OUTPUT_DIR, "diffusers"), "period": cfg.SOLVER.CHECKPOINT_PERIOD}

    def _unet_weights(self, model: nn.Module) -> Optional[Dict[str, torch.Tensor]]:
        ema_hook = next((h for h in self.trainer.hooks if isinstance(h, EMAHook)), None)
        if ema_hook is None or ema_hook.ema is None or not ema_hook.ema.shadow:
            return None
        if ema_hook.prefix != "unet.":
            logger.warning("MODEL.EMA.PREFIX is '%s', not 'unet.'; exporting the live UNet weights.", ema_hook.prefix)
            return None
        full = dict(model.unet.state_dict())
        full.update({k: v.to(full[k].dtype) for k, v in ema_hook.ema.state_dict(relative=True).items()})
        return full

    def export(self, name: str) -> Optional[str]:
        """Write ``<output_dir>/<name>/`` now; returns its path (None on non-main ranks)."""
        if not comm.is_main_process():
            return None
        model = unwrap_model(self.trainer.model)
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"{type(model).__name__} has no save_pretrained(); DiffusersExportHook needs a "
                            "diffusers-backed model such as TextToVideoDiffusion.")
        return model.save_pretrained(os.path.join(self.output_dir, name), unet_state_dict=self._unet_weights(model))

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period > 0 and done % self.period == 0 and done < self.trainer.max_iter:
            path = self.export(f"checkpoint-{done}")
            if path and self._last_periodic and os.path.isdir(self._last_periodic):
                shutil.rmtree(self._last_periodic)  # a ModelScope-size folder is ~7 GB; keep only the latest
            self._last_periodic = path or self._last_periodic

    def after_train(self) -> None:
        if self.trainer.completed:
            self.export("final")
        comm.synchronize()


class WeightHistograms(HookBase):
    """Every ``period`` iterations, puts a histogram of every trainable parameter (``weights/<name>``) and, with
    ``gradients``, of its gradient before clipping (``grads/<name>``) into the storage, for TensorBoard
    (``TENSORBOARD.HISTOGRAM_PERIOD``). Register it on the main process only (only rank 0 writes them)."""

    def __init__(self, period: int, *, bins: int = 64, gradients: bool = False):
        if int(period) <= 0:
            raise ValueError(f"TENSORBOARD.HISTOGRAM_PERIOD must be > 0 for weight histograms, got {period}.")
        self.period, self.bins, self.gradients = int(period), int(bins), bool(gradients)

    def _due(self) -> bool:
        return (self.trainer.iter + 1) % self.period == 0

    def _named_parameters(self):
        return [(n, p) for n, p in unwrap_model(self.trainer.model).named_parameters() if p.requires_grad]

    def after_backward(self):
        if self.gradients and self._due():
            for name, param in self._named_parameters():
                if param.grad is not None:
                    self.trainer.storage.put_histogram(f"grads/{name}", param.grad, bins=self.bins)

    def after_step(self):
        if self._due():
            for name, param in self._named_parameters():
                self.trainer.storage.put_histogram(f"weights/{name}", param, bins=self.bins)


class VisualizationHook(HookBase):
    """``VIS_PERIOD``: every ``period`` iterations, the model's current predictions on the first ``num_samples``
    inputs of its test dataset, drawn by :class:`~sgg.utils.visualizer.SceneGraphVisualizer` (boxes, relation arrows,
    graph and triplet panel; a video's best frame) and put into the event storage as images
    ``vis/<dataset>/<index>`` (TensorBoard's "Images" tab). Main process only; the model is put in eval mode for
    the drawing and back after. Image and video SGG models (the :class:`~sgg.engine.predictor.Predictor`'s tasks
    "image" / "video"); ``topk`` triplets per picture with no score threshold, so an early model shows its best guesses.
    """

    def __init__(self, cfg, period: int, num_samples: int = 2, topk: int = 10):
        self.cfg, self.period, self.num_samples, self.topk = cfg, int(period), int(num_samples), int(topk)
        self._predictor: Optional[Predictor] = None
        self._visualizer = SceneGraphVisualizer(min_height=240, max_height=360)

    def before_train(self):
        if comm.is_main_process():  # config problems surface before the first step, not at iteration VIS_PERIOD
            try:
                self._predictor = Predictor(self.cfg, model=unwrap_model(self.trainer.model), topk=self.topk,
                                            threshold=0.0)
            except ConfigError as e:
                raise ConfigError(f"VIS_PERIOD draws scene graphs and cannot draw this model ({e}) Set VIS_PERIOD "
                                  "0.") from e
            if self._predictor.task not in ("image", "video"):
                raise ConfigError(f"VIS_PERIOD draws scene graphs; {self.cfg.MODEL.META_ARCHITECTURE} is a "
                                  f"{self._predictor.task} model. Set VIS_PERIOD 0.")

    def after_step(self):
        if self.period > 0 and (self.trainer.iter + 1) % self.period == 0 and comm.is_main_process():
            self.visualize()

    def visualize(self) -> List[str]:
        """Draw and queue the images now; returns their names. The RNG states are restored afterwards, so a run
        with ``VIS_PERIOD`` trains exactly as one without (and resumes exactly)."""
        predictor = self._predictor
        model = predictor.model
        samples = DatasetCatalog.get(predictor.dataset_name)[: self.num_samples]
        was_training = model.training
        model.eval()
        names = []
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=devices):
                for index, sample in enumerate(samples):
                    self._visualizer.reset_colors()
                    if predictor.task == "image":
                        picture = self._visualizer.draw(predictor.predict_image(sample))
                    else:
                        vsg = predictor.predict_video(sample)
                        t = best_frame(vsg)
                        picture = self._visualizer.draw(vsg.frames[t], title=frame_title(vsg, t))
                    names.append(f"vis/{predictor.dataset_name}/{index}")
                    get_event_storage().put_image(names[-1], picture)
        finally:
            model.train(was_training)
            np.random.set_state(np_state)
            random.setstate(py_state)
        return names


class PeriodicWriter(HookBase):
    """Calls every writer's ``write()`` every ``period`` iterations and at the end."""

    def __init__(self, writers: List[EventWriter], period: int = 20):
        self._writers, self._period = writers, int(period)

    def after_step(self):
        if (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            for w in self._writers:
                w.write()

    def after_train(self):
        for w in self._writers:
            w.write()
            w.close()
