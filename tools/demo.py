#!/usr/bin/env python
"""Run a trained model on your own images or videos and draw what it sees.

    python tools/demo.py --config-file CFG --input IMG|VIDEO|DIR [--output DIR] [--topk 20 --threshold 0.3] \\
        MODEL.WEIGHTS W [KEY VALUE ...]

Image scene graph models (SpeaQ, IterativeSG, DETR + FREQ) write ``<name>.png`` per image: boxes, labelled relation
arrows and the scene graph beside the picture. Video scene graph models (STTran SGDet) sample each video at
``INPUT.VIDEO_FPS`` (default 2) and write ``<name>.mp4`` (every sampled frame drawn), ``<name>_timeline.png``
(each relation's score over time) and ``<name>_frame.png`` (the most telling frame); an image model given a video
runs on every sampled frame. All predicted triplets go to ``triplets.json`` and ``triplets.csv`` in ``--output``.
The keyframe model (KeyframeDetector) writes ``<name>_keyframes.png`` (scores over time, the keyframes) and
``keyframes.json`` / ``keyframes.csv``.

``--input DIR`` takes every image (image model) or video (video / keyframe model) in the folder. A bad input (not an
image, an unreadable video, a checkpoint of another model, a plain video for a PredCls model) stops with one line
``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.engine import InputError, Predictor, launch_cli, setup  # noqa: E402
from sgg.engine.predictor import input_kind  # noqa: E402
from sgg.structures.scene_graph import (  # noqa: E402
    KEYFRAME_COLUMNS,
    TRIPLET_COLUMNS,
    KeyframeResult,
    SceneGraph,
    result_rows,
    rows_to_csv,
)
from sgg.utils.visualizer import SceneGraphVisualizer  # noqa: E402

logger = logging.getLogger("sgg.tools.demo")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the config the model was trained with")
    parser.add_argument("--input", required=True, metavar="IMG|VIDEO|DIR", help="an image, a video or a folder")
    parser.add_argument("--output", default="output/demo", metavar="DIR",
                        help="where drawings and triplets.json / triplets.csv go (default output/demo)")
    parser.add_argument("--topk", type=int, default=20, help="triplets kept per image / frame (default 20)")
    parser.add_argument("--threshold", type=float, default=0.3,
                        help="minimum triplet score p(pred) x s_sub x s_obj, also for objects shown (default 0.3)")
    parser.add_argument("opts", nargs="*", help="config overrides: MODEL.WEIGHTS W [KEY VALUE ...]")
    args = parser.parse_intermixed_args(argv)
    if args.topk < 1:
        parser.error(f"--topk must be >= 1, got {args.topk}")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    # What sgg.engine.setup / launch_cli read: one worker, the demo folder as OUTPUT_DIR (config.yaml, log.txt).
    args.opts = list(args.opts or []) + ["OUTPUT_DIR", args.output]
    args.num_gpus, args.num_machines, args.machine_rank, args.dist_url = 1, 1, 0, "auto"
    return args


def list_inputs(path: str, task: str):
    """The files ``--input`` names: the file itself, or the folder's images (image model) / videos (others)."""
    if not os.path.exists(path):
        raise InputError(f"--input '{path}' does not exist.")
    if not os.path.isdir(path):
        return [path]
    wanted = ("image",) if task == "image" else ("video",)
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if input_kind(f) in wanted)
    if not files:
        raise InputError(f"--input folder '{path}' holds no {wanted[0]} file (extensions: "
                         f"{'jpg/png/...' if task == 'image' else 'mp4/webm/...'}).")
    return files


def _stem(path: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or "input"
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def main(args) -> dict:
    """Predict every input, draw it, write triplets.json / triplets.csv; returns the JSON document."""
    cfg = setup(args)
    predictor = Predictor(cfg, topk=args.topk, threshold=args.threshold)
    files = list_inputs(args.input, predictor.task)
    vis = SceneGraphVisualizer()
    out = args.output
    os.makedirs(out, exist_ok=True)
    entries, rows, used, drawn = [], [], set(), []
    start = time.perf_counter()
    for path in tqdm(files, desc="inputs", unit="input", disable=len(files) < 2):
        kind = input_kind(path) or ("image" if predictor.task == "image" else "video")
        stem = _stem(path, used)
        result = predictor(path)
        frames = None if isinstance(result, (SceneGraph, KeyframeResult)) else \
            (lambda it, name=stem: tqdm(it, desc=f"{name}: drawing frames", unit="frame"))
        drawn.extend(vis.save_result(result, out, stem, progress=frames))
        entries.append({"input": path, "kind": "keyframes" if predictor.task == "keyframe" else kind,
                        **result.to_dict()})
        rows.extend(result_rows(result, path))
    doc = {"config": args.config_file, "weights": cfg.MODEL.WEIGHTS, "model": cfg.MODEL.META_ARCHITECTURE,
           "topk": args.topk, "threshold": args.threshold, "inputs": entries}
    name = "keyframes" if predictor.task == "keyframe" else "triplets"
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(out, f"{name}.csv"), "w") as f:
        f.write(rows_to_csv(rows, KEYFRAME_COLUMNS if predictor.task == "keyframe" else TRIPLET_COLUMNS))
    what = "steps" if predictor.task == "keyframe" else "triplets"
    print(f"{len(files)} input(s) in {time.perf_counter() - start:.1f} s: {len(rows)} {what} -> "
          f"{os.path.join(out, name + '.json')}, {os.path.join(out, name + '.csv')}; drawings: "
          f"{', '.join(drawn[:4])}{' ...' if len(drawn) > 4 else ''}")
    return doc


def cli(argv=None) -> int:
    """Parse the flags and run :func:`main`; 0 on success, 2 with one ``error:`` line for bad input."""
    return launch_cli(main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
