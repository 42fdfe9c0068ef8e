"""The trainer's per-step finite checks: ``SimpleTrainer._max_abs`` vs torch's inf-norm, on a config's model.

    python tools/benchmark.py finite_check --config-file CFG [--repeat 5] [KEY VALUE ...]

Every training step takes max |x| twice (over the gradients before the optimizer step, over the weights and float
buffers after it) to refuse non-finite values. ``SimpleTrainer._max_abs`` computes it with one ``aminmax`` pass per
tensor on CPU; the baseline is ``torch.nn.utils.get_total_norm(tensors, inf)`` (what the trainer used before). Both
run on the same tensors of the model the config builds (its parameters, with random gradients of the same shapes,
and its float buffers), taking turns ``--repeat`` times; printed: best time of each, the ratio, the saving per
training step (two checks), and whether the two values are identical (also with a NaN and an Inf planted).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from sgg.data.catalog import DatasetCatalog
from sgg.engine.benchmark import load_config
from sgg.engine.train_loop import SimpleTrainer
from sgg.modeling import build_model

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tools/benchmark.py finite_check``."""
    parser.add_argument("--config-file", required=True, help="the config whose model's tensors are checked")
    parser.add_argument("--repeat", type=int, default=5, help="turns of each implementation; default 5")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def _baseline(tensors):
    return torch.nn.utils.get_total_norm(tensors, norm_type=float("inf")).float()


def _best(fn, tensors, repeat):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn(tensors)
        best = min(best, time.perf_counter() - start)
    return best, value


def run(args) -> int:
    """Time both on the gradients and on the weights + buffers; print the table."""
    cfg = load_config(args.config_file, args.opts)
    DatasetCatalog.configure(cfg)
    model = build_model(cfg)
    params = [p.detach() for p in model.parameters() if p.requires_grad]
    grads = [torch.randn_like(p) for p in params]
    weights = [p.detach() for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
    n_grad, n_weight = sum(g.numel() for g in grads), sum(w.numel() for w in weights)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"finite_check: {cfg.MODEL.META_ARCHITECTURE} ({args.config_file}); {torch.get_num_threads()} thread(s); "
          f"load average {load}")
    print(f"{'tensors':<20} {'elements':>12} {'inf-norm s':>11} {'_max_abs s':>11} {'ratio':>6} {'identical':>9}")
    saved = 0.0
    for name, tensors, count in (("gradients", grads, n_grad), ("weights + buffers", weights, n_weight)):
        times = {"base": float("inf"), "new": float("inf")}
        for _ in range(args.repeat):  # take turns so that load changes hit both alike
            for key, fn in (("base", _baseline), ("new", SimpleTrainer._max_abs)):
                t, v = _best(fn, tensors, 1)
                times[key] = min(times[key], t)
                if key == "base":
                    base_value = v
                else:
                    new_value = v
        same = bool(torch.equal(base_value, new_value))
        saved += times["base"] - times["new"]
        print(f"{name:<20} {count:>12,d} {times['base']:>11.4f} {times['new']:>11.4f} "
              f"{times['base'] / times['new']:>6.2f} {str(same):>9}")
    for bad in (float("nan"), float("inf")):
        planted = [g.clone() for g in grads[:3]]
        planted[-1].view(-1)[0] = bad
        a, b = _baseline(planted), SimpleTrainer._max_abs(planted)
        same = bool(torch.equal(a, b)) or (bool(a.isnan()) and bool(b.isnan()))
        print(f"with {bad} planted: inf-norm {float(a)}, _max_abs {float(b)}, identical {same}")
    print(f"saving per training step (one check of each): {saved:.4f} s")
    return 0
