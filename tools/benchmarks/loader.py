"""Data path vs the step: samples/s the configured training loader delivers vs samples/s the training step consumes.

    python tools/benchmark.py loader --config-file CFG [--batches N] [--steps S] [KEY VALUE ...]

First the loader alone (``DATALOADER.NUM_WORKERS`` workers, the config's mapper and sampler; a fresh iterator, the
first batches untimed for worker start-up, then ``--batches`` timed), then ``--steps`` real training steps
(:func:`sgg.engine.benchmark.measure_train_step`, no FLOP counting) for the rate the model consumes and the data wait
inside the step. The loader should deliver at least 2x what the step consumes; the verdict line says whether it does.
"""

from __future__ import annotations

import argparse
import logging
import os

from sgg.engine.benchmark import load_config, measure_loader, measure_train_step
from sgg.utils.env import seed_all_rng

__all__ = ["add_arguments", "run", "REQUIRED_MARGIN"]

REQUIRED_MARGIN = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tools/benchmark.py loader``."""
    parser.add_argument("--config-file", required=True, help="a training config (file or model_zoo name)")
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches; default 20")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after 1 warm-up); default 5")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def run(args) -> int:
    """Measure both rates and print them with the verdict."""
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config_file, args.opts)
    seed_all_rng(cfg.SEED if cfg.SEED >= 0 else 0)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    loader = measure_loader(cfg, batches=args.batches)
    step = measure_train_step(cfg, iters=args.steps, warmup=1, flops=False, profile=False, limits=False)
    ratio = loader["samples_per_s"] / step["samples_per_s"]
    print(f"loader: {args.config_file}; {loader['workers']} worker(s), batch {loader['batch_size']}; load average "
          f"{load}")
    print(f"loader delivers: {loader['samples_per_s']:.2f} samples/s ({loader['samples']} samples in "
          f"{loader['seconds']:.3f} s; first batch {loader['first_batch_s']:.3f} s)")
    print(f"step consumes:   {step['samples_per_s']:.2f} samples/s (median step {step['step_s']:.4f} s, data wait "
          f"{step['phases']['data']:.4f} s = {100 * step['phases']['data'] / step['step_s']:.1f} % of it)")
    verdict = "OK" if ratio >= REQUIRED_MARGIN else "LOADER-BOUND"
    print(f"margin: {ratio:.2f}x (required >= {REQUIRED_MARGIN:g}x): {verdict}")
    return 0
