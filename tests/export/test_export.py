"""sgg.export: every family's exported core (TorchScript and ONNX) equals the eager model on random inputs of sizes
other than the one it was traced on, and the post-processed predictions equal the model's own ``forward``."""

import copy

import numpy as np
import pytest
import torch

from sgg.config import get_cfg
from sgg.export import (
    ExportError,
    build_core,
    export_onnx,
    export_torchscript,
    load_runner,
    max_abs_diff,
    quantize_model,
)
from sgg.modeling import build_model
from sgg.modeling.backbone.small_cnn import SmallCNN
from sgg.modeling.matchers.hungarian import IterativeHungarianMatcher
from sgg.modeling.meta_arch.detr import DETR
from sgg.modeling.meta_arch.speaq import SpeaQ
from tests.modeling.t2v_tiny import tiny_t2v_model

TOL = 1e-4  # fp32 round trip, as docs/deploy.md states


def _small_cnn(channels):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.OUT_CHANNELS = channels
    return SmallCNN(cfg)


def tiny_detr():
    torch.manual_seed(0)
    return DETR(backbone=_small_cnn(16), num_classes=3, num_predicates=4, num_queries=4, hidden_dim=16, nheads=2,
                dim_feedforward=32, enc_layers=1, dec_layers=1, dropout=0.0)


def tiny_speaq():
    """One decoder layer (no between-layer graph attention): the smallest SpeaQ; top 20 triplets."""
    torch.manual_seed(0)
    return SpeaQ(backbone=_small_cnn(16), matcher=IterativeHungarianMatcher(), num_classes=3, num_predicates=4,
                 num_queries=6, hidden_dim=16, nheads=2, dim_feedforward=32, enc_layers=1, dec_layers=1, dropout=0.0,
                 topk=20)


def _round_trip(core, trace_inputs, check_inputs, tmp_path):
    """Export ``core`` both ways on ``trace_inputs``; returns {format: (runner, max abs diff on check_inputs)}."""
    with torch.no_grad():
        expected = core(*check_inputs)
    out = {}
    for fmt, fn in (("torchscript", export_torchscript), ("onnx", export_onnx)):
        path = fn(core, trace_inputs, str(tmp_path / f"{core.family}.{fmt}"))
        runner = load_runner(fmt, path, core)
        out[fmt] = (runner, max_abs_diff(runner(*check_inputs), expected))
    return out


def _image_input(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "height": 2 * h,
            "width": 2 * w}


@pytest.mark.parametrize("make", [tiny_detr, tiny_speaq], ids=["detr", "speaq"])
def test_image_sgg_round_trip(make, tmp_path):
    model = make().eval()
    core = build_core(model)
    small, other = _image_input(64, 64, 0), _image_input(48, 80, 1)
    results = _round_trip(core, core.inputs(small), core.inputs(other), tmp_path)
    with torch.no_grad():
        eager = model([other])[0]
    for fmt, (runner, diff) in results.items():
        assert diff <= TOL, (fmt, diff)
        pred = core.postprocess(runner(*core.inputs(other)), other)
        assert set(pred) == set(eager)
        for key, value in eager.items():
            if value.dtype.is_floating_point:
                assert max_abs_diff([pred[key]], [value]) <= TOL, (fmt, key)
            else:
                assert torch.equal(pred[key], value), (fmt, key)


def _tiny_sttran():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "STTran"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "SmallCNN"
    cfg.MODEL.BACKBONE.OUT_CHANNELS = 8
    s = cfg.MODEL.STTRAN
    s.OBJ_FEATURE_DIM, s.UNION_DIM, s.VISUAL_DIM, s.EMBED_DIM = 32, 8, 16, 8
    s.NUM_HEADS, s.DIM_FEEDFORWARD, s.DEC_LAYERS, s.DROPOUT = 4, 32, 2, 0.0
    cfg.TEST.RELATION.MODE = "predcls"
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _video(objects_per_frame, size, seed):
    """A mapped video (ActionGenomeMapper's keys) with a person + ``objects_per_frame[t]`` objects in frame t."""
    rng = np.random.RandomState(seed)
    h, w = size
    frames = []
    for t, n in enumerate(objects_per_frame):
        xy = rng.uniform(0, [w - 20, h - 20], size=(n + 1, 2))
        wh = rng.uniform(8, 20, size=(n + 1, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        frames.append({"frame_key": f"v{seed}/{t}", "boxes": boxes * 2, "gt_boxes": torch.from_numpy(boxes),
                       "labels": np.concatenate([[0], rng.randint(1, 36, n)])})
    images = torch.from_numpy(rng.randint(0, 256, (len(frames), 3, h, w)).astype(np.uint8))
    return {"video_id": f"v{seed}", "frames": frames, "images": images, "image_scale": 0.5}


def test_video_sgg_round_trip(tmp_path):
    model = _tiny_sttran()
    core = build_core(model)
    traced_on, other = _video([2, 3, 1], (48, 64), 0), _video([1, 4, 2, 3, 2], (56, 72), 1)
    results = _round_trip(core, core.inputs(traced_on), core.inputs(other), tmp_path)
    with torch.no_grad():
        eager = model([other])[0]["frames"]
    for fmt, (runner, diff) in results.items():
        assert diff <= TOL, (fmt, diff)
        pred = core.postprocess(runner(*core.inputs(other)), other)["frames"]
        assert len(pred) == len(eager) == 5
        for p, e in zip(pred, eager):
            assert torch.equal(p["pairs"], e["pairs"]) and torch.equal(p["labels"], e["labels"])
            for key in ("boxes", "attention", "spatial", "contacting"):
                assert max_abs_diff([p[key]], [e[key]]) <= TOL, (fmt, key)


def test_keyframe_round_trip(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file("configs/quick/keyframe_demo.yaml")
    cfg.merge_from_list(["MODEL.KEYFRAME.D_MODEL", "32", "MODEL.KEYFRAME.NUM_HEADS", "4", "MODEL.KEYFRAME.NUM_LAYERS",
                         "1", "MODEL.KEYFRAME.DIM_FEEDFORWARD", "64", "MODEL.KEYFRAME.SCORER_HIDDEN", "16"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    core = build_core(model)
    g = torch.Generator().manual_seed(0)
    short = {"frames": torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8), "video_id": "a"}
    longer = {"frames": torch.randint(0, 256, (15, 3, 32, 32), generator=g, dtype=torch.uint8), "video_id": "b"}
    results = _round_trip(core, core.inputs(short), core.inputs(longer), tmp_path)
    with torch.no_grad():
        eager = model([longer])[0]["scores"]
    for fmt, (runner, diff) in results.items():
        assert diff <= TOL, (fmt, diff)
        assert max_abs_diff([core.postprocess(runner(*core.inputs(longer)), longer)["scores"]], [eager]) <= TOL
    # The int8 model (MODEL.QUANTIZATION dynamic) runs eagerly and traces; its TorchScript equals its eager output.
    qcore = build_core(quantize_model(copy.deepcopy(model), "dynamic").eval())
    runner = load_runner("torchscript", export_torchscript(qcore, core.inputs(short), str(tmp_path / "q.pt")), qcore)
    with torch.no_grad():
        assert max_abs_diff(runner(*core.inputs(longer)), qcore(*core.inputs(longer))) <= TOL
        assert 0 < max_abs_diff(qcore(*core.inputs(longer)), core(*core.inputs(longer))) < 0.1  # int8 really used


def test_text_to_video_unet_round_trip(tmp_path):
    model = tiny_t2v_model().eval()
    core = build_core(model)
    g = torch.Generator().manual_seed(0)
    c, d = model.unet.config.in_channels, model.unet.config.cross_attention_dim
    trace = (torch.randn(1, c, 4, 4, 4, generator=g), torch.tensor([10]), torch.randn(1, 16, d, generator=g))
    check = (torch.randn(2, c, 6, 4, 4, generator=g), torch.tensor([999, 3]), torch.randn(2, 16, d, generator=g))
    for fmt, (_, diff) in _round_trip(core, trace, check, tmp_path).items():
        assert diff <= TOL, (fmt, diff)


def test_unexportable_models_say_why():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "STTran"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "SmallCNN"
    cfg.MODEL.BACKBONE.OUT_CHANNELS = 8
    cfg.MODEL.STTRAN.OBJ_FEATURE_DIM, cfg.MODEL.STTRAN.VISUAL_DIM, cfg.MODEL.STTRAN.EMBED_DIM = 16, 16, 8
    cfg.MODEL.STTRAN.NUM_HEADS, cfg.MODEL.STTRAN.UNION_DIM = 4, 8
    cfg.TEST.RELATION.MODE = "sgcls"
    with pytest.raises(ExportError, match="PredCls"):
        build_core(build_model(cfg))
    with pytest.raises(ExportError, match="no export core"):
        build_core(torch.nn.Linear(2, 2))
