#!/usr/bin/env python
"""Keyframes of one video with a trained keyframe detector: prints them and writes a contact sheet.

    python tools/keyframes.py VIDEO --weights output/keyframe_demo/model_final.pth [--ratio 0.15]
        [--select topk|shots] [--config-file CFG] [--output sheet.png] [--json scores.json] [KEY VALUE ...]

The config defaults to ``config.yaml`` next to the weights (what ``tools/train_net.py`` saves in OUTPUT_DIR). The
video is decoded at ``INPUT.KEYFRAME.FPS`` (2 fps) and resized to ``INPUT.KEYFRAME.SIZE``; the model scores every
sampled frame ("step"). Selection:

* ``topk`` (default, seed 003's rule): the ``max(1, floor(ratio * steps))`` highest-scoring steps;
* ``shots`` (the evaluation protocol's summary): KTS shots on the sampled frames, 0/1 knapsack of shot-mean scores
  at ``ratio`` of the video's frames, and the best-scoring step of each selected shot as its keyframe.

Only the pixel model (``KeyframeDetector``) works on raw videos; the h5-feature variant needs precomputed features.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.checkpoint import DetectionCheckpointer  # noqa: E402
from sgg.config import ConfigError, get_cfg  # noqa: E402
from sgg.model_zoo import get_config_file  # noqa: E402
from sgg.modeling import build_model  # noqa: E402
from sgg.structures.kts import select_shot_keyframes  # noqa: E402
from sgg.structures.segments import select_topk_steps  # noqa: E402
from sgg.utils.errors import run_cli  # noqa: E402
from sgg.utils.video_io import VideoError, iter_video_frames, video_info  # noqa: E402
from sgg.utils.visualizer import save_contact_sheet  # noqa: E402

logger = logging.getLogger("sgg.tools.keyframes")

DEFAULT_CONFIG = "tvsum/keyframe_effnet.yaml"  # shipped with sgg (sgg.model_zoo); a file path works too


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="video file (.mp4, .webm, ...)")
    parser.add_argument("--weights", required=True, help="trained checkpoint (model_final.pth)")
    parser.add_argument("--config-file", default="", help="config; default: config.yaml beside --weights")
    parser.add_argument("--ratio", type=float, default=0.15, help="fraction of the video to select (default 0.15)")
    parser.add_argument("--select", choices=("topk", "shots"), default="topk", help="selection rule (see above)")
    parser.add_argument("--output", default="", help="contact sheet PNG (default: <video name>_keyframes.png)")
    parser.add_argument("--json", default="", help="also write per-step scores and the keyframes to this JSON")
    parser.add_argument("opts", nargs="*", help="config overrides: KEY VALUE ...")
    args = parser.parse_intermixed_args(argv)
    if not 0 < args.ratio <= 1:
        parser.error(f"--ratio must be in (0, 1], got {args.ratio}")
    return args


def setup_cfg(args):
    """Config from ``--config-file`` (or the one saved beside the weights) + overrides, on CPU unless CUDA exists."""
    cfg = get_cfg()
    config_file = args.config_file or os.path.join(os.path.dirname(os.path.abspath(args.weights)), "config.yaml")
    if not os.path.isfile(config_file):
        if args.config_file:
            config_file = get_config_file(args.config_file)  # a config shipped with sgg, or a clear error
        else:
            logger.warning("No config.yaml beside %s; using the shipped %s", args.weights, DEFAULT_CONFIG)
            config_file = get_config_file(DEFAULT_CONFIG)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.WEIGHTS = args.weights
    if cfg.MODEL.META_ARCHITECTURE != "KeyframeDetector":
        raise ConfigError(f"tools/keyframes.py needs the pixel model (MODEL.META_ARCHITECTURE KeyframeDetector); "
                          f"{config_file} uses '{cfg.MODEL.META_ARCHITECTURE}'.")
    cfg.MODEL.BACKBONE.WEIGHTS = ""  # the checkpoint holds the (fine-tuned) backbone
    cfg.freeze()
    return cfg


def score_video(model, path: str, fps: float, size: int):
    """Per-step scores of ``path``: returns ``(scores (T,), frames uint8 (T, S, S, 3), picks (T,), times (T,))``."""
    frames, picks, times = [], [], []
    for index, t, image in iter_video_frames(path, fps=fps, size=(size, size)):
        frames.append(image)
        picks.append(index)
        times.append(t)
    if not frames:
        raise VideoError(f"No frame decoded from '{path}' at {fps:g} fps; the video is empty or corrupt.")
    frames = np.stack(frames)
    with torch.no_grad():
        out = model([{"frames": torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), "video_id": path}])
    return out[0]["scores"].float().cpu().numpy(), frames, np.asarray(picks), np.asarray(times)


def native_frames(path: str, picks: np.ndarray, wanted: List[int], height: int = 160) -> List[np.ndarray]:
    """Frames at native aspect (shorter side ``height``) for the steps ``wanted`` (second decoding pass)."""
    targets = {int(picks[i]) for i in wanted}
    found = {}
    for index, _, image in iter_video_frames(path, size=height):
        if index in targets:
            found[index] = image
            if len(found) == len(targets):
                break
    return [found[int(picks[i])] for i in wanted]


def main(argv=None) -> int:
    """Run the tool; a missing/corrupt/truncated video or a missing/unsafe/mismatched checkpoint is one ``error:``
    line and exit code 2 (``SGG_DEBUG=1`` adds the traceback)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s]: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    return run_cli(_run, args)


def _run(args) -> int:
    video_info(args.video)  # a missing or unreadable video fails here, before the model is built
    cfg = setup_cfg(args)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS, key="--weights")
    model.eval()
    scores, frames, picks, times = score_video(model, args.video, cfg.INPUT.KEYFRAME.FPS, cfg.INPUT.KEYFRAME.SIZE)
    n_frames = max(int(video_info(args.video)["num_frames"]), int(picks[-1]) + 1)
    if args.select == "topk":
        keyframes = select_topk_steps(scores, args.ratio)
    else:
        keyframes = select_shot_keyframes(scores, frames, picks, n_frames, args.ratio)
    print(f"{args.video}: {len(scores)} steps at {cfg.INPUT.KEYFRAME.FPS:g} fps, {len(keyframes)} keyframes "
          f"({args.select}, ratio {args.ratio:g})")
    print(f"{'step':>6} {'frame':>7} {'time_s':>8} {'score':>7}")
    for i in keyframes:
        print(f"{i:>6d} {int(picks[i]):>7d} {times[i]:>8.2f} {scores[i]:>7.4f}")
    output = args.output or os.path.splitext(os.path.basename(args.video))[0] + "_keyframes.png"
    captions = [f"#{int(picks[i])} {times[i]:.1f}s {scores[i]:.2f}" for i in keyframes]
    save_contact_sheet(output, native_frames(args.video, picks, keyframes), captions)
    print(f"contact sheet: {output}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"video": args.video, "fps": cfg.INPUT.KEYFRAME.FPS, "picks": picks.tolist(),
                       "times_s": times.tolist(), "scores": scores.tolist(), "keyframes": keyframes}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
