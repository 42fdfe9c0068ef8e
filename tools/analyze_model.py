#!/usr/bin/env python
"""Parameter counts and FLOPs of any registered model, built from a config (no weights are loaded, nothing trained).

    python tools/analyze_model.py --config-file configs/tvsum/keyframe_effnet.yaml [--depth 2] [KEY VALUE ...]
    python tools/analyze_model.py --config-file configs/quick/sttran_demo.yaml --flops [--dataset NAME]

Prints total / trainable / frozen parameters as built (e.g. with a frozen backbone), the trainable count once
``SOLVER.STAGE2.UNFREEZE`` is applied (when ``SOLVER.STAGE2.ENABLED``), and a table per module down to ``--depth``
levels of the module tree. Buffers (BatchNorm statistics, pixel mean/std) are not parameters and are not counted.

``--flops`` also counts the inference FLOPs of the first test batch of ``--dataset`` (default ``DATASETS.TEST[0]``)
with fvcore's ``FlopCountAnalysis`` (one multiply-add = one flop; operators fvcore has no handle for are listed, not
counted; see :mod:`sgg.utils.analysis`). Models whose control flow depends on the data are counted along the path
that batch takes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.config import get_cfg  # noqa: E402
from sgg.data.build import build_test_loader  # noqa: E402
from sgg.data.catalog import DatasetCatalog  # noqa: E402
from sgg.modeling import build_model  # noqa: E402
from sgg.utils.analysis import count_flops  # noqa: E402
from sgg.utils.errors import run_cli  # noqa: E402

__all__ = ["count_parameters", "module_table", "stage2_trainable", "print_flops", "main"]


def count_parameters(module: torch.nn.Module) -> Tuple[int, int]:
    """``(total, trainable)`` parameter counts of ``module`` (shared tensors counted once)."""
    seen, total, trainable = set(), 0, 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def module_table(model: torch.nn.Module, depth: int = 1) -> List[Tuple[str, int, int]]:
    """``[(name, total, trainable)]`` for every module at most ``depth`` levels below the root, in tree order."""
    rows = []

    def visit(module, prefix, level):
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            total, trainable = count_parameters(child)
            if total:
                rows.append((full, total, trainable))
                if level < depth:
                    visit(child, full, level + 1)

    visit(model, "", 1)
    return rows


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def stage2_trainable(model: torch.nn.Module, prefixes: Sequence[str]) -> int:
    """Trainable parameters once the parameters under ``prefixes`` are unfrozen (the engine's stage-2 rule)."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad or _matches(n, prefixes))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="model config (YAML)")
    parser.add_argument("--depth", type=int, default=1, help="levels of the module tree to list (default 1)")
    parser.add_argument("--flops", action="store_true", help="also count FLOPs on the first test batch (fvcore)")
    parser.add_argument("--dataset", default="", help="--flops: dataset of that batch (default DATASETS.TEST[0])")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run_cli(_run, args)


def _run(args) -> int:
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    model = build_model(cfg)
    total, trainable = count_parameters(model)
    print(f"model: {cfg.MODEL.META_ARCHITECTURE} ({args.config_file})")
    print(f"total parameters:     {total:>12,d}")
    print(f"trainable parameters: {trainable:>12,d}")
    print(f"frozen parameters:    {total - trainable:>12,d}")
    if cfg.SOLVER.STAGE2.ENABLED:
        print(f"trainable in stage 2: {stage2_trainable(model, cfg.SOLVER.STAGE2.UNFREEZE):>12,d} "
              f"(after unfreezing {list(cfg.SOLVER.STAGE2.UNFREEZE)})")
    rows = module_table(model, args.depth)
    width = max([len("module")] + [len(r[0]) for r in rows])
    print(f"\n{'module':<{width}} {'parameters':>12} {'trainable':>12}")
    for name, n_total, n_trainable in rows:
        print(f"{name:<{width}} {n_total:>12,d} {n_trainable:>12,d}")
    if args.flops:
        print_flops(cfg, model, args.dataset)
    return 0


def print_flops(cfg, model: torch.nn.Module, dataset: str = "") -> dict:
    """FLOPs of ``model`` on the first test batch of ``dataset`` (default ``DATASETS.TEST[0]``), printed; returned."""
    name = dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    if not name:
        raise ValueError("--flops needs an input: DATASETS.TEST is empty; pass --dataset NAME.")
    DatasetCatalog.configure(cfg)
    batch = next(iter(build_test_loader(cfg, name)))
    result = count_flops(model.eval(), batch)
    print(f"\nFLOPs on the first batch of {name} (fvcore, 1 multiply-add = 1 flop): {result['total'] / 1e9:,.3f} G")
    for module, flops in sorted(result["by_module"].items(), key=lambda kv: -kv[1]):
        print(f"  {module:<30} {flops / 1e9:>12,.3f} G")
    if result["unsupported"]:
        print("  not counted (no fvcore handle): " + ", ".join(sorted(result["unsupported"])))
    return result


if __name__ == "__main__":
    sys.exit(main())
