"""Per-iteration LR schedules: warmup + (multi-step | cosine | constant), a plateau factor and a stage factor.

The LR of param group ``g`` at iteration ``t`` is::

    g["base_lr"] * warmup(t) * schedule(t) * plateau_scale * stage_scale

``plateau_scale`` shrinks by ``SOLVER.PLATEAU.FACTOR`` when an evaluation metric stops improving (ReduceLROnPlateau,
as STTran uses on R@20); ``stage_scale`` is set by the two-stage hook. All of it is in ``state_dict`` for exact resume.
"""

from __future__ import annotations

import bisect
import logging
import math
from typing import Sequence

import torch

__all__ = ["WarmupLRScheduler"]

logger = logging.getLogger(__name__)

_SCHEDULES = ("WarmupMultiStepLR", "WarmupCosineLR", "WarmupPlateau", "Constant")


class WarmupLRScheduler:
    """Sets every param group's LR each iteration; see the module docstring for the formula.

    Args:
        optimizer: optimizer whose groups carry ``base_lr``.
        name: one of WarmupMultiStepLR, WarmupCosineLR, WarmupPlateau (constant + plateau), Constant.
        max_iter: schedule length (iterations).
        steps, gamma: multi-step milestones and decay.
        warmup_iters, warmup_factor, warmup_method: linear or constant warmup from ``warmup_factor``.
        end_factor: cosine's final LR as a fraction of base LR.
        plateau_mode/factor/patience: ReduceLROnPlateau behaviour for :meth:`report_metric`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, name: str, max_iter: int, steps: Sequence[int] = (),
                 gamma: float = 0.1, warmup_iters: int = 0, warmup_factor: float = 0.001,
                 warmup_method: str = "linear", end_factor: float = 0.0, plateau_mode: str = "max",
                 plateau_factor: float = 0.5, plateau_patience: int = 1):
        if name not in _SCHEDULES:
            raise ValueError(f"SOLVER.LR_SCHEDULER_NAME '{name}' unknown; choose from {', '.join(_SCHEDULES)}.")
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got '{warmup_method}'.")
        if list(steps) != sorted(steps):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {list(steps)}.")
        self.optimizer = optimizer
        self.name, self.max_iter = name, int(max_iter)
        self.steps, self.gamma = list(steps), float(gamma)
        self.warmup_iters, self.warmup_factor, self.warmup_method = int(warmup_iters), warmup_factor, warmup_method
        self.end_factor = end_factor
        self.plateau_mode, self.plateau_factor, self.plateau_patience = plateau_mode, plateau_factor, plateau_patience
        self.iter = 0
        self.plateau_scale = 1.0
        self.stage_scale = 1.0
        self.best_metric = None
        self.num_bad_evals = 0
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self._apply()

    def factor(self, it: int) -> float:
        """Schedule factor (warmup × decay) at iteration ``it``, without the plateau/stage scales."""
        f = 1.0
        if it < self.warmup_iters:
            if self.warmup_method == "constant":
                f = self.warmup_factor
            else:
                alpha = it / self.warmup_iters
                f = self.warmup_factor * (1 - alpha) + alpha
        if self.name == "WarmupMultiStepLR":
            f *= self.gamma ** bisect.bisect_right(self.steps, it)
        elif self.name == "WarmupCosineLR":
            progress = min(it / max(1, self.max_iter), 1.0)
            f *= self.end_factor + (1 - self.end_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        return f

    def _apply(self) -> None:
        scale = self.factor(self.iter) * self.plateau_scale * self.stage_scale
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale

    def step(self) -> None:
        """Advance one iteration and update the LRs."""
        self.iter += 1
        self._apply()

    def set_stage_scale(self, scale: float) -> None:
        """Multiply every LR by ``scale`` from now on (used by the two-stage hook)."""
        self.stage_scale = float(scale)
        self._apply()

    def report_metric(self, value: float) -> bool:
        """Feed an evaluation metric (ReduceLROnPlateau); returns True when the LR was reduced."""
        better = (self.best_metric is None or (value > self.best_metric if self.plateau_mode == "max"
                                               else value < self.best_metric))
        if better:
            self.best_metric, self.num_bad_evals = float(value), 0
            return False
        self.num_bad_evals += 1
        if self.num_bad_evals > self.plateau_patience:
            self.plateau_scale *= self.plateau_factor
            self.num_bad_evals = 0
            self._apply()
            logger.info("Metric plateaued; LR scale reduced to %.4g", self.plateau_scale)
            return True
        return False

    def get_last_lr(self):
        """Current LR of each param group."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"iter": self.iter, "plateau_scale": self.plateau_scale, "stage_scale": self.stage_scale,
                "best_metric": self.best_metric, "num_bad_evals": self.num_bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.iter = int(state["iter"])
        self.plateau_scale = float(state["plateau_scale"])
        self.stage_scale = float(state["stage_scale"])
        self.best_metric = state["best_metric"]
        self.num_bad_evals = int(state["num_bad_evals"])
        self._apply()
