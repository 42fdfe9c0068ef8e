#!/usr/bin/env python
"""The one entry point: train or evaluate any sgg model from a config.

Examples::

    python tools/train_net.py --config-file configs/quick/speaq_demo.yaml
    python tools/train_net.py --config-file configs/speaq_multi_dataset.yaml --num-gpus 4 OUTPUT_DIR out/x
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/x/model_final.pth
    python tools/train_net.py --config-file CFG --resume            # continue OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --list                               # every registered part and dataset
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.checkpoint import DetectionCheckpointer  # noqa: E402
from sgg.config import ConfigError, get_cfg, import_user_modules  # noqa: E402
from sgg.data.catalog import DatasetCatalog  # noqa: E402
from sgg.engine import (  # noqa: E402
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    launch,
    maybe_list_registries,
)
from sgg.engine.output_dir import release_output_dir_lock  # noqa: E402
from sgg.evaluation import verify_results  # noqa: E402
from sgg.utils import comm  # noqa: E402
from sgg.utils.errors import USER_ERROR_TYPES, run_cli  # noqa: E402

logger = logging.getLogger("sgg")

# Errors whose message says everything a user needs: printed as one line, no traceback (kept for tools/train.py).
USER_ERRORS = USER_ERROR_TYPES


class ExpectedResultsNotMet(SystemExit):
    """--eval-only results missed TEST.EXPECTED_RESULTS."""


def setup(args):
    """Config from defaults + file + overrides, frozen; then the standard run setup."""
    import sgg.data  # noqa: F401  (registers datasets, mappers, samplers)
    import sgg.evaluation  # noqa: F401
    import sgg.modeling  # noqa: F401

    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    import_user_modules(cfg)
    DatasetCatalog.configure(cfg)  # dataset options (DATASETS.VG.*, DATASETS.AG.*) before anything reads a dataset
    default_setup(cfg, args)
    return cfg


def main(args):
    """One worker's run (train, or evaluate with --eval-only); OUTPUT_DIR's lock is released when it ends."""
    try:
        return _main(args)
    finally:
        release_output_dir_lock()


def _main(args):
    cfg = setup(args)
    if args.eval_only:
        model = DefaultTrainer.build_model(cfg)
        if not cfg.MODEL.WEIGHTS and getattr(model, "requires_weights", True) and any(True for _ in model.parameters()):
            raise ConfigError("--eval-only needs MODEL.WEIGHTS (a checkpoint path), e.g. MODEL.WEIGHTS "
                              f"{os.path.join(cfg.OUTPUT_DIR, 'model_final.pth')}")
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, allow_partial=cfg.MODEL.ALLOW_PARTIAL_WEIGHTS).load(
            cfg.MODEL.WEIGHTS, checkpointables=[])
        results = DefaultTrainer.test(cfg, model)
        if comm.is_main_process() and not verify_results(cfg, results):
            raise ExpectedResultsNotMet(1)
        return results
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    if comm.is_main_process() and results is not None and cfg.TEST.EXPECTED_RESULTS:
        from sgg.evaluation.testing import flatten_results_dict  # noqa: F401

        if not verify_results(cfg, trainer.test(cfg, trainer.model)):
            raise ExpectedResultsNotMet(1)
    return results


def _launch(args) -> int:
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except ExpectedResultsNotMet:
        print("error: evaluation results do not meet TEST.EXPECTED_RESULTS (see the log above)", file=sys.stderr)
        return 1
    return 0


def cli(argv=None) -> int:
    """Parse arguments, launch workers, turn user errors into one-line messages; returns the exit code.

    User errors (:class:`sgg.utils.errors.SGGError` and the like), raised here, in ``--num-gpus`` workers or in
    DataLoader workers, print one ``error:`` line and return 2 (Ctrl-C: 130); ``SGG_DEBUG=1`` adds the traceback.
    """
    args = default_argument_parser(__doc__).parse_args(argv)
    if maybe_list_registries(args):
        return 0
    return run_cli(_launch, args)


if __name__ == "__main__":
    sys.exit(cli())
