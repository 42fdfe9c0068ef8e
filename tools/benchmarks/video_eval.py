"""Video SGG evaluation: sgg's vectorised evaluator vs a straightforward per-frame implementation (STTran's loop).

Generates random Action-Genome-like frames (a person and 1-6 objects, 1 attention + 1-2 spatial + 1-2 contacting GT
relations per object; PredCls = GT boxes with score 1, SGDet = jittered boxes, 0-8 extra detections, some wrong labels,
random scores), then evaluates every constraint with
``sgg.evaluation.video_scene_graph.evaluate_video_scene_graphs`` (vectorised over all frames) and with
``evaluate_video_scene_graphs_per_frame`` (the reference's structure: one zero-padded (3P, 26) score table per frame,
a Python loop for the semi constraint, a sort and per-GT matching per frame). Checks that every metric agrees and prints
frames/s and the ratio, then times the registered ``VideoSceneGraphEvaluator`` doing its whole job (``process`` per
video of 10 frames + ``evaluate`` of every constraint, inputs stacked once). Data generation is not timed; each
timing (both implementations) is the best of ``--repeat`` runs, so a busy machine biases neither side.

    python tools/benchmark.py video_eval                    # 2000 frames, predcls and sgdet
    python tools/benchmark.py video_eval --frames 20000 --modes sgdet
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

from sgg.data.catalog import DatasetCatalog
from sgg.evaluation.video_scene_graph import (
    CONSTRAINTS,
    VideoSceneGraphEvaluator,
    evaluate_video_scene_graphs,
    evaluate_video_scene_graphs_per_frame,
)

__all__ = ["add_arguments", "run", "random_frame"]

NUM_OBJECT_CLASSES = 36


def random_frame(rng: np.random.Generator, detections: bool) -> Tuple[dict, dict]:
    """One (GT frame, prediction frame) pair in the formats of DESIGN.md §5."""
    n = int(rng.integers(1, 7))
    xy = rng.uniform(0, 400, (n + 1, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(16, 200, (n + 1, 2))], 1).astype(np.float32)
    labels = np.concatenate([[0], rng.integers(1, NUM_OBJECT_CLASSES, n)])
    rels = []
    for j in range(1, n + 1):
        rels.append([0, j, int(rng.integers(0, 3))])
        rels += [[j, 0, 3 + int(s)] for s in rng.choice(6, int(rng.integers(1, 3)), replace=False)]
        rels += [[0, j, 9 + int(c)] for c in rng.choice(17, int(rng.integers(1, 3)), replace=False)]
    gt = {"boxes": boxes, "labels": labels, "relations": np.asarray(rels, np.int64)}
    if detections:
        extra = int(rng.integers(0, 9))
        pred_boxes = np.concatenate([boxes, boxes[rng.integers(0, n + 1, extra)]])
        pred_boxes = pred_boxes + rng.normal(0, 12, pred_boxes.shape).astype(np.float32)
        pred_labels = np.concatenate([labels, rng.integers(1, NUM_OBJECT_CLASSES, extra)])
        wrong = rng.random(len(pred_labels)) < 0.15
        pred_labels[wrong & (pred_labels > 0)] = rng.integers(1, NUM_OBJECT_CLASSES, 1)
        scores = rng.uniform(0.1, 1.0, len(pred_boxes)).astype(np.float32)
    else:
        pred_boxes, pred_labels, scores = boxes.copy(), labels.copy(), np.ones(n + 1, np.float32)
    pairs = np.stack([np.zeros(len(pred_boxes) - 1, np.int64), np.arange(1, len(pred_boxes))], 1)
    logits = rng.normal(0, 2, (len(pairs), 3))
    attention = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = {"boxes": pred_boxes, "labels": pred_labels, "scores": scores, "pairs": pairs,
            "attention": attention.astype(np.float32),
            "spatial": (1 / (1 + np.exp(-rng.normal(-1, 2.5, (len(pairs), 6))))).astype(np.float32),
            "contacting": (1 / (1 + np.exp(-rng.normal(-2, 2.5, (len(pairs), 17))))).astype(np.float32)}
    return gt, pred


def _best_time(fn: Callable[[], Dict[str, float]], repeat: int) -> Tuple[float, Dict[str, float]]:
    best, result = float("inf"), {}
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _run_evaluator(gts: List[dict], preds: List[dict], args: argparse.Namespace,
                   frames_per_video: int = 10) -> Dict[str, float]:
    """The registered evaluator's whole job: ``process`` every video's output, then ``evaluate`` all constraints."""
    name = "_benchmark_video_eval"
    videos = [{"video_id": str(i), "frames": gts[s:s + frames_per_video]}
              for i, s in enumerate(range(0, len(gts), frames_per_video))]
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: videos)
    try:
        evaluator = VideoSceneGraphEvaluator(dataset_name=name, constraints=tuple(args.constraints),
                                             ks=tuple(args.ks), distributed=False)
        evaluator.reset()
        for video in videos:
            start = int(video["video_id"]) * frames_per_video
            evaluator.process([video], [{"frames": preds[start:start + len(video["frames"])]}])
        return evaluator.evaluate()["video_sgg"]
    finally:
        DatasetCatalog.remove(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Benchmark options."""
    parser.add_argument("--frames", type=int, default=2000, help="frames per mode")
    parser.add_argument("--modes", nargs="+", default=["predcls", "sgdet"], choices=["predcls", "sgdet"])
    parser.add_argument("--constraints", nargs="+", default=list(CONSTRAINTS), choices=list(CONSTRAINTS))
    parser.add_argument("--ks", nargs="+", type=int, default=[10, 20, 50])
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each implementation (best is kept)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Time both implementations on the same predictions; non-zero exit if any metric differs."""
    rng = np.random.default_rng(args.seed)
    rows: List[Tuple[str, str, float, float, float]] = []
    base_results: Dict[Tuple[str, str], Dict[str, float]] = {}
    mismatch = False
    for mode in args.modes:
        frames = [random_frame(rng, detections=(mode == "sgdet")) for _ in range(args.frames)]
        gts, preds = [f[0] for f in frames], [f[1] for f in frames]
        pairs = sum(len(p["pairs"]) for p in preds)
        print(f"{mode}: {len(gts)} frames, {pairs / len(preds):.1f} pairs and "
              f"{sum(len(g['relations']) for g in gts) / len(gts):.1f} GT relations per frame")
        total_fast = total_base = 0.0
        for constraint in args.constraints:
            kw = {"constraint": constraint, "ks": tuple(args.ks)}
            t_fast, fast = _best_time(lambda: evaluate_video_scene_graphs(gts, preds, **kw), args.repeat)
            t_base, base = _best_time(lambda: evaluate_video_scene_graphs_per_frame(gts, preds, **kw), args.repeat)
            diff = max(abs(fast[k] - base[k]) for k in fast)
            mismatch |= diff > 1e-9
            total_fast, total_base = total_fast + t_fast, total_base + t_base
            rows.append((mode, constraint, t_fast, t_base, diff))
            base_results[mode, constraint] = base
            print(f"  {constraint:>4}: vectorised {len(gts) / t_fast:10.0f} frames/s | per-frame "
                  f"{len(gts) / t_base:8.0f} frames/s | ratio {t_base / t_fast:6.1f}x | max |diff| {diff:.1e} | "
                  + " ".join(f"{k} {v:.2f}" for k, v in fast.items()))
        print(f"  all constraints: vectorised {total_fast:.3f} s, per-frame {total_base:.3f} s, "
              f"ratio {total_base / total_fast:.1f}x")
        t_eval, metrics = _best_time(lambda: _run_evaluator(gts, preds, args), args.repeat)
        for constraint in args.constraints:
            diff = max(abs(metrics[f"{constraint}/R@{k}"] - base_results[mode, constraint][f"R@{k}"]) for k in args.ks)
            mismatch |= diff > 1e-9
        print(f"  VideoSceneGraphEvaluator (process + evaluate, {len(args.constraints)} constraints): {t_eval:.3f} s, "
              f"ratio {total_base / t_eval:.1f}x vs the per-frame implementation run once per constraint")
    if mismatch:
        print("ERROR: the two implementations disagree.")
        return 1
    return 0
