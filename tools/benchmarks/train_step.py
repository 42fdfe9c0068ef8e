"""Training step vs the machine's limit: FLOPs, median step time, achieved FLOP/s against the same-run matmul peak.

    python tools/benchmark.py train_step --config-file CFG [--iters N] [--warmup W] [--json OUT.json] [KEY VALUE ...]

Runs ``W + N`` real training steps (``SimpleTrainer.run_step`` on what the config builds; see
:mod:`sgg.engine.benchmark`) and prints: the median step and its split (data wait / forward / backward / optimizer),
samples/s, peak memory, FLOPs per step (forward: fvcore on the training-mode forward; backward: measured with
``FlopCounterMode``, the "2 x forward" rule beside it; fvcore units, one multiply-add = one flop), the achieved rate,
the machine's dense matmul peak (fp32 on CPU, bf16 on CUDA; fp16 with fp16 AMP) and copy bandwidth measured just
before and just after the steps, the fraction of that peak, and a one-step ``torch.profiler`` breakdown (dense kernels
vs other operators vs time outside any operator). Wall times depend on the machine's load: the load average is
printed with them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from sgg.engine.benchmark import PHASES, load_config, measure_train_step
from sgg.utils.env import seed_all_rng

__all__ = ["add_arguments", "run", "report"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tools/benchmark.py train_step``."""
    parser.add_argument("--config-file", required=True, help="a training config (file or model_zoo name)")
    parser.add_argument("--iters", type=int, default=10, help="timed steps (after the warm-up); default 10")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first; default 2")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler step")
    parser.add_argument("--quick-limits", action="store_true", help="small, short peak measurements (tests only)")
    parser.add_argument("--json", default="", help="also write every figure to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def _g(x: float) -> str:
    return f"{x / 1e9:,.2f} G"


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def report(r: dict, title: str) -> str:
    """The printed summary of a :func:`sgg.engine.benchmark.measure_train_step` result."""
    lines = [f"train_step: {r['model']} ({title}) on {r['device']}, {r['threads']} thread(s); "
             f"load average {r.get('load_before', '?')} before, {r.get('load_after', '?')} after"]
    lines.append(f"parameters: {r['parameters'] / 1e6:.2f} M ({r['trainable_parameters'] / 1e6:.2f} M trainable)")
    lines.append(f"samples per step: {r['samples_per_step']}; steps timed: {r['steps_timed']} (after the warm-up)")
    ph = r["phases"]
    lines.append(f"step time (median): {ph['total']:.4f} s   samples/s: {r['samples_per_s']:.3f}")
    for k in PHASES:
        lines.append(f"  {k:<10} {ph[k]:>9.4f} s  {100 * ph[k] / ph['total']:5.1f} %  (median of the phase)")
    lim = r.get("limits_before")
    if "flops" in r:
        f = r["flops"]
        lines.append(f"FLOPs per step (1 multiply-add = 1 flop): forward {_g(f['forward'])} ({f['forward_source']}), "
                     f"backward {_g(f['backward'])} (measured, FlopCounterMode; 2 x forward rule: "
                     f"{_g(f['backward_2x_rule'])}), total {_g(f['total'])}; FlopCounterMode forward "
                     f"{_g(f['forward_measured'])}")
        lines.append(f"achieved: {r['achieved_flops_per_s'] / 1e9:,.2f} GFLOP/s")
    if lim:
        after = r["limits_after"]

        def both(key, unit="flops_per_s"):
            return f"{lim[key][unit] / 1e9:,.1f} / {after[key][unit] / 1e9:,.1f}"

        peaks = f"fp32 {both('matmul_fp32')}, bf16 {both('matmul_bf16')}"
        if "matmul_fp16" in lim:
            peaks += f", fp16 {both('matmul_fp16')}"
        size = int(lim["matmul_fp32"]["size"])
        lines.append(f"machine (same run, before / after the steps): {size}^3 matmul GFLOP/s {peaks}; copy "
                     f"bandwidth {both('bandwidth', 'bytes_per_s')} GB/s ({lim['device_name']})")
        if "fraction_of_peak" in r:
            lines.append(f"fraction of the {r['peak_key']} peak ({r['peak_flops_per_s'] / 1e9:,.1f} GFLOP/s): "
                         f"{100 * r['fraction_of_peak']:.1f} %")
    mem = r["peak_memory"] / 2 ** 30
    if r["device"].startswith("cuda"):
        lines.append(f"peak memory: {mem:.2f} GiB (CUDA allocator peak)")
    else:
        lines.append(f"peak memory: {mem:.2f} GiB (process peak RSS; {r['rss_before'] / 2 ** 30:.2f} GiB before "
                     "the steps)")
    p = r.get("profile")
    if p:
        outside = max(p["wall"] - p["op_self"], 0.0)
        other = p["op_self"] - p["dense_self"]
        line = (f"profile (1 step, torch.profiler; {p['wall']:.4f} s with the profiler on): dense kernels "
                f"{p['dense_self']:.4f} s ({100 * p['dense_self'] / p['wall']:.1f} %), other operators {other:.4f} s "
                f"({100 * other / p['wall']:.1f} %), outside operators {outside:.4f} s "
                f"({100 * outside / p['wall']:.1f} %); {p['calls']:.0f} operator calls")
        if "dense_fraction_of_peak" in p:
            line += (f"; step FLOPs / dense time = {p['dense_flops_per_s'] / 1e9:,.1f} GFLOP/s "
                     f"({100 * p['dense_fraction_of_peak']:.1f} % of peak)")
        lines.append(line)
        lines.append("  top operators by self time: " + ", ".join(
            f"{n[6:]} {s * 1e3:.1f} ms x{c:.0f}" for n, s, c in p["top"]))
    return "\n".join(lines)


def run(args) -> int:
    """Measure and print (and write ``--json``)."""
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config_file, args.opts)
    seed_all_rng(cfg.SEED if cfg.SEED >= 0 else 0)
    load_before = _load()
    result = measure_train_step(cfg, iters=args.iters, warmup=args.warmup, flops=not args.no_flops,
                                profile=not args.no_profile, quick_limits=args.quick_limits)
    result["load_before"], result["load_after"] = load_before, _load()
    result["config_file"], result["opts"] = args.config_file, list(args.opts)
    print(report(result, args.config_file))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0
