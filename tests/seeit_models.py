"""Tiny sgg models saved the way training saves them (``model_final.pth`` + ``config.yaml``), and a small synthetic
video, for the predictor / visualizer / demo / viewer tests. The models keep their seeded initial weights: the tests
check structures, files and errors, which do not depend on training."""

from __future__ import annotations

import os

import numpy as np
import torch

from sgg.checkpoint import DetectionCheckpointer
from sgg.config import get_cfg
from sgg.data import DatasetCatalog
from sgg.modeling import build_model
from sgg.utils.video_io import write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Model keys that shrink the demo configs further (build + one forward in well under a second).
TINY = {
    "configs/quick/speaq_demo.yaml": ["DATALOADER.NUM_WORKERS", 0],
    # An untrained detector scores every box low: keep them all, so that frames have objects and pairs.
    "configs/quick/sttran_sgdet_demo.yaml": ["MODEL.STTRAN.DEC_LAYERS", 1, "MODEL.STTRAN.DIM_FEEDFORWARD", 64,
                                             "MODEL.VIDEO_DETECTOR.SCORE_THRESH", 0.0],
    "configs/quick/sttran_demo.yaml": ["MODEL.STTRAN.DEC_LAYERS", 1, "MODEL.STTRAN.DIM_FEEDFORWARD", 64],
    "configs/quick/keyframe_demo.yaml": ["MODEL.KEYFRAME.D_MODEL", 64, "MODEL.KEYFRAME.NUM_HEADS", 4,
                                         "MODEL.KEYFRAME.NUM_LAYERS", 1, "MODEL.KEYFRAME.DIM_FEEDFORWARD", 128,
                                         "MODEL.KEYFRAME.SCORER_HIDDEN", 32],
}


def shared_datasets(tmp_path_factory) -> str:
    """One $SGG_DATASETS folder for the whole test session, so the demo datasets are generated once."""
    return str(tmp_path_factory.getbasetemp() / "seeit_datasets")


def tiny_config(config_file: str, opts=()):
    """The config a tiny model of ``config_file`` (repository-relative) is built from."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, config_file))
    cfg.merge_from_list([str(v) for v in TINY.get(config_file, [])] + [str(v) for v in opts])
    return cfg


def save_tiny_model(config_file: str, folder: str, opts=(), seed: int = 0) -> str:
    """Build the tiny model, save ``folder/model_final.pth`` and ``folder/config.yaml``; returns the checkpoint."""
    cfg = tiny_config(config_file, opts)
    cfg.OUTPUT_DIR = str(folder)
    os.makedirs(folder, exist_ok=True)
    DatasetCatalog.configure(cfg)
    torch.manual_seed(seed)
    model = build_model(cfg)
    DetectionCheckpointer(model, str(folder)).save("model_final")
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    return os.path.join(folder, "model_final.pth")


def opts_of(config_file: str):
    """The command-line overrides that rebuild the tiny model (for tools/demo.py)."""
    return [str(v) for v in TINY.get(config_file, [])]


def synthetic_video(path: str, num_frames: int = 8, fps: float = 4.0, size=(96, 128)) -> str:
    """A short MP4: a person-like tall block and a box moving across a two-tone background."""
    h, w = size
    frames = np.zeros((num_frames, h, w, 3), np.uint8)
    frames[:, : h * 2 // 3] = (200, 205, 210)
    frames[:, h * 2 // 3:] = (140, 130, 120)
    for t in range(num_frames):
        x = 10 + t * (w - 40) // max(1, num_frames - 1)
        frames[t, 20:80, 30:50] = (60, 70, 200)
        frames[t, 55:75, x:x + 22] = (150, 90, 40)
    return write_video(path, frames, fps=fps)
