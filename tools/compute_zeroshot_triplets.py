#!/usr/bin/env python
"""Compute the zero-shot triplets of a dataset: (subject label, object label, predicate) in the test GT, never in train.

The result is the (T, 3) file ``TEST.RELATION.ZEROSHOT_FILE`` reads (0-based, Scene-Graph-Benchmark's column
order), computed from the dataset's own splits rather than downloaded::

    python tools/compute_zeroshot_triplets.py --train vg_train --test vg_test --output datasets/vg/zeroshot_triplets.npy

Several ``--train`` names are united (e.g. ``--train vg_train vg_val`` to also count the validation images as seen).
The train split is read as its loader returns it (with the loader's filters). ``--from-sgb FILE`` instead converts
Scene-Graph-Benchmark's 1-based ``zeroshot_triplet.pytorch`` to this format.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sgg.utils.errors import run_cli  # noqa: E402

__all__ = ["build_parser", "main", "save_triplets"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="+", default=[], help="DatasetCatalog names of the training split(s)")
    parser.add_argument("--test", default=None, help="DatasetCatalog name of the evaluation split")
    parser.add_argument("--from-sgb", default=None,
                        help="convert Scene-Graph-Benchmark's 1-based zeroshot_triplet.pytorch instead")
    parser.add_argument("--output", required=True, help="output file: .npy, .pth or .txt")
    return parser


def save_triplets(path: str, triplets: np.ndarray) -> None:
    """Write (T, 3) int64 triplets as .npy, .pth (tensor) or .txt (one 'sub obj pred' row per line)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".npy"):
        np.save(path, triplets)
    elif path.endswith((".pth", ".pt")):
        import torch

        torch.save(torch.from_numpy(triplets), path)
    elif path.endswith(".txt"):
        np.savetxt(path, triplets, fmt="%d")
    else:
        raise ValueError(f"Output '{path}' must end in .npy, .pth or .txt.")


def _from_sgb(path: str) -> np.ndarray:
    from sgg.evaluation.scene_graph import load_zeroshot_triplets

    one_based = load_zeroshot_triplets(path)
    if one_based.size and one_based.min() < 1:
        raise ValueError(f"'{path}' holds label 0 (background in Scene-Graph-Benchmark): it is not a 1-based file.")
    return one_based - 1


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status (user errors: one ``error:`` line and 2)."""
    return run_cli(_run, build_parser().parse_args(argv))


def _run(args) -> int:
    if args.from_sgb:
        triplets = _from_sgb(args.from_sgb)
        print(f"Converted {len(triplets)} triplets from {args.from_sgb} (1-based -> 0-based).")
    else:
        if not args.train or not args.test:
            raise ValueError("Pass --train NAME [NAME ...] and --test NAME (or --from-sgb FILE).")
        import sgg.data  # noqa: F401  (registers the built-in datasets)
        from sgg.data.catalog import DatasetCatalog
        from sgg.evaluation.scene_graph import compute_zeroshot_triplets

        train = [d for name in args.train for d in DatasetCatalog.get(name)]
        test = DatasetCatalog.get(args.test)
        triplets = compute_zeroshot_triplets(train, test)
        num_test_rels = sum(len(d["relations"]) for d in test)
        print(f"{len(train)} train images ({', '.join(args.train)}), {len(test)} test images ({args.test}): "
              f"{len(triplets)} zero-shot triplet types out of {num_test_rels} test relations.")
    save_triplets(args.output, triplets.astype(np.int64))
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
