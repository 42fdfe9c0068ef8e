"""Tracking quality: sgg's Hungarian tracker (DSG-DETR) vs grouping by class (upstream outside SGCls) vs none.

Ground truth: the demo variant ``tracks`` (``demo_ag_tracks_*``: several objects of one class crossing and occluding
each other), whose generator writes sgg's identity sidecar ``annotations/sgg_track_ids.pkl`` next to AG's pickles (not
part of AG's format; AG has no track ids). The videos are read by the real Action Genome loader; each loaded object box
is matched to its pickle entry by its coordinates, which gives its identity.

Two sources of what the tracker sees, on the GT boxes of every frame (the person included; scores count objects):

* default: the GT classes and a model-free appearance feature (the box's pixels pooled to 4 x 4 RGB, 48 values);
* ``--config-file CFG --weights PTH``: a trained DSG-DETR's own inference (its mode's classes and RoI features, its
  ``MODEL.DSGDETR.TRACKING`` overridden per method); its per-box ``track_ids`` are scored.

Printed per method (``sgg.modeling.tracking.tracking_errors``, CLEAR-MOT with GT boxes given): identity switches,
conflicts (boxes of one frame sharing a track: a miss + a false positive each), MOTA = 1 - (2 conflicts + IDSW) /
boxes, purity / completeness of the tracks, fragmentations, and MOTA's error count relative to the class-grouping
baseline.

    python tools/benchmark.py track                                   # demo_ag_tracks_test, GT classes + pixels
    python tools/benchmark.py track --split train
    python tools/benchmark.py track --config-file configs/quick/dsgdetr_sgcls_demo.yaml \\
        --weights output/dsgdetr_tracks_sgcls/model_final.pth DATASETS.TEST "('demo_ag_tracks_test',)"
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sgg.checkpoint import DetectionCheckpointer
from sgg.config import get_cfg
from sgg.data import DatasetCatalog, build_test_loader, get_dataset_dicts
from sgg.data.datasets.action_genome import load_action_genome, load_restricted_pickle
from sgg.data.demo.action_genome_demo import TRACK_IDS_FILE, ensure_demo_action_genome
from sgg.modeling import build_model
from sgg.modeling.tracking import TRACKING_METHODS, HungarianTracker, track_boxes, tracking_errors

__all__ = ["add_arguments", "run", "gt_identities"]

PERSON_ID = -1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tools/benchmark.py track``."""
    parser.add_argument("--variant", default="tracks", help="AG demo variant with an identity sidecar")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--config-file", default="", help="a DSG-DETR config: score the model's own tracks")
    parser.add_argument("--weights", default="", help="its checkpoint (with --config-file)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (with --config-file)")


def gt_identities(root: str, video: dict) -> List[np.ndarray]:
    """Per loaded frame of ``video`` (a ``load_action_genome`` dict), the identity of each box: ``PERSON_ID`` for row
    0, then the sidecar identity of the pickle entry whose box it is."""
    ann = os.path.join(root, "annotations")
    path = os.path.join(ann, TRACK_IDS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No identity sidecar '{path}': tools/benchmark.py track needs a demo variant that "
                                "writes one (DemoVariant.track_ids_sidecar, e.g. --variant tracks).")
    ids = _cached(path)
    objects = _cached(os.path.join(ann, "object_bbox_and_relationship.pkl"))
    out = []
    for frame in video["frames"]:
        key = frame["frame_key"]
        entries, frame_ids = objects[key], ids[key]
        row_ids = [PERSON_ID]
        for box in frame["boxes"][1:]:
            found = [i for i, e in zip(frame_ids, entries) if e["visible"] and e["bbox"] is not None and np.allclose(
                [e["bbox"][0], e["bbox"][1], e["bbox"][0] + e["bbox"][2], e["bbox"][1] + e["bbox"][3]], box,
                atol=1e-3)]
            if len(found) != 1:
                raise ValueError(f"Frame '{key}': box {box.tolist()} matches {len(found)} entries of the pickle.")
            row_ids.append(found[0])
        out.append(np.asarray(row_ids, np.int64))
    return out


_CACHE: Dict[str, object] = {}


def _cached(path: str):
    if path not in _CACHE:
        _CACHE[path] = load_restricted_pickle(path)
    return _CACHE[path]


def _pixel_features(video: dict) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, List[int]]:
    """GT boxes normalised to [0, 1], frame index, GT labels and a 4 x 4 RGB thumbnail per box (48 values)."""
    boxes, frame_idx, labels, feats = [], [], [], []
    for t, frame in enumerate(video["frames"]):
        img = torch.from_numpy(np.asarray(Image.open(frame["file_name"]).convert("RGB"), np.float32) / 255.0)
        img = img.permute(2, 0, 1)
        h, w = img.shape[-2:]
        for box, label in zip(frame["boxes"], frame["labels"]):
            x1, y1 = int(max(box[0], 0)), int(max(box[1], 0))
            x2, y2 = max(int(np.ceil(box[2])), x1 + 1), max(int(np.ceil(box[3])), y1 + 1)
            crop = img[:, y1:min(y2, h), x1:min(x2, w)]
            feats.append(F.adaptive_avg_pool2d(crop[None], 4).flatten())
            boxes.append(torch.tensor(box) / torch.tensor([w, h, w, h], dtype=torch.float32))
            frame_idx.append(t)
            labels.append(int(label))
    numbers = [int(os.path.splitext(f["frame_key"].split("/")[-1])[0]) for f in video["frames"]]
    return torch.stack(boxes), torch.tensor(frame_idx), torch.tensor(labels), torch.stack(feats), numbers


def _score(per_video: List[Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Dict[str, float]:
    """Sum the identity errors of the object rows of every video (ids offset so videos never share one)."""
    pred, gt, frames = [], [], []
    offset = 0
    for p, g, f in per_video:
        keep = g != PERSON_ID
        pred.append(p[keep] + offset)
        gt.append(g[keep] + offset)
        frames.append(f[keep])
        offset += int(max(p.max(initial=0), g.max(initial=0))) + 1
    return tracking_errors(np.concatenate(pred), np.concatenate(gt), np.concatenate(frames))


def _model_runs(args, videos, root) -> Dict[str, Tuple[Dict[str, float], float]]:
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    DatasetCatalog.configure(cfg)
    name = cfg.DATASETS.TEST[0]
    results = {}
    for method in TRACKING_METHODS:
        cfg.MODEL.DSGDETR.TRACKING = method
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(args.weights)
        per_video = []
        start = time.perf_counter()
        # The dicts the test loader maps (its filters applied, e.g. SGCls's small-box filter), not the raw load.
        by_id = {v["video_id"]: v for v in get_dataset_dicts([name])}
        with torch.no_grad():
            for batch in build_test_loader(cfg, name):
                for inp, out in zip(batch, model(batch)):
                    gts = gt_identities(root, by_id[inp["video_id"]])
                    pred = np.concatenate([f["track_ids"].numpy() for f in out["frames"]])
                    gt = np.concatenate(gts)
                    frames = np.concatenate([np.full(len(g), t) for t, g in enumerate(gts)])
                    if len(pred) != len(gt):
                        raise ValueError(f"{inp['video_id']}: the model returned {len(pred)} boxes for {len(gt)} GT "
                                         "boxes; score a PredCls / SGCls model (GT boxes).")
                    per_video.append((pred, gt, frames))
        results[method] = (_score(per_video), time.perf_counter() - start)
    return results


def run(args) -> int:
    """Score every tracking method on the variant's videos and print the table."""
    root = ensure_demo_action_genome(variant=args.variant)
    videos = load_action_genome(root, args.split)
    if args.config_file:
        if not args.weights:
            raise ValueError("--config-file needs --weights (a trained DSG-DETR checkpoint).")
        results = _model_runs(args, videos, root)
        source = f"model {args.config_file} ({args.weights})"
    else:
        inputs = [(_pixel_features(v), gt_identities(root, v)) for v in videos]
        tracker = HungarianTracker()
        results = {}
        for method in TRACKING_METHODS:
            start = time.perf_counter()
            per_video = []
            for (boxes, frame_idx, labels, feats, numbers), gts in inputs:
                ids = track_boxes(method, boxes=boxes, frame_idx=frame_idx, labels=labels, features=feats,
                                  frame_numbers=numbers, tracker=tracker)
                per_video.append((ids.numpy(), np.concatenate(gts), frame_idx.numpy()))
            results[method] = (_score(per_video), time.perf_counter() - start)
        source = "GT boxes + GT classes + 4x4 RGB box thumbnails"
    frames = sum(len(v["frames"]) for v in videos)
    print(f"demo_ag_{args.variant}_{args.split}: {len(videos)} videos, {frames} frames; tracker input: {source}")
    def errors(r):
        return 2 * r["conflicts"] + r["id_switches"]

    base = errors(results["class"][0])
    print(f"{'method':<10} {'boxes':>6} {'objects':>7} {'tracks':>6} {'IDSW':>5} {'confl':>5} {'MOTA':>7} "
          f"{'purity':>7} {'complete':>8} {'frag':>5} {'err/class':>9} {'time s':>7}")
    for method, (r, secs) in results.items():
        ratio = f"{errors(r) / base:.2f}" if base else "-"
        print(f"{method:<10} {r['boxes']:>6} {r['gt_objects']:>7} {r['pred_tracks']:>6} {r['id_switches']:>5} "
              f"{r['conflicts']:>5} {r['mota']:>7.4f} {r['purity']:>7.4f} {r['completeness']:>8.4f} "
              f"{r['fragmentations']:>5} {ratio:>9} {secs:>7.3f}")
    return 0
