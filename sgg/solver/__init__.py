"""Optimizers and LR schedules."""

from .build import build_lr_scheduler, build_optimizer, get_param_groups
from .lr_scheduler import WarmupLRScheduler

__all__ = ["build_lr_scheduler", "build_optimizer", "get_param_groups", "WarmupLRScheduler"]
