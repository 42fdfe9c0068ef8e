#!/usr/bin/env python
"""Export a trained sgg model to TorchScript / ONNX, and write pruned or dynamically quantized checkpoints.

    python tools/export_model.py --config-file CFG --format torchscript --output DIR MODEL.WEIGHTS W
    python tools/export_model.py --config-file CFG --format onnx --output DIR MODEL.WEIGHTS W
    python tools/export_model.py --config-file CFG --quantize dynamic --output DIR MODEL.WEIGHTS W
    python tools/export_model.py --config-file CFG --prune l1 --amount 0.3 [--finetune-iters N] --output DIR \\
        MODEL.WEIGHTS W

What is exported per family (the tensor-in / tensor-out core; the rest stays Python in ``sgg.export``):
docs/deploy.md. The graph is traced on the first input of ``DATASETS.TEST[0]`` and checked against the eager core on
that input and the second one (a different size where the data has one): ``DIR/export.json`` records the files,
inputs, outputs, what is exported and the largest difference (must be <= 1e-4). ONNX files are checked with
``onnx.checker`` and run with ONNX Runtime (the ``deploy`` extra).

``--prune l1 --amount A``: global unstructured L1 pruning of the Linear / Conv weights, made permanent, optionally
fine-tuned for ``--finetune-iters`` steps of the normal trainer with the pruned weights held at zero.
``--quantize dynamic``: int8 dynamic quantization of ``nn.Linear`` (CPU). Either writes ``DIR/model_final.pth`` and
``DIR/config.yaml`` (``MODEL.QUANTIZATION`` recorded), which ``tools/train_net.py --eval-only`` evaluates:

    python tools/train_net.py --config-file DIR/config.yaml --eval-only MODEL.WEIGHTS DIR/model_final.pth
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.checkpoint import DetectionCheckpointer  # noqa: E402
from sgg.config import get_cfg  # noqa: E402
from sgg.config.config import import_user_modules  # noqa: E402
from sgg.data import DatasetCatalog, build_test_loader  # noqa: E402
from sgg.engine import DefaultTrainer  # noqa: E402
from sgg.engine.defaults import resolve_run_config_file, save_config  # noqa: E402
from sgg.export import (  # noqa: E402
    FORMATS,
    PRUNE_METHODS,
    ExportError,
    apply_zero_masks,
    build_core,
    describe,
    export_onnx,
    export_torchscript,
    load_runner,
    make_pruning_permanent,
    max_abs_diff,
    prune_global_l1,
    quantize_model,
    require_onnx,
    sparsity,
)
from sgg.modeling import build_model  # noqa: E402
from sgg.modeling.build import resolve_device  # noqa: E402
from sgg.modeling.quantization import QUANTIZATION_MODES, check_quantization_device  # noqa: E402
from sgg.utils.errors import run_cli  # noqa: E402
from sgg.utils.logger import setup_logger  # noqa: E402

__all__ = ["parse_args", "main", "cli", "run", "TOLERANCE", "FILE_NAMES"]

logger = logging.getLogger("sgg.export_model")

TOLERANCE = 1e-4  # fp32: largest |exported - eager| accepted on the check inputs
FILE_NAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of ``tools/export_model.py`` (values are checked in :func:`run`, so a bad one is one error line)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the model's config (e.g. OUTPUT_DIR/config.yaml)")
    parser.add_argument("--format", default="", help=f"export format: {' or '.join(FORMATS)}")
    parser.add_argument("--output", required=True, help="folder for the exported files / checkpoint")
    parser.add_argument("--quantize", default="", help="'dynamic': int8 dynamic quantization of nn.Linear (CPU)")
    parser.add_argument("--prune", default="", help="'l1': global unstructured L1 pruning (needs --amount)")
    parser.add_argument("--amount", type=float, default=None, help="fraction of Linear / Conv weights to prune")
    parser.add_argument("--finetune-iters", type=int, default=0, help="trainer steps after pruning (0 = none)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS W")
    return parser.parse_args(argv)


def _check_args(args) -> None:
    if args.format and args.format not in FORMATS:
        raise ExportError(f"--format '{args.format}' is not an export format; choose one of {', '.join(FORMATS)}.")
    if args.quantize and args.quantize not in QUANTIZATION_MODES:
        raise ExportError(f"--quantize '{args.quantize}' is not supported; the one mode is 'dynamic'.")
    if args.prune and args.prune not in PRUNE_METHODS:
        raise ExportError(f"--prune '{args.prune}' is not supported; the one method is 'l1'.")
    if args.prune and args.amount is None:
        raise ExportError("--prune l1 needs --amount A (the fraction of Linear / Conv weights to zero, e.g. 0.3).")
    if args.amount is not None and not args.prune:
        raise ExportError("--amount is only used with --prune l1.")
    if args.finetune_iters < 0 or (args.finetune_iters and not args.prune):
        raise ExportError("--finetune-iters N (N >= 1) fine-tunes a pruned model; give it with --prune l1.")
    if not (args.format or args.quantize or args.prune):
        raise ExportError("Nothing to do: give --format torchscript|onnx, --quantize dynamic and/or --prune l1.")
    if args.format == "onnx" and args.quantize:
        raise ExportError("ONNX export of a dynamically quantized model is not supported (torch's exporter has no "
                          "ONNX form of its int8 Linear); export it with --format torchscript.")
    if len(args.opts) % 2:
        raise ExportError(f"Config overrides come in KEY VALUE pairs; got {args.opts}.")


def _config(args):
    cfg = get_cfg()
    cfg.merge_from_file(resolve_run_config_file(args.config_file))
    cfg.merge_from_list(args.opts)
    cfg.OUTPUT_DIR = os.path.abspath(args.output)
    import_user_modules(cfg)
    if not cfg.MODEL.WEIGHTS:
        raise ExportError("MODEL.WEIGHTS is required: add MODEL.WEIGHTS path/to/model_final.pth (the trained "
                          "checkpoint to export).")
    if not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise ExportError(f"MODEL.WEIGHTS '{cfg.MODEL.WEIGHTS}' does not exist; point it at a trained checkpoint.")
    return cfg


def _load_model(cfg):
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    return model.eval()


def _finetune(cfg, weights: str, iters: int):
    """``iters`` steps of the normal trainer from the pruned ``weights``, zero weights masked so they stay zero;
    checkpoints in ``OUTPUT_DIR/finetune``. Returns the fine-tuned model with the pruning made permanent."""
    ft = cfg.clone()
    ft.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "finetune")
    ft.MODEL.WEIGHTS = weights
    ft.SOLVER.MAX_ITER = iters
    ft.SOLVER.STEPS = ()
    ft.SOLVER.WARMUP_ITERS = 0
    ft.SOLVER.LR_SCHEDULER_NAME = "Constant"
    ft.SOLVER.CHECKPOINT_PERIOD = iters
    ft.TEST.EVAL_PERIOD = 0
    if "STAGE2" in ft.SOLVER:
        ft.SOLVER.STAGE2.ENABLED = False
    ft.freeze()
    os.makedirs(ft.OUTPUT_DIR, exist_ok=True)
    trainer = DefaultTrainer(ft)
    trainer.resume_or_load(resume=False)
    masked = apply_zero_masks(trainer._raw_model)
    logger.info("Fine-tuning the pruned model for %d iterations (%d layers masked) in %s", iters, masked,
                ft.OUTPUT_DIR)
    trainer.train()
    model = trainer._raw_model
    make_pruning_permanent(model)
    return model.eval()


def _examples(cfg, core, n: int = 2):
    """The first ``n`` inputs of ``DATASETS.TEST[0]`` as the core takes them (different sizes where the data has)."""
    if not cfg.DATASETS.TEST:
        raise ExportError("DATASETS.TEST is empty: the export traces and checks the graph on its first inputs.")
    loader = build_test_loader(cfg, cfg.DATASETS.TEST[0])
    found = []
    for batch in loader:
        for x in batch:
            try:
                found.append((x, core.inputs(x)))
            except ExportError as e:  # e.g. a video without any (person, object) pair
                logger.info("Skipping a check input: %s", e)
            if len(found) == n:
                return found
    if not found:
        raise ExportError(f"No input of {cfg.DATASETS.TEST[0]} can be fed to the {core.family} core.")
    return found


def _export(cfg, model, fmt: str, output: str) -> dict:
    core = build_core(model)
    examples = _examples(cfg, core)
    inputs = examples[0][1]
    path = os.path.join(output, FILE_NAMES[fmt])
    t0 = time.perf_counter()
    (export_onnx if fmt == "onnx" else export_torchscript)(core, inputs, path)
    seconds = time.perf_counter() - t0
    runner = load_runner(fmt, path, core)
    diffs = []
    for _, x in examples:
        with_torch = core(*x)
        diffs.append(max_abs_diff(runner(*x), with_torch))
    record = {"family": core.family, "format": fmt, "file": os.path.basename(path), "bytes": os.path.getsize(path),
              "architecture": type(model).__name__, "quantization": cfg.MODEL.QUANTIZATION,
              "inputs": describe(core, inputs), "outputs": list(core.output_names), "dynamic_axes":
              {k: {str(d): n for d, n in v.items()} for k, v in core.dynamic_axes.items()},
              "exported": core.exported, "python": core.python, "export_seconds": round(seconds, 2),
              "max_abs_diff": diffs, "tolerance": TOLERANCE}
    with open(os.path.join(output, "export.json"), "w") as f:
        json.dump(record, f, indent=2)
    worst = max(diffs)
    if not worst <= TOLERANCE:
        raise ExportError(f"The exported {fmt} graph differs from the eager core by {worst:.3g} (> {TOLERANCE}) on the "
                          f"check inputs of {cfg.DATASETS.TEST[0]}; see {os.path.join(output, 'export.json')}.")
    logger.info("Exported the %s core to %s (%.1f KiB, %.1f s); max |exported - eager| on %d inputs: %.3g", core.family,
                path, os.path.getsize(path) / 1024, seconds, len(diffs), worst)
    print(f"{fmt}: {path} ({os.path.getsize(path)} bytes); max abs diff vs eager {worst:.3g} on {len(diffs)} inputs")
    return record


def run(args) -> int:
    """The tool (see the module docstring); user errors are one ``error:`` line (:func:`main`)."""
    _check_args(args)
    if args.format == "onnx":
        require_onnx()
    cfg = _config(args)
    output = cfg.OUTPUT_DIR
    if (args.quantize or args.prune) and os.path.exists(os.path.join(output, "model_final.pth")):
        raise ExportError(f"--output '{output}' already holds a model_final.pth; choose a new folder (nothing was "
                          "overwritten).")
    os.makedirs(output, exist_ok=True)
    setup_logger(output, name="sgg")
    DatasetCatalog.configure(cfg)
    if args.quantize:
        check_quantization_device(args.quantize, resolve_device(cfg.MODEL.DEVICE))
    model = _load_model(cfg)
    cfg.defrost()
    if args.prune:
        stats = prune_global_l1(model, args.amount)
        if args.finetune_iters:
            pruned = os.path.join(output, "model_pruned.pth")
            DetectionCheckpointer(model, output).save("model_pruned")
            model = _finetune(cfg, pruned, args.finetune_iters)
            stats = sparsity(model)
        print(f"pruned: {100 * stats['pruned_fraction']:.1f}% of {int(stats['prunable'])} Linear / Conv weights are "
              "zero")
    if args.quantize:
        quantize_model(model, args.quantize)
        cfg.MODEL.QUANTIZATION = args.quantize
    if args.quantize or args.prune:
        DetectionCheckpointer(model, output).save("model_final")
        cfg.MODEL.WEIGHTS = os.path.join(output, "model_final.pth")
        save_config(cfg)
        print(f"checkpoint: {cfg.MODEL.WEIGHTS} ({os.path.getsize(cfg.MODEL.WEIGHTS)} bytes); evaluate it with "
              f"python tools/train_net.py --config-file {os.path.join(output, 'config.yaml')} --eval-only "
              f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}")
    if args.format:
        _export(cfg, model, args.format, output)
    return 0


def main(argv=None) -> int:
    """Run the tool; returns the exit code (2 with one ``error:`` line for a user error)."""
    return run_cli(run, parse_args(argv))


def cli() -> None:
    """Console-script entry point (``sgg-export``)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
