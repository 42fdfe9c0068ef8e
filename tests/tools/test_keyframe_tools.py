"""tools/analyze_model.py (parameters, FLOPs) and tools/keyframes.py run end to end on tiny models and a tiny video."""

import importlib.util
import os

import numpy as np
import pytest
import torch

from sgg.checkpoint import DetectionCheckpointer
from sgg.config import get_cfg
from sgg.modeling import build_model
from sgg.utils.video_io import write_video
from tests.tools.test_train_seed_cli import TINY

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_cfg():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "KeyframeDetector"
    cfg.MODEL.BACKBONE.NAME = "EfficientNetB0"
    cfg.MODEL.EFFICIENTNET.WIDTH_MULT = 0.1
    cfg.MODEL.EFFICIENTNET.DEPTH_MULT = 0.1
    cfg.MODEL.KEYFRAME.D_MODEL = 16
    cfg.MODEL.KEYFRAME.NUM_HEADS = 2
    cfg.MODEL.KEYFRAME.NUM_LAYERS = 1
    cfg.MODEL.KEYFRAME.DIM_FEEDFORWARD = 32
    cfg.MODEL.KEYFRAME.SCORER_HIDDEN = 8
    cfg.INPUT.KEYFRAME.SIZE = 32
    cfg.SOLVER.STAGE2.ENABLED = True
    cfg.SOLVER.STAGE2.UNFREEZE = ["backbone.features.8."]
    return cfg


def test_analyze_model_prints_true_counts(tmp_path, capsys):
    cfg = _tiny_cfg()
    path = tmp_path / "tiny.yaml"
    path.write_text(cfg.dump())
    assert _load_tool("analyze_model").main(["--config-file", str(path)]) == 0
    text = capsys.readouterr().out
    model = build_model(cfg)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("backbone.features.8."))
    assert f"total parameters:     {total:>12,d}" in text
    assert f"trainable parameters: {trainable:>12,d}" in text
    assert f"trainable in stage 2: {trainable + head:>12,d}" in text
    assert "backbone" in text and "encoder" in text


def test_analyze_model_counts_flops_on_a_real_test_batch(capsys):
    """--flops on the STTran demo config: the first demo_ag_test video, counted by fvcore through the adapter."""
    config = os.path.join(TOOLS, "..", "configs", "quick", "sttran_demo.yaml")
    assert _load_tool("analyze_model").main(["--config-file", config, "--flops", *TINY]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("FLOPs on the first batch of demo_ag_test"))
    assert float(line.rsplit(":", 1)[1].split()[0].replace(",", "")) > 0
    assert "features" in text and "transformer" in text


def test_keyframes_tool_prints_keyframes_and_writes_sheet(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    model = build_model(cfg)
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    (tmp_path / "config.yaml").write_text(cfg.dump())
    frames = np.zeros((40, 48, 64, 3), np.uint8)
    frames[20:] = 180
    video = write_video(str(tmp_path / "clip.mp4"), frames, fps=10)
    sheet = tmp_path / "sheet.png"
    tool = _load_tool("keyframes")
    assert tool.main([video, "--weights", str(tmp_path / "model_final.pth"), "--ratio", "0.25",
                      "--output", str(sheet), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "8 steps at 2 fps, 2 keyframes (topk, ratio 0.25)" in out  # 4 s at 2 fps; floor(0.25 * 8) = 2
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert len(rows) == 2 and all(int(r[1]) == 5 * int(r[0]) for r in rows)  # frame = 5 x step at 10 fps
    assert all(float(r[2]) == pytest.approx(int(r[1]) / 10) for r in rows)  # timestamp in seconds
    assert sheet.is_file() and sheet.stat().st_size > 0
    assert tool.main([video, "--weights", str(tmp_path / "model_final.pth"), "--select", "shots",
                      "--ratio", "0.6", "--output", str(sheet)]) == 0
    assert "keyframes (shots" in capsys.readouterr().out
