#!/usr/bin/env python
"""Re-evaluate a saved scene-graph predictions file without rerunning the model.

``tools/train_net.py --eval-only`` (with ``TEST.SAVE_PREDICTIONS True``) writes ``OUTPUT_DIR/inference/<dataset>/
predictions.pth``; this tool evaluates it again with any metric options and prints the results table and the
``copypaste:`` lines, and writes ``results.json`` (plus the per-predicate table and bar chart)::

    python tools/evaluate_predictions.py --predictions output/inference/vg_test/predictions.pth
    python tools/evaluate_predictions.py --predictions P.pth --iou-threshold 0.7 --ks 20 50 \\
        --zeroshot-file datasets/vg/zeroshot_triplets.npy --output-dir output/reeval_iou07

Video SGG runs (Action Genome, ``video_scene_graph`` evaluator) write the same file with their per-frame
predictions; it is re-evaluated with STTran's protocol and the video options (constraints, semi threshold, mR
variant, branches; default: those the run used)::

    python tools/evaluate_predictions.py --predictions output/sttran/inference/ag_test/predictions.pth \
        --constraints with no --mr-variant stket --iou-threshold 0.7

A hand-made file holding a list of raw per-image prediction dicts (``image_id``, ``boxes``, ``labels``, ``scores``,
``rel_pairs``, ``rel_scores (P, num_predicates)``) is accepted too; then ``--dataset`` and ``--mode`` are required.

The GT is read with the dataset options of the run that wrote the file (``DATASETS.VG.*`` filters, roots ...; sgg
records them in the file), or with those of ``--config-file CFG [KEY VALUE ...]`` when given; a file without
recorded options (older or hand-made) uses the defaults, and the tool says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sgg.utils.errors import run_cli  # noqa: E402

__all__ = ["build_parser", "main"]

logger = logging.getLogger("sgg.tools.evaluate_predictions")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="a predictions.pth written by the evaluator")
    parser.add_argument("--dataset", default=None,
                        help="DatasetCatalog name whose GT is used (default: the one recorded in the file)")
    parser.add_argument("--mode", default=None, choices=["predcls", "sgcls", "sgdet"],
                        help="evaluation mode (default: the one recorded in the file)")
    parser.add_argument("--ks", type=int, nargs="+", default=None,
                        help="the K of every @K metric (default: those of the saved evaluation, else 20 50 100)")
    parser.add_argument("--iou-threshold", type=float, default=None,
                        help="box IoU for a match (default: the saved evaluation's, else 0.5)")
    parser.add_argument("--zeroshot-file", default="", help="(T,3) [subject, object, predicate] triplets for zR@K")
    parser.add_argument("--num-predicates", type=int, default=None,
                        help="default: the dataset metadata's predicate_classes length")
    parser.add_argument("--no-box-ap", action="store_true", help="skip pycocotools box AP")
    parser.add_argument("--output-dir", default=None,
                        help="where results.json and the per-predicate table go (default: <predictions dir>/reeval)")
    video = parser.add_argument_group("video SGG files (Action Genome)")
    video.add_argument("--constraints", nargs="+", default=None, choices=["with", "semi", "no"],
                       help="default: the saved evaluation's TEST.VIDEO_RELATION.CONSTRAINTS")
    video.add_argument("--semi-threshold", type=float, default=None, help="default: the saved evaluation's")
    video.add_argument("--mr-variant", default=None, choices=["tempura", "stket"], help="default: the saved one")
    video.add_argument("--branches", nargs="*", default=None,
                       help="prediction branches to score too (default: the saved evaluation's)")
    parser.add_argument("--config-file", default="",
                        help="read the GT with this config's dataset options (default: the ones recorded in the file)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of --config-file")
    return parser


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN
    return value


def _apply_dataset_options(args, data: dict, dataset: str) -> None:
    """Fix the dataset options the GT is read with: ``--config-file``, else the file's record, else the defaults."""
    from sgg.config import get_cfg
    from sgg.data.catalog import DatasetCatalog

    if args.config_file:
        cfg = get_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        DatasetCatalog.configure(cfg)
        logger.info("GT of '%s' read with the dataset options of %s.", dataset, args.config_file)
        return
    if args.opts:
        raise ValueError(f"KEY VALUE overrides ({' '.join(args.opts)}) need --config-file.")
    recorded = data.get("dataset_options")
    if recorded:
        for group, values in recorded.items():
            DatasetCatalog.set_options(group, **values)
        logger.info("GT of '%s' read with the dataset options recorded in the file: %s", dataset, recorded)
        return
    group = DatasetCatalog.option_group_of(dataset)
    if group:
        logger.warning("'%s' records no dataset options (an older or hand-made file): the GT of '%s' is read with "
                       "the defaults %s. Pass --config-file CFG to read it as a run did.", args.predictions, dataset,
                       dict(DatasetCatalog.options(group)))


def _write_results(results: dict, output_dir: str) -> None:
    from sgg.evaluation.testing import print_csv_format

    print(print_csv_format(results))
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "results.json")
    with open(path, "w") as f:
        json.dump(_json_safe(results), f, indent=2)
    print(f"Wrote {path}")


def _output_dir(args) -> str:
    return args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.predictions)), "reeval")


def _evaluate_videos(args, data: dict) -> dict:
    """Re-evaluate a video SGG predictions file (the options default to those the run evaluated with)."""
    from sgg.evaluation.video_scene_graph import VideoSceneGraphEvaluator, load_video_predictions_file

    data = load_video_predictions_file(args.predictions, data)
    dataset = args.dataset or data["dataset"]
    if args.mode and args.mode != data["mode"]:
        raise ValueError(f"'{args.predictions}' was saved in {data['mode']} mode; it cannot be evaluated as "
                         f"{args.mode} (rerun inference with TEST.RELATION.MODE instead).")
    if args.zeroshot_file or args.num_predicates or args.no_box_ap:
        raise ValueError("--zeroshot-file / --num-predicates / --no-box-ap apply to image SGG files only; this is a "
                         "video SGG predictions file.")
    _apply_dataset_options(args, data, dataset)
    saved = data.get("evaluation", {})

    def pick(value, key, default):
        return value if value is not None else saved.get(key, default)

    evaluator = VideoSceneGraphEvaluator(
        dataset_name=dataset, output_dir=_output_dir(args), mode=data["mode"],
        constraints=tuple(pick(args.constraints, "constraints", ("with", "semi", "no"))),
        ks=tuple(pick(args.ks, "ks", (10, 20, 50))), iou_threshold=pick(args.iou_threshold, "iou_threshold", 0.5),
        semi_threshold=pick(args.semi_threshold, "semi_threshold", 0.9),
        branches=tuple(pick(args.branches, "branches", ())), mr_variant=pick(args.mr_variant, "mr_variant", "tempura"),
        distributed=False)
    for video_id, frames in data["videos"].items():
        evaluator.add_video_predictions(video_id, frames)
    results = evaluator.evaluate()
    _write_results(results, _output_dir(args))
    return results


def _evaluate(args) -> dict:
    import sgg.data  # noqa: F401  (registers the built-in datasets)
    from sgg.evaluation.scene_graph import (
        RANKED_FORMAT,
        SceneGraphEvaluator,
        load_predictions_file,
        read_predictions_payload,
    )
    from sgg.evaluation.video_scene_graph import VIDEO_PREDICTIONS_FORMAT

    payload = read_predictions_payload(args.predictions)
    if isinstance(payload, dict) and payload.get("format") == VIDEO_PREDICTIONS_FORMAT:
        return _evaluate_videos(args, payload)
    if any(v is not None for v in (args.constraints, args.semi_threshold, args.mr_variant, args.branches)):
        raise ValueError("--constraints / --semi-threshold / --mr-variant / --branches apply to video SGG files only; "
                         f"'{args.predictions}' holds image SGG predictions.")
    data = load_predictions_file(args.predictions, payload)
    dataset = args.dataset or data.get("dataset")
    if not dataset:
        raise ValueError(f"'{args.predictions}' records no dataset name; pass --dataset NAME.")
    _apply_dataset_options(args, data, dataset)
    ranked = data.get("format") == RANKED_FORMAT
    mode = args.mode or data.get("mode")
    if not mode:
        raise ValueError(f"'{args.predictions}' records no mode; pass --mode predcls|sgcls|sgdet.")
    if ranked and data.get("mode") and mode != data["mode"]:
        raise ValueError(f"'{args.predictions}' was saved in {data['mode']} mode; it cannot be evaluated as {mode} "
                         "(rerun inference with TEST.RELATION.MODE instead).")
    ks = tuple(args.ks or data.get("ks") or (20, 50, 100))
    output_dir = _output_dir(args)
    iou_threshold = 0.5 if args.iou_threshold is None else args.iou_threshold
    evaluator = SceneGraphEvaluator(
        dataset_name=dataset, output_dir=output_dir, mode=mode, ks=ks, iou_threshold=iou_threshold,
        topk=max(ks), zeroshot_file=args.zeroshot_file, save_predictions=False, box_ap=not args.no_box_ap,
        num_predicates=args.num_predicates, distributed=False,
    )
    for record in data["predictions"]:
        if ranked:
            evaluator.add_ranked_prediction(record["image_id"], record)
        else:
            evaluator.add_prediction(record["image_id"], record)
    results = evaluator.evaluate()
    _write_results(results, output_dir)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    sgg_logger = logging.getLogger("sgg")
    handler = None
    if not sgg_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%H:%M:%S"))
        sgg_logger.addHandler(handler)
        sgg_logger.setLevel(logging.INFO)
    try:
        return run_cli(_evaluate_quietly, args)  # user errors: one "error:" line, exit code 2
    finally:
        if handler is not None:
            sgg_logger.removeHandler(handler)


def _evaluate_quietly(args) -> int:
    _evaluate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
