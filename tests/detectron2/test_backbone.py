"""detectron2 -> sgg: D2Backbone from detectron2 configs and sgg keys, detectron2-format weights, a short training."""

import os
import pickle

import numpy as np
import pytest
import torch

from sgg.checkpoint import CheckpointError
from sgg.config import ConfigError, get_cfg
from sgg.config.detectron2 import merge_detectron2_config, resolve_detectron2_config_file
from sgg.modeling import build_backbone
from sgg.modeling.backbone.detectron2 import D2Backbone, detectron2_backbone_cfg

from .common import TINY_R50_FPN, requires_detectron2, sgg_opts

pytestmark = requires_detectron2


def _cfg(d2_keys=TINY_R50_FPN, *extra):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "D2Backbone", "MODEL.BACKBONE.FREEZE_AT", 0,
                         *sgg_opts(d2_keys), *extra])
    return cfg


def _images(n=2, h=70, w=93, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def test_output_is_the_detectron2_feature_of_detectron2_normalised_pixels():
    """The sgg-normalised RGB input gives exactly what the detectron2 backbone computes on detectron2's own input
    (BGR, its PIXEL_MEAN/STD, padded to 32), cropped to the image: the re-normalisation and padding are right."""
    torch.manual_seed(0)
    cfg = _cfg(TINY_R50_FPN, "MODEL.BACKBONE.D2.OUT_FEATURE", "p3")
    backbone = build_backbone(cfg).eval()
    assert (backbone.out_channels, backbone.stride, backbone.size_divisibility) == (16, 8, 32)
    raw = _images().float()
    mean, std = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1), torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    with torch.no_grad():
        out = backbone((raw - mean) / std)
        flipped = backbone((raw[:, [2, 1, 0]] - mean) / std)  # the wrong channel order is far off
        d2_in = (raw.flip(1) - torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)) / 1.0  # detectron2 defaults
        d2_in = torch.nn.functional.pad(d2_in, (0, 96 - 93, 0, 96 - 70))
        ref = backbone.backbone(d2_in)["p3"][..., :9, :12]
    assert out.shape == (2, 16, 9, 12)
    scale = ref.abs().max().item()  # float32 rounding of the two normalisations, relative to the features' size
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * scale)
    assert (flipped - ref).abs().max().item() > 1e-2 * scale


def test_sgg_keys_map_to_detectron2_and_detectron2_keys_override_them():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "D2Backbone", "MODEL.BACKBONE.DEPTH", 18, "MODEL.BACKBONE.FREEZE_AT", 3,
                         "MODEL.BACKBONE.NORM", "GN", "MODEL.BACKBONE.D2.MODEL.RESNETS.OUT_FEATURES", '["res4"]'])
    d2 = detectron2_backbone_cfg(cfg)
    assert (d2.MODEL.RESNETS.DEPTH, d2.MODEL.BACKBONE.FREEZE_AT, d2.MODEL.RESNETS.NORM) == (18, 3, "GN")
    with pytest.raises(ConfigError, match="'build_resnet_backbone' refused the config: Must set "
                                          "MODEL.RESNETS.RES2_OUT_CHANNELS = 64 for R18/R34"):
        build_backbone(cfg)
    cfg.merge_from_list(["MODEL.BACKBONE.D2.MODEL.RESNETS.RES2_OUT_CHANNELS", 64])
    backbone = build_backbone(cfg)  # R-18 (basic blocks); FREEZE_AT 3 = stem + the first 2 stages, as in sgg
    assert (backbone.out_feature, backbone.out_channels, backbone.stride) == ("res4", 256, 16)
    frozen = {n.split(".")[1] for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "res2", "res3"}
    cfg.merge_from_list(["MODEL.BACKBONE.D2.MODEL.RESNETS.DEPTH", 34])  # inline detectron2 key wins
    assert detectron2_backbone_cfg(cfg).MODEL.RESNETS.DEPTH == 34


def test_a_detectron2_model_zoo_config_with_its_base_chain():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.D2.CONFIG_FILE", "detectron2://COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
                         "MODEL.BACKBONE.DEPTH", 50])
    d2 = detectron2_backbone_cfg(cfg)
    # _BASE_ Base-RCNN-FPN.yaml gives the FPN builder and features; the file itself sets depth 101 over sgg's 50.
    assert d2.MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone" and d2.MODEL.RESNETS.DEPTH == 101
    assert list(d2.MODEL.FPN.IN_FEATURES) == ["res2", "res3", "res4", "res5"]


def test_unknown_and_mistyped_keys_fail_with_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown detectron2 config key 'MODEL.BACKBONE.D2.MODEL.RESNETS.DEPTHH' "
                                          r".*Did you mean 'MODEL.BACKBONE.D2.MODEL.RESNETS.DEPTH'\?"):
        build_backbone(_cfg({"MODEL.RESNETS.DEPTHH": 18}))
    with pytest.raises(ConfigError, match=r"Unknown detectron2 config key 'MODEL.BACKBONE.D2.OUT_FEATUR'.*"
                                          r"Did you mean 'MODEL.BACKBONE.D2.OUT_FEATURE'\?"):
        build_backbone(_cfg({"OUT_FEATUR": "p3"}))
    with pytest.raises(ConfigError, match=r"MODEL.RESNETS.DEPTH.*Type mismatch"):
        build_backbone(_cfg({"MODEL.RESNETS.DEPTH": "deep"}))
    base = resolve_detectron2_config_file("detectron2://Base-RCNN-FPN.yaml", "test")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {os.path.abspath(base)}\nMODEL:\n  FPN:\n    OUT_CHANELS: 8\n")
    with pytest.raises(ConfigError, match=r"Unknown detectron2 config key 'MODEL.FPN.OUT_CHANELS' \(from detectron2 "
                                          r"config '.*bad.yaml'\). Did you mean 'MODEL.FPN.OUT_CHANNELS'\?"):
        build_backbone(_cfg({"CONFIG_FILE": str(bad)}))
    with pytest.raises(ConfigError, match="OUT_FEATURE 'p9' is not an output.*it returns \\['p2', 'p3'"):
        build_backbone(_cfg(TINY_R50_FPN, "MODEL.BACKBONE.D2.OUT_FEATURE", "p9"))
    with pytest.raises(ConfigError, match="BACKBONE_REGISTRY has no 'build_resnet_fnp_backbone'.*registered: .*"
                                          "build_resnet_fpn_backbone"):
        build_backbone(_cfg({**TINY_R50_FPN, "MODEL.BACKBONE.NAME": "build_resnet_fnp_backbone"}))


def _d2_faster_rcnn(seed=1):
    """A tiny detectron2 Faster R-CNN (its R-50-FPN backbone as TINY_R50_FPN) built by detectron2 itself."""
    from detectron2.config import get_cfg as d2_get_cfg
    from detectron2.modeling import build_model

    d2 = d2_get_cfg()
    d2.merge_from_list([x for k, v in TINY_R50_FPN.items() for x in (k, v)] + [
        "MODEL.DEVICE", "cpu", "MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.PROPOSAL_GENERATOR.NAME", "RPN",
        "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"], "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
        "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"], "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
        "MODEL.ROI_BOX_HEAD.NUM_FC", 2, "MODEL.ROI_BOX_HEAD.FC_DIM", 32, "MODEL.ANCHOR_GENERATOR.SIZES",
        [[32], [64], [128], [256], [512]], "MODEL.BACKBONE.FREEZE_AT", 0])
    torch.manual_seed(seed)
    return build_model(d2)


@pytest.mark.parametrize("fmt", ["pth", "pkl"])
def test_weights_written_by_detectron2s_checkpointer_load(tmp_path, fmt):
    from detectron2.checkpoint import DetectionCheckpointer

    detector = _d2_faster_rcnn()
    if fmt == "pth":
        DetectionCheckpointer(detector, save_dir=str(tmp_path)).save("model_final")
        path = tmp_path / "model_final.pth"
    else:  # detectron2 model-zoo .pkl: numpy arrays under "model", with an "__author__"
        path = tmp_path / "model_final.pkl"
        with open(path, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in detector.state_dict().items()},
                         "__author__": "test"}, f)
    torch.manual_seed(7)  # a different random init: every tensor must come from the file
    backbone = build_backbone(_cfg(TINY_R50_FPN, "MODEL.BACKBONE.WEIGHTS", str(path)))
    expected = {k: v for k, v in detector.state_dict().items() if k.startswith("backbone.")}
    got = backbone.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


def test_unsafe_missing_and_unfitting_weights_are_refused(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {}, "__author__": "x", "run": os.system}))
    with pytest.raises(CheckpointError, match="references the global 'posix.system'"):
        build_backbone(_cfg(TINY_R50_FPN, "MODEL.BACKBONE.WEIGHTS", str(evil)))
    with pytest.raises(CheckpointError, match="detectron2 weights not found: '.*nope.pkl'"):
        build_backbone(_cfg(TINY_R50_FPN, "MODEL.BACKBONE.WEIGHTS", str(tmp_path / "nope.pkl")))
    other = tmp_path / "other.pth"
    torch.save({"model": {"head.weight": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="no tensor of '.*other.pth' fits D2Backbone"):
        build_backbone(_cfg(TINY_R50_FPN, "MODEL.BACKBONE.WEIGHTS", str(other)))


def test_backbone_in_the_detr_demo_config_trains(tmp_path_factory, monkeypatch, tmp_path):
    """sgg's DETR demo config with a tiny detectron2 R-50-FPN (p3, stride 8 like the demo's SmallCNN), trained for a
    few iterations by tools/train_net.py on the demo data; the detectron2 weights are trained and saved."""
    from tests.engine.helpers import read_metrics, run_cli

    root = tmp_path_factory.getbasetemp() / "shared_sgg_datasets"  # shared with the other demo-data tests
    monkeypatch.setenv("SGG_DATASETS", str(root))
    out = tmp_path / "out"
    opts = [*sgg_opts(TINY_R50_FPN), "MODEL.BACKBONE.NAME", "D2Backbone", "MODEL.BACKBONE.D2.OUT_FEATURE", "p3",
            "MODEL.BACKBONE.DEPTH", 50,  # Base-SpeaQ.yaml says 101 (upstream's); sgg's DEPTH maps to detectron2's
            "SOLVER.MAX_ITER", 4, "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", 0, "SOLVER.IMS_PER_BATCH", 2,
            "DATALOADER.NUM_WORKERS", 0, "DATASETS.TEST", "()", "LOG_PERIOD", 1, "SOLVER.CHECKPOINT_PERIOD", 100]
    res = run_cli("--config-file", "configs/quick/detr_demo.yaml", "OUTPUT_DIR", str(out), *map(str, opts))
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [r for r in read_metrics(str(out)) if "total_loss" in r]
    assert len(rows) == 4 and all(np.isfinite(r["total_loss"]) for r in rows)
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert any(k.startswith("backbone.backbone.bottom_up.res2.") for k in state)
    fresh = D2Backbone(_cfg(TINY_R50_FPN, "MODEL.BACKBONE.D2.OUT_FEATURE", "p3")).state_dict()
    trained = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    assert trained.keys() == fresh.keys()
    first = read_metrics(str(out))[0]
    assert first["lr"] > 0  # the optimizer held the detectron2 parameters (their LR group is logged)


def test_a_detectron2_yaml_merged_into_the_sgg_backbone_section(tmp_path):
    """merge_detectron2_config: the model keys of a _BASE_ chain land in MODEL.BACKBONE.D2 (and are what detectron2
    itself reads from the file), training sections are left out, the result round-trips through config.yaml."""
    from detectron2.config import get_cfg as d2_get_cfg

    cfg = get_cfg()
    path = "detectron2://COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
    dropped = merge_detectron2_config(cfg, path)
    assert "SOLVER" in dropped and "DATASETS" in dropped and "MODEL" not in dropped
    section = cfg.MODEL.BACKBONE.D2
    assert section.MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone" and section.MODEL.RESNETS.DEPTH == 50
    assert "SOLVER" not in section and section.CONFIG_FILE == ""
    reference = d2_get_cfg()
    reference.merge_from_file(resolve_detectron2_config_file(path, "test"))
    ours = detectron2_backbone_cfg(cfg)
    assert ours.MODEL == reference.MODEL and ours.INPUT.FORMAT == reference.INPUT.FORMAT
    (tmp_path / "config.yaml").write_text(cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(tmp_path / "config.yaml"))
    assert detectron2_backbone_cfg(again).MODEL == reference.MODEL
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  RESNETS:\n    DEPTHH: 18\n")
    with pytest.raises(ConfigError, match=r"Unknown detectron2 config key 'MODEL.RESNETS.DEPTHH'.*"
                                          r"Did you mean 'MODEL.RESNETS.DEPTH'\?"):
        merge_detectron2_config(cfg, str(bad))
