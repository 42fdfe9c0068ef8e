"""Exponential moving average of weights (``EMAHook``).

``EMAHook`` keeps an fp32 copy of the trainable parameters whose names start with ``MODEL.EMA.PREFIX`` (e.g.
``unet.``) and updates it after every optimizer step::

    shadow <- d * shadow + (1 - d) * param,    d = min(DECAY, (1 + n) / (10 + n)) with WARMUP, else DECAY

Its state (shadow tensors and the update count) is part of every checkpoint and restored on ``--resume``.
``with ema_hook.averaged_weights(): ...`` temporarily puts the averages into the model (evaluation, export;
:class:`sgg.engine.hooks.DiffusersExportHook` writes them into its diffusers folders).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Dict, Iterator, Optional

import torch
from torch import nn

from sgg.config import configurable

from .train_loop import HookBase

__all__ = ["ExponentialMovingAverage", "EMAHook", "unwrap_model"]

logger = logging.getLogger(__name__)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or ``model`` itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class ExponentialMovingAverage:
    """EMA of a model's trainable parameters under a name prefix (the math of :class:`EMAHook`, without hooks).

    Args:
        model: the (unwrapped) module whose parameters are averaged.
        decay: the EMA decay in [0, 1).
        prefix: only parameters whose name starts with this ("" = all trainable parameters).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates.
    """

    def __init__(self, model: nn.Module, *, decay: float, prefix: str = "", warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"MODEL.EMA.DECAY must be in [0, 1), got {decay}.")
        self.decay, self.prefix, self.warmup = float(decay), prefix, bool(warmup)
        self.num_updates = 0
        self.shadow: Dict[str, torch.Tensor] = {}
        self._names = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)]
        if not self._names:
            raise ValueError(f"EMA found no trainable parameter whose name starts with '{prefix}' "
                             "(MODEL.EMA.PREFIX); check the model's parameter names.")

    def _params(self, model: nn.Module) -> Dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        return {n: params[n] for n in self._names}

    def reset(self, model: nn.Module) -> None:
        """Start the average at the model's current weights."""
        self.shadow = {n: p.detach().float().clone() for n, p in self._params(model).items()}
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the model's current parameters."""
        if not self.shadow:
            self.reset(model)
        weight = 1.0 - self.current_decay()
        for name, param in self._params(model).items():
            shadow = self.shadow[name]
            if shadow.device != param.device:
                shadow = self.shadow[name] = shadow.to(param.device)
            shadow.lerp_(param.detach().float(), weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's averaged parameters with the shadow values."""
        for name, param in self._params(model).items():
            param.copy_(self.shadow[name].to(param.device, param.dtype))

    def state_dict(self, *, relative: bool = False) -> Dict[str, torch.Tensor]:
        """The shadow tensors (names relative to the prefix with ``relative``; e.g. a UNet's own keys)."""
        if not relative:
            return dict(self.shadow)
        return {n[len(self.prefix):]: t for n, t in self.shadow.items()}

    def load_state_dict(self, shadow: Dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore shadow tensors saved by :meth:`state_dict` (absolute names)."""
        missing = sorted(set(self._names) - set(shadow))
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameter(s), e.g. {missing[:3]}; the checkpoint was made "
                           f"with another model or MODEL.EMA.PREFIX.")
        self.shadow = {n: shadow[n].float().clone() for n in self._names}
        self.num_updates = int(num_updates)


class EMAHook(HookBase):
    """Keeps an :class:`ExponentialMovingAverage` of ``trainer.model`` updated after every step (module docstring)."""

    @configurable
    def __init__(self, *, decay: float, prefix: str = "", warmup: bool = True):
        """
        Args:
            decay: ``MODEL.EMA.DECAY``.
            prefix: ``MODEL.EMA.PREFIX``; "" averages every trainable parameter.
            warmup: ``MODEL.EMA.WARMUP``.
        """
        self.decay, self.prefix, self.warmup = decay, prefix, warmup
        self.ema: Optional[ExponentialMovingAverage] = None
        self._pending_state: Optional[dict] = None

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Keyword arguments from ``MODEL.EMA.*``."""
        return {"decay": cfg.MODEL.EMA.DECAY, "prefix": cfg.MODEL.EMA.PREFIX, "warmup": cfg.MODEL.EMA.WARMUP}

    @property
    def model(self) -> nn.Module:
        """The trainer's model without its DDP wrapper."""
        return unwrap_model(self.trainer.model)

    def _ensure_ema(self) -> ExponentialMovingAverage:
        if self.ema is None:
            self.ema = ExponentialMovingAverage(self.model, decay=self.decay, prefix=self.prefix, warmup=self.warmup)
        return self.ema

    def before_train(self) -> None:
        ema = self._ensure_ema()
        if self._pending_state is not None:  # resumed: the checkpoint's average, not the current weights
            ema.load_state_dict(self._pending_state["shadow"], self._pending_state["num_updates"])
            self._pending_state = None
        elif not ema.shadow:
            ema.reset(self.model)
        logger.info("EMA of %d parameter tensors (prefix '%s', decay %g)", len(ema.shadow), self.prefix, self.decay)

    def after_step(self) -> None:
        self._ensure_ema().update(self.model)

    def state_dict(self) -> dict:
        if self.ema is None or not self.ema.shadow:
            return {}
        return {"shadow": {k: v.detach().cpu() for k, v in self.ema.shadow.items()},
                "num_updates": self.ema.num_updates}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if self.trainer is not None and self.ema is not None:
            self.ema.load_state_dict(state["shadow"], state["num_updates"])
        else:  # the model may not be reachable yet; apply in before_train
            self._pending_state = state

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into the model (yields it); the trained weights come back afterwards."""
        model = self.model
        ema = self._ensure_ema()
        backup = {n: p.detach().clone() for n, p in ema._params(model).items()}
        ema.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in ema._params(model).items():
                    param.copy_(backup[name])
