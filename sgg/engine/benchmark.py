"""How close a model's training step comes to the machine's limit: the measurement behind
``tools/benchmark.py train_step`` and ``tools/benchmark.py loader``.

The step that is timed is the real one: :class:`~sgg.engine.train_loop.SimpleTrainer.run_step` on the model,
optimizer, gradient clipping, AMP setting and training loader the config builds (``DefaultTrainer``'s builders), plus
the EMA hook when the config enables one (it runs every step in real training). :class:`StepPhaseTimer` splits each
step into phases without touching the trainer: a forward pre-hook and forward hook on the model, the trainer's
``after_backward`` call and the step's own ``data_time``:

* data wait = ``next(data_loader)`` (the trainer's ``data_time``);
* forward = the model's ``forward`` call (losses included: they are computed inside it);
* backward = the rest until ``after_backward`` (loss sum + ``backward()``);
* optimizer = ``after_backward`` to the end of the step (finite checks, gradient norm, clipping, ``optimizer.step``,
  ``zero_grad``, metric bookkeeping, EMA).

FLOPs of one step (fvcore's convention, one multiply-add = one flop): forward = fvcore ``FlopCountAnalysis`` of the
training-mode forward on one real batch (:func:`sgg.utils.analysis.count_flops`); backward = **measured** with
``torch.utils.flop_counter.FlopCounterMode`` on ``loss.backward()`` of that batch (the matmul / conv / attention
kernels autograd really runs, halved to fvcore's units), which leaves out what a frozen backbone never
differentiates; the usual "backward = 2 x forward" rule is printed beside it. When fvcore cannot trace a model, the
forward count falls back to ``FlopCounterMode``'s (said in the output).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, List

import torch
from torch.utils.flop_counter import FlopCounterMode

from sgg.config import get_cfg, import_user_modules
from sgg.data.build import build_train_loader, per_rank_batch_size
from sgg.data.catalog import DatasetCatalog
from sgg.modeling import resolve_device
from sgg.solver import build_optimizer
from sgg.utils.analysis import count_flops
from sgg.utils.benchmark import (
    current_rss_bytes,
    device_name,
    matmul_peak,
    median,
    memory_bandwidth,
    peak_memory_bytes,
    reset_peak_memory,
    synchronize,
)

from .defaults import DefaultTrainer, _amp_dtype, _clip_fn, resolve_run_config_file
from .train_loop import HookBase, SimpleTrainer

__all__ = ["load_config", "StepPhaseTimer", "build_benchmark_trainer", "measure_train_step", "measure_loader",
           "count_step_flops", "profile_step", "machine_limits", "DENSE_OPS", "PHASES"]

logger = logging.getLogger(__name__)

PHASES = ("data", "forward", "backward", "optimizer")

# Profiler operator names whose *self* time is dense matmul / convolution / attention work (CPU and CUDA names).
DENSE_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::_addmm_activation",
             "aten::mkldnn_convolution", "aten::convolution_backward", "aten::mkldnn_convolution_backward",
             "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::slow_conv3d_forward",
             "aten::_convolution", "aten::cudnn_convolution", "aten::_scaled_dot_product_flash_attention_for_cpu",
             "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
             "aten::_scaled_dot_product_efficient_attention",
             "aten::_scaled_dot_product_flash_attention", "aten::_efficient_attention_backward",
             "aten::_flash_attention_backward", "aten::mkldnn_rnn_layer", "aten::_mkldnn_rnn_layer_backward",
             "aten::linear_backward", "aten::mkldnn_linear")


def load_config(config_file: str, opts=()):
    """defaults + ``config_file`` (a path or a ``sgg.model_zoo`` name) + ``opts``, the config's ``IMPORTS``
    registered, frozen: what the benchmarks measure."""
    cfg = get_cfg()
    cfg.merge_from_file(resolve_run_config_file(config_file))
    cfg.merge_from_list(list(opts or []))
    cfg.freeze()
    import_user_modules(cfg)
    return cfg


class StepPhaseTimer(HookBase):
    """Per-step wall times of the trainer's phases (seconds): data wait, forward, backward, optimizer, total.

    Args:
        model: the module the trainer calls (its forward is timed with a pre-hook and a hook).
        device: synchronised at every phase boundary when it is a CUDA device, so each phase holds its own kernels.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.device = device
        self.records: List[Dict[str, float]] = []
        self._forward = 0.0
        self._fwd_start = 0.0
        self._handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def _pre(self, module, args):
        self._fwd_start = self._now()

    def _post(self, module, args, output):
        self._forward += self._now() - self._fwd_start

    def before_step(self) -> None:
        self._forward = 0.0
        self._start = self._now()

    def after_backward(self) -> None:
        self._backward_end = self._now()

    def after_step(self) -> None:
        end = self._now()
        data = float(self.trainer.storage.history("data_time").latest())
        total = end - self._start
        self.records.append({"data": data, "forward": self._forward,
                             "backward": self._backward_end - self._start - data - self._forward,
                             "optimizer": end - self._backward_end, "total": total})

    def remove(self) -> None:
        """Detach the forward hooks from the model."""
        for h in self._handles:
            h.remove()


def build_benchmark_trainer(cfg, *, seed: int = 0) -> SimpleTrainer:
    """The :class:`SimpleTrainer` ``DefaultTrainer`` would run for ``cfg`` (same builders, clipping, AMP, accumulation
    and EMA hook), without its checkpoint / evaluation / writer hooks, so nothing is written to disk. The config's
    dataset options are applied (``DatasetCatalog.configure``)."""
    DatasetCatalog.configure(cfg)
    model = DefaultTrainer.build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    loader = build_train_loader(cfg, seed=cfg.SEED if cfg.SEED >= 0 else seed)
    trainer = SimpleTrainer(model, loader, optimizer, accumulate_steps=cfg.SOLVER.ACCUMULATE_GRAD_STEPS,
                            clip_fn=_clip_fn(cfg), amp_dtype=_amp_dtype(cfg),
                            max_nonfinite_steps=cfg.SOLVER.MAX_NONFINITE_STEPS)
    ema = DefaultTrainer.build_ema_hook(cfg)
    trainer.register_hooks([ema])
    return trainer


def machine_limits(device: torch.device, *, quick: bool = False) -> Dict[str, Any]:
    """Dense matmul peaks and copy bandwidth of ``device`` now (:mod:`sgg.utils.benchmark`): fp32 (the CPU reference)
    and bf16 (CUDA's reference; on CPU printed to show whether bf16 would help), fp16 on CUDA. ``quick`` uses small
    sizes and one short trial (tests)."""
    size = 256 if quick else 0
    kw = dict(size=size, repeats=1 if quick else 5, min_seconds=0.01 if quick else 0.2)
    out: Dict[str, Any] = {"device": str(device), "device_name": device_name(device),
                           "threads": torch.get_num_threads()}
    out["matmul_fp32"] = matmul_peak(device, torch.float32, **kw)
    if device.type == "cuda":
        out["matmul_bf16"] = matmul_peak(device, torch.bfloat16, **kw)
    else:  # CPUs without native bf16 (AVX2) emulate it ~50x slower than fp32: a small size says enough
        out["matmul_bf16"] = matmul_peak(device, torch.bfloat16, size=256, repeats=2, min_seconds=0.05)
    if device.type == "cuda":
        out["matmul_fp16"] = matmul_peak(device, torch.float16, **kw)
    out["bandwidth"] = memory_bandwidth(device, megabytes=8 if quick else 256, repeats=1 if quick else 5)
    return out


def _loss(trainer: SimpleTrainer, batch) -> torch.Tensor:
    with trainer._autocast():
        loss_dict = trainer.model(batch)
    return sum(loss_dict.values())


def count_step_flops(trainer: SimpleTrainer, batch) -> Dict[str, Any]:
    """FLOPs of one training step on ``batch`` (fvcore units): ``forward`` (fvcore of the training-mode forward, or
    FlopCounterMode's when fvcore fails: ``forward_source``), ``forward_measured`` and ``backward_measured``
    (FlopCounterMode: the kernels that really run), ``backward`` (= ``backward_measured``), ``total``, and the
    ``backward_2x_rule`` figure. Gradients are cleared afterwards; the weights are not changed."""
    model = trainer.model
    # FlopCounterMode counts 2 flops per multiply-add; fvcore (sgg's unit) counts 1.
    with FlopCounterMode(display=False) as fwd_counter:
        loss = _loss(trainer, batch)
    with FlopCounterMode(display=False) as bwd_counter:
        if loss.requires_grad:
            loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    forward_measured = fwd_counter.get_total_flops() // 2
    backward_measured = bwd_counter.get_total_flops() // 2
    out: Dict[str, Any] = {"forward_measured": int(forward_measured), "backward_measured": int(backward_measured)}
    try:
        with trainer._autocast():
            fv = count_flops(model, batch, training=True)
        out.update(forward=fv["total"], forward_source="fvcore", unsupported=fv["unsupported"])
    except Exception as e:  # noqa: BLE001  (fvcore's tracer refuses some models: say so and use the measured count)
        logger.warning("fvcore could not trace the training forward (%s); using FlopCounterMode's forward count.",
                       str(e).splitlines()[0] if str(e) else type(e).__name__)
        out.update(forward=int(forward_measured), forward_source="FlopCounterMode", unsupported={})
    out["backward"] = out["backward_measured"]
    out["backward_2x_rule"] = 2 * out["forward"]
    out["total"] = out["forward"] + out["backward"]
    return out


def profile_step(trainer: SimpleTrainer, steps: int = 1, top: int = 12) -> Dict[str, Any]:
    """``torch.profiler`` over ``steps`` real trainer steps: wall time per step, the self time of dense kernels
    (:data:`DENSE_OPS`) and of every other operator, operator calls per step, and the ``top`` operators by self time
    (``[(name, self seconds per step, calls per step)]``). Wall time not inside any operator is Python / framework
    overhead (and non-torch work such as scipy's Hungarian matching)."""
    start_iter = trainer.iter + 1
    activities = [torch.profiler.ProfilerActivity.CPU]
    cuda = next(trainer.model.parameters()).is_cuda
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        begin = time.perf_counter()
        trainer.train(start_iter, start_iter + steps)
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - begin) / steps
    events = prof.key_averages()
    rows = []
    for e in events:
        self_us = e.self_device_time_total if cuda else e.self_cpu_time_total
        rows.append((e.key, self_us / 1e6 / steps, e.count / steps))
    rows.sort(key=lambda r: -r[1])
    dense = sum(r[1] for r in rows if r[0] in DENSE_OPS)
    ops = sum(r[1] for r in rows if r[0].startswith("aten::") or r[0].startswith("mkldnn"))
    calls = sum(r[2] for r in rows if r[0].startswith("aten::"))
    return {"wall": wall, "dense_self": dense, "op_self": ops, "calls": calls,
            "top": [(n, s, c) for n, s, c in rows if n.startswith("aten::")][:top]}


def measure_train_step(cfg, *, iters: int = 10, warmup: int = 2, flops: bool = True, profile: bool = True,
                       limits: bool = True, quick_limits: bool = False) -> Dict[str, Any]:
    """Time ``warmup + iters`` real training steps of ``cfg`` and put them against the machine's limits.

    Returns a dict: ``config`` facts (model, device, batch size, threads), ``phases`` (median seconds of each of
    :data:`PHASES` and ``total``), ``step_s`` (median step), ``samples_per_s``, ``peak_memory`` / ``rss_before``
    (bytes), ``flops`` (:func:`count_step_flops`), ``achieved_flops_per_s``, ``limits_before`` / ``limits_after``
    (:func:`machine_limits`, measured just before and just after the steps; the higher fp32 / bf16 peak is the
    reference), ``fraction_of_peak`` and ``profile`` (:func:`profile_step`). Timing comes first, so FLOP counting
    and profiling do not disturb it; the CPU peak memory is the process's peak up to the end of the timed steps.
    """
    device = resolve_device(cfg.MODEL.DEVICE)
    result: Dict[str, Any] = {"model": cfg.MODEL.META_ARCHITECTURE, "device": str(device),
                              "threads": torch.get_num_threads()}
    if limits:
        result["limits_before"] = machine_limits(device, quick=quick_limits)
    trainer = build_benchmark_trainer(cfg)
    model = trainer.model
    result["parameters"] = sum(p.numel() for p in model.parameters())
    result["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = per_rank_batch_size(cfg) * trainer.accumulate_steps
    result["samples_per_step"] = batch
    timer = StepPhaseTimer(model, device)
    trainer.register_hooks([timer])
    reset_peak_memory(device)
    result["rss_before"] = current_rss_bytes()
    trainer.train(0, warmup + iters)
    result["peak_memory"] = peak_memory_bytes(device)
    timer.remove()
    records = timer.records[warmup:]
    result["steps_timed"] = len(records)
    result["phases"] = {k: median(r[k] for r in records) for k in (*PHASES, "total")}
    result["phases_mean"] = {k: sum(r[k] for r in records) / len(records) for k in (*PHASES, "total")}
    step = result["phases"]["total"]
    result["step_s"] = step
    result["samples_per_s"] = batch / step
    if limits:
        result["limits_after"] = machine_limits(device, quick=quick_limits)
        key = "matmul_fp32" if device.type == "cpu" else "matmul_bf16"
        if trainer.amp_dtype == torch.float16:
            key = "matmul_fp16"
        result["peak_key"] = key
        result["peak_flops_per_s"] = max(result["limits_before"][key]["flops_per_s"],
                                         result["limits_after"][key]["flops_per_s"])
        result["bandwidth_bytes_per_s"] = max(result["limits_before"]["bandwidth"]["bytes_per_s"],
                                              result["limits_after"]["bandwidth"]["bytes_per_s"])
    if flops:
        sample = next(trainer._data_loader_iter)
        result["flops"] = count_step_flops(trainer, sample)
        result["achieved_flops_per_s"] = result["flops"]["total"] / step
        if limits:
            result["fraction_of_peak"] = result["achieved_flops_per_s"] / result["peak_flops_per_s"]
    if profile:
        result["profile"] = profile_step(trainer, steps=1)
        if flops and limits and result["profile"]["dense_self"] > 0:
            dense_rate = result["flops"]["total"] / result["profile"]["dense_self"]
            result["profile"]["dense_flops_per_s"] = dense_rate
            result["profile"]["dense_fraction_of_peak"] = dense_rate / result["peak_flops_per_s"]
    return result


def measure_loader(cfg, *, batches: int = 20, warmup: int = 2, seed: int = 0) -> Dict[str, Any]:
    """Samples/s the configured training loader delivers alone (``DATALOADER.NUM_WORKERS`` workers, its mapper and
    sampler), from a fresh iterator: ``warmup`` batches first (worker start-up), then ``batches`` timed ones.
    Returns ``{"batches", "samples", "seconds", "samples_per_s", "first_batch_s", "workers"}``."""
    DatasetCatalog.configure(cfg)
    loader = build_train_loader(cfg, seed=cfg.SEED if cfg.SEED >= 0 else seed)
    it = iter(loader)
    start = time.perf_counter()
    for i in range(max(1, warmup)):
        b = next(it)
        if i == 0:
            first = time.perf_counter() - start
    samples = 0
    start = time.perf_counter()
    for _ in range(batches):
        samples += len(next(it))
    seconds = time.perf_counter() - start
    del it
    return {"batches": batches, "samples": samples, "seconds": seconds,
            "samples_per_s": samples / seconds if seconds > 0 else math.inf, "first_batch_s": first,
            "workers": cfg.DATALOADER.NUM_WORKERS, "batch_size": len(b)}
