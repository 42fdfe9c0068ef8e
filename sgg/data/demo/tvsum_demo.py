"""Procedural TVSum twin (``demo_tvsum*``): short videos, annotator scores and the eccv16 h5, in the real layouts.

Every video is a sequence of shots (2-5 s). A shot is a dull coloured background with drifting low-contrast
stripes; *interesting* shots additionally show a moving disc — medium and pale (interest 1) or large, saturated and
high-contrast (interest 2). Twenty simulated annotators score every 2-second chunk from 1 to 5 the way TVSum's did:
``round(1 + 4 * importance + user bias + noise)`` with importance 0.1 / 0.55 / 0.9 for interest 0 / 1 / 2. So the
important segments are visually distinct and the scores are noisy, disagreeing, and derived from the pixels.

Written under ``<root>`` (``$SGG_DATASETS/demo/tvsum``), the same files as the real dataset:
``videos/<id>.mp4`` (10 fps, 64 x 64, H.264), ``ydata-tvsum50-anno.tsv``, ``eccv16_dataset_tvsum_google_pool5.h5``
(picks every 5th frame = 2 fps; ``features`` are a fixed random ReLU projection of each picked frame's appearance,
standing in for GoogLeNet pool5; ``change_points`` are the true shots; ``user_summary`` = each annotator's knapsack
summary at 15 %) and ``tvsum_splits.json`` (5 folds). Generation is deterministic and takes a few seconds.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import List, Tuple

import numpy as np

from sgg.structures.segments import knapsack_01
from sgg.utils.video_io import write_video

from .generation import ensure_generated

__all__ = ["generate_tvsum_demo", "ensure_tvsum_demo", "render_video", "appearance_descriptor", "DEMO_CONFIG"]

logger = logging.getLogger(__name__)

DEMO_CONFIG = {"num_videos": 20, "video_fps": 10, "pick_every": 5, "size": 64, "num_users": 20,
               "duration_s": (30, 45), "shot_s": (2, 5), "feature_dim": 1024, "num_folds": 5, "seed": 2015}
_IMPORTANCE = np.array([0.1, 0.55, 0.9])  # by interest level 0 / 1 / 2
_CATEGORIES = ("VT", "VU", "GA", "MS", "PK", "PR", "FM", "BK", "BT", "DS")  # TVSum's ten categories
_MARKER = ".complete"


def _plan_shots(rng: np.random.Generator, n_frames: int, fps: int, shot_s: Tuple[int, int]) -> List[dict]:
    shots, start = [], 0
    while start < n_frames:
        length = int(rng.integers(shot_s[0] * fps, shot_s[1] * fps + 1))
        end = min(n_frames, start + length)
        if n_frames - end < shot_s[0] * fps:  # no tiny last shot
            end = n_frames
        shots.append({"start": start, "end": end, "interest": int(rng.choice(3, p=[0.55, 0.27, 0.18])),
                      "hue": rng.random(3), "angle": rng.random() * math.pi, "phase": rng.random() * 6.0,
                      "disc_from": rng.random(2), "disc_to": rng.random(2), "disc_color": rng.random(3)})
        start = end
    return shots


def _render_shot(shot: dict, size: int) -> np.ndarray:
    n = shot["end"] - shot["start"]
    t = np.arange(n, dtype=np.float32)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 60 + 60 * shot["hue"]  # dull colours, 60..120
    wave = np.sin((xx * math.cos(shot["angle"]) + yy * math.sin(shot["angle"])) / 4.0 + 0.3 * t + shot["phase"])
    frames = base[None, None, None, :] + 12.0 * wave[..., None]  # (n, H, W, 3)
    if shot["interest"] > 0:
        radius = size * (0.14 if shot["interest"] == 1 else 0.24)
        alpha = np.linspace(0, 1, n, dtype=np.float32)[:, None]
        centre = (1 - alpha) * shot["disc_from"] + alpha * shot["disc_to"]  # (n, 2) in [0, 1]
        centre = radius + centre * (size - 2 * radius)
        inside = (xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2 < radius ** 2
        if shot["interest"] == 1:
            disc = (150 + 60 * shot["disc_color"])[None, None, None, :]  # pale, medium size
        else:
            color = np.where(shot["disc_color"] > 0.5, 255.0, 20.0)  # saturated, high contrast, checkered
            color[int(np.argmax(shot["disc_color"]))] = 255.0
            disc = color[None, None, None, :] - ((xx // 4 + yy // 4) % 2)[None, ..., None] * 60.0
        frames = np.where(inside[..., None], disc, frames)
    return np.clip(frames, 0, 255).astype(np.uint8)


def render_video(shots: List[dict], size: int) -> np.ndarray:
    """Concatenate the rendered shots: uint8 ``(n_frames, size, size, 3)``."""
    return np.concatenate([_render_shot(s, size) for s in shots])


def appearance_descriptor(frames: np.ndarray, grid: int = 4, bins: int = 8) -> np.ndarray:
    """Per-frame appearance vector (grid RGB means + per-channel histograms + contrast) in roughly [0, 1]."""
    t, h, w, _ = frames.shape
    f = frames.astype(np.float32) / 255.0
    cells = f.reshape(t, grid, h // grid, grid, w // grid, 3).mean(axis=(2, 4)).reshape(t, -1)
    hist = np.stack([np.stack([np.histogram(x[..., c], bins=bins, range=(0, 1))[0] for c in range(3)]) for x in f])
    contrast = f.reshape(t, -1, 3).std(axis=1)
    return np.concatenate([cells, hist.reshape(t, -1) / float(h * w), 4 * contrast], axis=1)


def _annotator_scores(rng: np.random.Generator, frame_importance: np.ndarray, fps: int, num_users: int) -> np.ndarray:
    """(num_users, n_frames) uint8 in 1..5, constant over 2-second chunks (TVSum's annotation unit)."""
    n = len(frame_importance)
    chunk = 2 * fps
    chunk_importance = np.array([frame_importance[i:i + chunk].mean() for i in range(0, n, chunk)])
    bias = rng.normal(0, 0.3, size=(num_users, 1))
    raw = 1 + 4 * chunk_importance[None, :] + bias + rng.normal(0, 0.8, size=(num_users, len(chunk_importance)))
    scores = np.clip(np.rint(raw), 1, 5).astype(np.uint8)
    return np.repeat(scores, chunk, axis=1)[:, :n]


def _knapsack_summary(values: List[float], segments: np.ndarray, n_frames: int, ratio: float = 0.15) -> np.ndarray:
    summary = np.zeros(n_frames, dtype=np.uint8)
    weights = segments[:, 1] - segments[:, 0] + 1
    for seg in knapsack_01(values, weights, int(math.floor(ratio * n_frames))):
        summary[segments[seg, 0]:segments[seg, 1] + 1] = 1
    return summary


def _write_h5_group(h5, key: str, name: str, frames: np.ndarray, shots: List[dict], user_scores: np.ndarray,
                    projection: np.ndarray, pick_every: int, rng: np.random.Generator) -> None:
    n_frames = len(frames)
    picks = np.arange(0, n_frames, pick_every, dtype=np.int64)
    descriptor = appearance_descriptor(frames[picks])
    features = np.maximum(descriptor @ projection, 0) + rng.normal(0, 0.02, (len(picks), projection.shape[1]))
    segments = np.array([[s["start"], s["end"] - 1] for s in shots], dtype=np.int64)
    gtscore = (user_scores[:, picks].astype(np.float64).mean(0) - 1.0) / 4.0
    user_summary = np.stack([_knapsack_summary([float(u[s:e + 1].mean()) for s, e in segments], segments, n_frames)
                             for u in user_scores.astype(np.float64)])
    top = np.argsort(-gtscore, kind="stable")[: max(1, int(math.ceil(0.15 * len(picks))))]
    gtsummary = np.zeros(len(picks), dtype=np.float32)
    gtsummary[top] = 1
    g = h5.create_group(key)
    g["features"] = features.astype(np.float32)
    g["gtscore"] = gtscore.astype(np.float32)
    g["gtsummary"] = gtsummary
    g["user_summary"] = user_summary.astype(np.float32)
    g["change_points"] = segments.astype(np.int32)
    g["n_frame_per_seg"] = (segments[:, 1] - segments[:, 0] + 1).astype(np.int32)
    g["n_frames"] = np.int64(n_frames)
    g["picks"] = picks.astype(np.int32)
    g["n_steps"] = np.int64(len(picks))
    g["video_name"] = np.bytes_(name)


def generate_tvsum_demo(root: str, **overrides) -> str:
    """Write the demo TVSum files under ``root`` (overwriting); ``overrides`` change :data:`DEMO_CONFIG` entries."""
    import h5py

    cfg = {**DEMO_CONFIG, **overrides}
    rng = np.random.default_rng(cfg["seed"])
    fps, size = cfg["video_fps"], cfg["size"]
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    descriptor_dim = appearance_descriptor(np.zeros((1, size, size, 3), np.uint8)).shape[1]
    projection = rng.normal(0, 1.0 / math.sqrt(descriptor_dim), (descriptor_dim, cfg["feature_dim"]))
    keys, anno_lines = [], []
    with h5py.File(os.path.join(root, "eccv16_dataset_tvsum_google_pool5.h5"), "w") as h5:
        for k in range(1, cfg["num_videos"] + 1):
            name = f"demo{k:02d}_{''.join(rng.choice(list('abcdefghijkmnpqrstuvwxyz'), 6))}"
            n_frames = int(rng.integers(cfg["duration_s"][0], cfg["duration_s"][1] + 1)) * fps
            shots = _plan_shots(rng, n_frames, fps, cfg["shot_s"])
            frames = render_video(shots, size)
            importance = np.concatenate([np.full(s["end"] - s["start"], _IMPORTANCE[s["interest"]]) for s in shots])
            user_scores = _annotator_scores(rng, importance, fps, cfg["num_users"])
            write_video(os.path.join(root, "videos", f"{name}.mp4"), frames, fps, crf=18)
            category = _CATEGORIES[(k - 1) % len(_CATEGORIES)]
            anno_lines += [f"{name}\t{category}\t{','.join(map(str, u.tolist()))}\n" for u in user_scores]
            _write_h5_group(h5, f"video_{k}", name, frames, shots, user_scores, projection, cfg["pick_every"], rng)
            keys.append(f"video_{k}")
    with open(os.path.join(root, "ydata-tvsum50-anno.tsv"), "w") as f:
        f.writelines(anno_lines)
    order = rng.permutation(len(keys))
    folds = np.array_split(order, cfg["num_folds"])
    splits = [{"train_keys": [keys[i] for i in order if i not in set(fold)], "test_keys": [keys[i] for i in fold]}
              for fold in folds]
    with open(os.path.join(root, "tvsum_splits.json"), "w") as f:
        json.dump(splits, f, indent=1)
    return root


def ensure_tvsum_demo(root: str) -> str:
    """Generate the demo under ``root`` unless it is complete (see :func:`ensure_generated`)."""
    return ensure_generated(root, generate_tvsum_demo, marker=_MARKER, description="TVSum dataset")
