#!/usr/bin/env python
"""Convert a checkpoint released by an upstream codebase into one sgg's ``MODEL.WEIGHTS`` loads.

    python tools/convert_checkpoint.py --from speaq speaq_vg.pth speaq_vg_sgg.pth
    python tools/train_net.py --config-file configs/vg/speaq.yaml --eval-only MODEL.WEIGHTS speaq_vg_sgg.pth
    # a model made of two released files (STTran's relation model + its Action Genome detector) -> one checkpoint
    python tools/convert_checkpoint.py --from sttran sttran_predcls.tar sttran_predcls.pth \
        --merge ag_detector faster_rcnn_ag.pth

The file is read safely (``torch.load(weights_only=True)``; argparse options and numpy arrays beside the weights are
allowed, any other pickled object is refused). Every source key the converter could not map is printed, then a
summary line. A file of another kind, an unreadable file or an existing DST (without ``--overwrite``) is one
``error:`` line and exit code 2. See docs/checkpoints.md for each converter's source files and configs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sgg.checkpoint import CheckpointError  # noqa: E402
from sgg.checkpoint.convert import CHECKPOINT_CONVERTERS, convert_checkpoint, save_converted  # noqa: E402
from sgg.utils.errors import run_cli  # noqa: E402

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (``--from`` choices: the registered converters)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="kind", required=True, choices=CHECKPOINT_CONVERTERS.names(),
                        help="which upstream codebase wrote SRC")
    parser.add_argument("src", metavar="SRC", help="the upstream checkpoint (.pth / .tar / .pt)")
    parser.add_argument("dst", metavar="DST.pth", help="where the converted sgg checkpoint is written")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    parser.add_argument("--merge", nargs=2, action="append", default=[], metavar=("KIND", "FILE"),
                        help="also convert FILE with converter KIND and write its tensors into DST (repeatable; a "
                             "name produced twice is an error)")
    return parser


def _run(args) -> int:
    result = convert_checkpoint(args.kind, args.src)
    for kind, path in args.merge:
        if kind not in CHECKPOINT_CONVERTERS:
            raise CheckpointError(f"--merge {kind}: no such converter (choose from "
                                  f"{', '.join(sorted(CHECKPOINT_CONVERTERS.names()))}).")
        extra = convert_checkpoint(kind, path)
        clash = sorted(set(extra.state_dict) & set(result.state_dict))
        if clash:
            raise CheckpointError(f"--merge {kind} '{path}' produces names the other files already gave "
                                  f"({', '.join(clash[:3])}); merge files of different parts of the model.")
        result.state_dict.update(extra.state_dict)
        result.unmapped += [f"{path}: {k}" for k in extra.unmapped]
        result.notes += [f"{kind}: {n}" for n in extra.notes]
    for key in result.unmapped:
        print(f"unmapped: {key}")
    for note in result.notes:
        print(f"note: {note}")
    save_converted(result, args.dst, converter=args.kind, source=args.src, overwrite=args.overwrite)
    print(f"converted {len(result.state_dict)} tensors from '{args.src}' (--from {args.kind}) to '{args.dst}'; "
          f"{len(result.unmapped)} source key(s) unmapped.")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code (0 written, 2 user error)."""
    return run_cli(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
