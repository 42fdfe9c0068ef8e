"""Deployment: eager vs TorchScript vs ONNX Runtime vs dynamic int8 (and optionally pruned): latency, size, accuracy.

One run on one trained model (``--config-file`` + ``--weights``), all on the first input of ``DATASETS.TEST[0]``
(batch 1) for latency and on the whole test set for accuracy:

* **latency** of the exported core (``sgg.export``; the same tensors in, the same tensors out) run eagerly (the
  baseline), as TorchScript, in ONNX Runtime (CPU provider, as many threads as torch), and dynamically quantized
  (int8 ``nn.Linear``) eagerly and as TorchScript: median of ``--iters`` calls after ``--warmup``, in ms, and the
  ratio to eager; the eager model's whole ``forward`` (pre- and post-processing included) for reference. CPU; on a
  machine with CUDA also eager and TorchScript on the GPU (ONNX Runtime's CUDA provider when installed).
* **size**: the fp32 state dict (``torch.save``), the TorchScript and ONNX files, the int8 state dict and TorchScript.
* **accuracy** of every variant on the test set through the normal evaluator (``sgg.export.DeployedModel``: the
  exported graph + sgg's Python pre / post-processing), and its change from eager.

    python tools/benchmark.py deploy --config-file configs/quick/sttran_demo.yaml \\
        --weights output/sttran_demo/model_final.pth
    python tools/benchmark.py deploy --config-file configs/quick/detr_demo.yaml \\
        --weights output/detr_demo/model_final.pth --prune-amount 0.3

Files go to ``--workdir`` (default ``output/deploy_bench/<config name>``); the table is printed and written to
``<workdir>/deploy.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from sgg.checkpoint import DetectionCheckpointer
from sgg.config import get_cfg
from sgg.config.config import import_user_modules
from sgg.data import DatasetCatalog, build_test_loader
from sgg.engine.defaults import resolve_run_config_file
from sgg.evaluation import build_evaluator
from sgg.evaluation.evaluator import inference_on_dataset
from sgg.evaluation.testing import flatten_results_dict
from sgg.export import (
    DeployedModel,
    OnnxRunner,
    TorchScriptRunner,
    build_core,
    export_onnx,
    export_torchscript,
    max_abs_diff,
    prune_global_l1,
    quantize_model,
    require_onnx,
    state_dict_bytes,
)
from sgg.modeling import build_model

__all__ = ["add_arguments", "run", "median_ms", "HEADLINE"]

# Metric keys shown in the printed accuracy table (every key is in deploy.json).
HEADLINE = ("R@50", "mR@50", "AP", "AP50", "with/R@20", "with/mR@20", "no/R@20", "F1[vsumm]", "tau[otani]",
            "rho[otani]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tools/benchmark.py deploy``."""
    parser.add_argument("--config-file", required=True, help="the trained model's config")
    parser.add_argument("--weights", required=True, help="its checkpoint (MODEL.WEIGHTS)")
    parser.add_argument("--workdir", default="", help="exported files (default output/deploy_bench/<config>)")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--prune-amount", type=float, default=0.0, help="also a pruned model (global L1), 0 = off")
    parser.add_argument("--skip-accuracy", action="store_true", help="latency and size only")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def median_ms(fn: Callable[[], object], iters: int, warmup: int, sync: Optional[Callable] = None) -> float:
    """Median wall time of ``fn()`` in ms over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _accuracy(cfg, model, name: str) -> Dict[str, float]:
    dataset = cfg.DATASETS.TEST[0]
    evaluator = build_evaluator(cfg, dataset, os.path.join(cfg.OUTPUT_DIR, "inference", name))
    res = inference_on_dataset(model, build_test_loader(cfg, dataset), evaluator, show_progress=False)
    return {k: float(v) for k, v in flatten_results_dict({k: v for k, v in res.items() if k != "_timing"}).items()}


def _first_input(cfg, core):
    for batch in build_test_loader(cfg, cfg.DATASETS.TEST[0]):
        for x in batch:
            try:
                return x, core.inputs(x)
            except ValueError:
                continue
    raise ValueError(f"No input of {cfg.DATASETS.TEST[0]} fits the {core.family} core.")


def run(args) -> int:
    """The benchmark (module docstring)."""
    require_onnx()
    cfg = get_cfg()
    cfg.merge_from_file(resolve_run_config_file(args.config_file))
    cfg.merge_from_list(args.opts)
    cfg.MODEL.WEIGHTS = args.weights
    cfg.MODEL.DEVICE = "cpu"
    name = os.path.splitext(os.path.basename(args.config_file))[0]
    cfg.OUTPUT_DIR = os.path.abspath(args.workdir or os.path.join("output", "deploy_bench", name))
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    import_user_modules(cfg)
    DatasetCatalog.configure(cfg)
    cfg.freeze()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    model.eval()
    core = build_core(model)
    x, inputs = _first_input(cfg, core)
    work = cfg.OUTPUT_DIR
    threads = torch.get_num_threads()
    print(f"deploy benchmark: {type(model).__name__} ({core.family}), {cfg.DATASETS.TEST[0]}, first input "
          f"{ {k: tuple(v.shape) for k, v in zip(core.input_names, inputs)} }, torch threads {threads}")

    ts_path = export_torchscript(core, inputs, os.path.join(work, "model.torchscript.pt"))
    onnx_path = export_onnx(core, inputs, os.path.join(work, "model.onnx"))
    qmodel = quantize_model(copy.deepcopy(model), "dynamic").eval()
    qcore = build_core(qmodel)
    qts_path = export_torchscript(qcore, inputs, os.path.join(work, "model_int8.torchscript.pt"))
    runners = {"eager": core, "torchscript": TorchScriptRunner(ts_path),
               "onnxruntime": OnnxRunner(onnx_path, core.input_names, threads=threads),
               "int8 eager": qcore, "int8 torchscript": TorchScriptRunner(qts_path)}
    variants = {"eager": model, **{k: DeployedModel(qcore if k.startswith("int8") else core, r)
                                   for k, r in runners.items() if k != "eager"}}
    if args.prune_amount:
        pmodel = copy.deepcopy(model)
        stats = prune_global_l1(pmodel, args.prune_amount)
        variants[f"pruned {args.prune_amount:g}"] = pmodel.eval()
        print(f"pruned copy: {100 * stats['pruned_fraction']:.1f}% of the Linear / Conv weights zero")
    sizes = {"eager": state_dict_bytes(model), "torchscript": os.path.getsize(ts_path),
             "onnxruntime": os.path.getsize(onnx_path), "int8 eager": state_dict_bytes(qmodel),
             "int8 torchscript": os.path.getsize(qts_path)}

    with torch.no_grad():
        reference = core(*inputs)
        diffs = {k: max_abs_diff(r(*inputs), reference) for k, r in runners.items()}
        latency = {k: median_ms(lambda r=r: r(*inputs), args.iters, args.warmup) for k, r in runners.items()}
        latency_full = median_ms(lambda: model([x]), args.iters, args.warmup)
        cuda: Dict[str, float] = {}
        if torch.cuda.is_available():
            gpu_inputs = [t.cuda() for t in inputs]
            gcore = build_core(copy.deepcopy(model).cuda().eval())
            gts = torch.jit.load(ts_path, map_location="cuda")
            cuda["eager"] = median_ms(lambda: gcore(*gpu_inputs), args.iters, args.warmup, torch.cuda.synchronize)
            cuda["torchscript"] = median_ms(lambda: gts(*gpu_inputs), args.iters, args.warmup, torch.cuda.synchronize)

    accuracy: Dict[str, Dict[str, float]] = {}
    if not args.skip_accuracy:
        for k, m in variants.items():
            t0 = time.perf_counter()
            accuracy[k] = _accuracy(cfg, m, k.replace(" ", "_"))
            print(f"  evaluated {k} in {time.perf_counter() - t0:.1f} s")

    rows: List[dict] = []
    base = latency["eager"]
    print(f"\n{'variant':<18} {'size KiB':>10} {'CPU ms':>9} {'vs eager':>9} {'max |diff| vs fp32 eager':>25}"
          + (f" {'CUDA ms':>9}" if cuda else ""))
    for k in runners:
        rows.append({"variant": k, "bytes": sizes[k], "cpu_ms": latency[k], "speedup": base / latency[k],
                     "max_abs_diff": diffs[k], "cuda_ms": cuda.get(k)})
        print(f"{k:<18} {sizes[k] / 1024:>10.1f} {latency[k]:>9.2f} {base / latency[k]:>8.2f}x {diffs[k]:>25.3g}"
              + (f" {cuda[k]:>9.2f}" if k in cuda else ("" if not cuda else f" {'-':>9}")))
    print(f"eager model forward (pre + core + post): {latency_full:.2f} ms")
    if accuracy:
        # Headline keys that any variant scores above zero (a detector's relation recalls are all 0, for one).
        keys = [k for k in accuracy["eager"] if any(k.split("/")[-1] == h or k.endswith("/" + h) for h in HEADLINE)
                and any(res.get(k, 0.0) for res in accuracy.values())][:8]
        keys = keys or list(accuracy["eager"])[:6]
        print(f"\naccuracy on {cfg.DATASETS.TEST[0]} (change from eager in brackets)")
        print(f"{'variant':<18} " + " ".join(f"{k:>24}" for k in keys))
        for v, res in accuracy.items():
            cells = [f"{res.get(k, float('nan')):.4f}" + ("" if v == "eager" else
                                                          f" ({res.get(k, float('nan')) - accuracy['eager'][k]:+.4f})")
                     for k in keys]
            print(f"{v:<18} " + " ".join(f"{c:>24}" for c in cells))
    record = {"config": args.config_file, "weights": args.weights, "dataset": cfg.DATASETS.TEST[0],
              "family": core.family, "torch_threads": threads, "iters": args.iters, "warmup": args.warmup,
              "rows": rows, "eager_forward_ms": latency_full, "accuracy": accuracy}
    with open(os.path.join(work, "deploy.json"), "w") as f:
        json.dump(record, f, indent=2)
    print(f"\nwritten: {os.path.join(work, 'deploy.json')}")
    return 0
