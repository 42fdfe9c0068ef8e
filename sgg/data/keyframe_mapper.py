"""``KeyframeMapper``: a TVSum/SumMe dataset dict -> the keyframe model's input dict.

Output (one per video)::

    {"video_id": str,
     "features": float32 (T, D)        # h5 path
     "frames":   uint8 (T, 3, S, S)    # raw path: frames sampled at INPUT.KEYFRAME.FPS, resized to S = SIZE
     "picks":    int64 (T,)            # native frame index of every step
     "target":   float32 (T,)          # gtscore min-max normalised to [0, 1] (the training target)
     "gt": {...}}                      # evaluation only: picks, n_frames, change_points, n_frame_per_seg,
                                       # user_summary, gtscore, user_scores (what the keyframe evaluator reads)

An unannotated video (a dict ``{"source": "video", "video_id", "video_file"}`` without ``user_scores``, what
:class:`sgg.engine.Predictor` passes) maps at test time to ``video_id, frames, picks`` only. ``{"source": "frames",
"video_id", "frames_rgb": uint8 (T, H, W, 3), "picks": (T,)}`` takes frames already sampled at ``INPUT.KEYFRAME.FPS``
and resizes them to ``S x S`` (bilinear, PIL; decoding a file resizes in FFmpeg, so the pixels differ slightly).

Training takes a random window of ``INPUT.KEYFRAME.TRAIN_CLIP_STEPS`` consecutive steps (the seed trains on 30 s =
60 steps at 2 fps); evaluation always sees the whole video. For raw videos the ground truth the h5 would hold is
derived the eccv16 way: ``gtscore`` = annotators' mean score at each step, shots by KTS on the sampled frames
(:mod:`sgg.structures.kts`), each annotator's summary = knapsack of their shot-mean scores at 15 %.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Optional

import numpy as np
import torch
from PIL import Image

from sgg.config import configurable
from sgg.structures.kts import change_points_to_segments, kts_auto, kts_features_from_frames
from sgg.structures.segments import knapsack_01, minmax_normalize
from sgg.utils.video_io import iter_video_frames, video_info

from .build import MAPPER_REGISTRY
from .datasets.tvsum import open_eccv16_h5

__all__ = ["KeyframeMapper", "user_summaries_from_scores", "raw_video_groundtruth"]

logger = logging.getLogger(__name__)


def user_summaries_from_scores(user_scores: np.ndarray, segments: np.ndarray, ratio: float = 0.15) -> np.ndarray:
    """Binary summaries ``(n_users, n_frames)``: per annotator, knapsack (capacity ``floor(ratio n)``) over shots
    valued by that annotator's mean frame score in the shot."""
    user_scores = np.asarray(user_scores, dtype=np.float64)
    n_users, n_frames = user_scores.shape
    weights = segments[:, 1] - segments[:, 0] + 1
    capacity = int(math.floor(ratio * n_frames))
    summaries = np.zeros((n_users, n_frames), dtype=np.uint8)
    for u in range(n_users):
        values = [float(user_scores[u, s:e + 1].mean()) for s, e in segments]
        for seg in knapsack_01(values, weights, capacity):
            s, e = segments[seg]
            summaries[u, s:e + 1] = 1
    return summaries


def raw_video_groundtruth(frames: np.ndarray, picks: np.ndarray, user_scores: np.ndarray, *, kts_vmax: float = 1.0,
                          ratio: float = 0.15) -> dict:
    """eccv16-style ground truth for a raw video: KTS shots over ``frames`` (T, H, W, 3) sampled at ``picks``."""
    n_frames = user_scores.shape[1]
    feats = kts_features_from_frames(frames)
    change_points = kts_auto(feats @ feats.T, vmax=kts_vmax)
    segments = change_points_to_segments(change_points, picks, n_frames)
    return {"picks": picks, "n_frames": n_frames, "change_points": segments,
            "n_frame_per_seg": segments[:, 1] - segments[:, 0] + 1,
            "user_summary": user_summaries_from_scores(user_scores, segments, ratio),
            "gtscore": user_scores[:, picks].astype(np.float64).mean(0), "user_scores": user_scores}


@MAPPER_REGISTRY.register()
class KeyframeMapper:
    """Maps TVSum/SumMe dataset dicts (h5 or raw video) to model inputs; see the module docstring."""

    @configurable
    def __init__(self, *, is_train: bool, fps: float = 2.0, size: int = 224, clip_steps: int = 60,
                 kts_vmax: float = 1.0, ratio: float = 0.15):
        self.is_train, self.fps, self.size = is_train, fps, size
        self.clip_steps, self.kts_vmax, self.ratio = clip_steps, kts_vmax, ratio

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        k = cfg.INPUT.KEYFRAME
        return {"is_train": is_train, "fps": k.FPS, "size": k.SIZE, "clip_steps": k.TRAIN_CLIP_STEPS,
                "kts_vmax": k.KTS_VMAX, "ratio": cfg.TEST.KEYFRAME.SUMMARY_RATIO}

    def _window(self, n_steps: int) -> slice:
        if not self.is_train or self.clip_steps <= 0 or n_steps <= self.clip_steps:
            return slice(0, n_steps)
        start = random.randint(0, n_steps - self.clip_steps)
        return slice(start, start + self.clip_steps)

    def __call__(self, dataset_dict: dict) -> dict:
        source = dataset_dict.get("source")
        if source == "h5":
            return self._map_h5(dataset_dict)
        if source == "video":
            if dataset_dict.get("user_scores") is None and not self.is_train:
                frames, picks = self._decode_steps(dataset_dict["video_file"], None)
                return {"video_id": dataset_dict["video_id"], "picks": torch.from_numpy(picks),
                        "frames": torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()}
            return self._map_video(dataset_dict)
        if source == "frames" and not self.is_train:
            return self._map_frames(dataset_dict)
        raise ValueError(f"KeyframeMapper: dataset dict '{dataset_dict.get('video_id', '?')}' has source "
                         f"{source!r}; expected 'h5' or 'video' (or 'frames' at test time; see "
                         "sgg/data/datasets/tvsum.py).")

    # ------------------------------------------------------------------ h5
    def _map_h5(self, d: dict) -> dict:
        with open_eccv16_h5(d["h5_file"]) as f:
            if d["h5_key"] not in f:
                raise KeyError(f"'{d['h5_file']}' has no group '{d['h5_key']}' (the file changed after loading?).")
            g = f[d["h5_key"]]
            window = self._window(g["picks"].shape[0])
            gtscore = np.asarray(g["gtscore"][()], dtype=np.float64)
            out = {"video_id": d["video_id"],
                   "features": torch.from_numpy(np.asarray(g["features"][window], dtype=np.float32)),
                   "picks": torch.from_numpy(np.asarray(g["picks"][window], dtype=np.int64)),
                   "target": torch.from_numpy(minmax_normalize(gtscore)[window])}
            if not self.is_train:
                out["gt"] = {"picks": np.asarray(g["picks"][()], dtype=np.int64), "n_frames": int(d["n_frames"]),
                             "change_points": np.asarray(g["change_points"][()], dtype=np.int64),
                             "n_frame_per_seg": np.asarray(g["n_frame_per_seg"][()], dtype=np.int64),
                             "user_summary": np.asarray(g["user_summary"][()], dtype=np.uint8),
                             "gtscore": gtscore, "user_scores": d.get("user_scores")}
        return out

    # ------------------------------------------------------------------ decoded frames
    def _map_frames(self, d: dict) -> dict:
        frames = np.asarray(d["frames_rgb"])
        if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
            raise ValueError(f"KeyframeMapper: 'frames_rgb' of '{d.get('video_id', '?')}' must be a non-empty "
                             f"(T, H, W, 3) array, got shape {frames.shape}.")
        if frames.shape[1:3] != (self.size, self.size):
            frames = np.stack([np.asarray(Image.fromarray(f.astype(np.uint8)).resize((self.size, self.size),
                                                                                     Image.BILINEAR))
                               for f in frames])
        picks = np.asarray(d.get("picks", np.arange(len(frames))), dtype=np.int64).reshape(-1)
        return {"video_id": d.get("video_id", ""), "picks": torch.from_numpy(picks),
                "frames": torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8)).permute(0, 3, 1, 2)
                .contiguous()}

    # ------------------------------------------------------------------ raw video
    def _decode_steps(self, path: str, window: Optional[slice]):
        frames, picks = [], []
        for step, (index, _, image) in enumerate(iter_video_frames(path, fps=self.fps, size=(self.size, self.size))):
            if window is not None and step < window.start:
                continue
            if window is not None and step >= window.stop:
                break
            frames.append(image)
            picks.append(index)
        if not frames:
            raise ValueError(f"No frame decoded from '{path}' at {self.fps} fps (window {window}).")
        return np.stack(frames), np.asarray(picks, dtype=np.int64)

    def _map_video(self, d: dict) -> dict:
        path, user_scores = d["video_file"], np.asarray(d["user_scores"])
        n_frames = user_scores.shape[1]
        window = None
        if self.is_train and self.clip_steps > 0:
            info = video_info(path)
            estimated_steps = max(1, int(info["duration_s"] * self.fps))
            window = self._window(estimated_steps)
        frames, picks = self._decode_steps(path, window)
        if picks[-1] >= n_frames:
            # The annotation may count a few frames fewer than the decoder; clamp rather than index out of range.
            logger.debug("%s: decoded frame %d beyond the %d annotated frames", path, picks[-1], n_frames)
            picks = np.minimum(picks, n_frames - 1)
        # Normalise with the whole video's range (not the window's) so a training clip sees the same targets
        # as the full video; over the whole video this equals min-max normalising gtscore.
        frame_mean = user_scores.astype(np.float64).mean(0)
        lo, span = frame_mean.min(), max(frame_mean.max() - frame_mean.min(), 1e-8)
        target = np.clip((frame_mean[picks] - lo) / span, 0.0, 1.0).astype(np.float32)
        out = {"video_id": d["video_id"], "frames": torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(),
               "picks": torch.from_numpy(picks), "target": torch.from_numpy(target)}
        if not self.is_train:
            out["gt"] = raw_video_groundtruth(frames, picks, user_scores, kts_vmax=self.kts_vmax, ratio=self.ratio)
        return out
