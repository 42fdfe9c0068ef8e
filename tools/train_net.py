#!/usr/bin/env python
"""The one entry point: train or evaluate any sgg model from a config.

Examples::

    python tools/train_net.py --config-file configs/quick/speaq_demo.yaml
    python tools/train_net.py --config-file configs/speaq_multi_dataset.yaml --num-gpus 4 OUTPUT_DIR out/x
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/x/model_final.pth
    python tools/train_net.py --config-file CFG --resume            # continue OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --list                               # every registered part and dataset
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.engine import default_argument_parser, default_main, launch_cli, maybe_list_registries  # noqa: E402


def cli(argv=None) -> int:
    """Parse arguments, run :func:`sgg.engine.default_main` on the workers; returns the exit code."""
    args = default_argument_parser(__doc__).parse_args(argv)
    if maybe_list_registries(args):
        return 0
    return launch_cli(default_main, args)


if __name__ == "__main__":
    sys.exit(cli())
