"""DSG-DETR: the model on tiny synthetic videos (every mode, every tracking method, the tracklet stage), and the engine
path on the demo twin (train, evaluate, exact resume, eval-only) in PredCls / SGCls / SGDet."""

import json
import os
import shutil

import pytest
import torch

import sgg.modeling  # noqa: F401  (registers backbones and meta-architectures)
from sgg.modeling import build_model
from sgg.modeling.meta_arch.dsgdetr import frame_numbers
from sgg.modeling.video_sgg import gather_gt_boxes
from tests.engine.helpers import load_model_state, run_cli
from tests.modeling.meta_arch.test_sttran import check_prediction, make_video, tiny_cfg


def dsg_cfg(mode="predcls", tracking="hungarian"):
    cfg = tiny_cfg(mode)
    cfg.MODEL.META_ARCHITECTURE = "DSGDETR"
    d = cfg.MODEL.DSGDETR
    d.TRACKING, d.OBJECT_HEADS, d.BOX_DIM, d.OBJECT_FEEDFORWARD = tracking, 4, 8, 32
    return cfg


def model_for(mode="predcls", tracking="hungarian", seed=0):
    torch.manual_seed(seed)
    return build_model(dsg_cfg(mode, tracking))


@pytest.mark.parametrize("tracking", ["hungarian", "class", "none"])
def test_predcls_trains_and_predicts_with_track_ids(tracking):
    model = model_for("predcls", tracking)
    video = make_video()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(20):
        losses = model([video])
        assert set(losses) == {"loss_attention", "loss_spatial", "loss_contacting"}
        total = sum(losses.values())
        first = float(total.detach()) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total.detach()) < 0.5 * first
    assert model.tracklet_encoder.layers[0].linear1.weight.grad is not None  # the tracklet stage is trained
    model.eval()
    out = model([video])[0]
    check_prediction(video, out)
    ids = [f["track_ids"].tolist() for f in out["frames"]]
    if tracking == "none":
        assert ids == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    else:  # the person, the object of class 10 and the one of class 7 keep one id each over the 3 frames
        assert ids == [[0, 1, 2]] * 3


def test_sgcls_has_both_object_losses_and_one_person_per_frame():
    model = model_for("sgcls")
    video = make_video()
    model.train()
    losses = model([video])
    assert {"loss_object", "loss_object_prior"} <= set(losses)
    sum(losses.values()).backward()
    assert model.prior_classifier.decoder[0].weight.grad is not None
    assert model.object_head[0].weight.grad is not None
    model.eval()
    out = model([video])[0]
    check_prediction(video, out)
    for frame in out["frames"]:
        assert int((frame["labels"] == 0).sum()) == 1


def test_sgdet_trains_detector_and_tracks_detections():
    model = model_for("sgdet")
    video = make_video()
    model.train()
    losses = model([video])
    assert any(k.startswith("loss_det") for k in losses) and "loss_object" in losses
    model.eval()
    out = model([video])[0]
    check_prediction(video, out)
    for frame in out["frames"]:
        assert len(frame["track_ids"]) == len(frame["boxes"])


def test_tracklets_carry_information_across_frames_only_when_tracked():
    """Changing frame 0's pixels changes frame 2's refined object features through the tracklet transformer; with
    tracking "none" a box only sees itself, so frame 2 is unaffected (the spatial / temporal stages aside)."""
    for tracking, linked in (("class", True), ("none", False)):
        model = model_for("predcls", tracking).eval()
        video = make_video()
        refined = {}
        for name, v in (("a", video), ("b", dict(video, images=video["images"].clone()))):
            if name == "b":
                v["images"][0] = 255 - v["images"][0]
            fmap = model.features.frame_features(v["images"])
            boxes, _, labels, frame_idx, _ = gather_gt_boxes(v, model.device)
            refined[name], ids, _, _ = model._object_stage(v, fmap, boxes, frame_idx, gt_labels=labels)
        frame2 = frame_idx == 2
        same = torch.allclose(refined["a"][frame2], refined["b"][frame2], atol=1e-6)
        assert same != linked, tracking


def test_temporal_encoder_groups_pairs_by_the_objects_tracklet(monkeypatch):
    model = model_for("predcls", "hungarian").eval()
    seen = {}
    original = model.temporal_encoder.forward

    def spy(x, groups, positions=None):
        seen["groups"], seen["positions"] = groups.clone(), positions.clone()
        return original(x, groups, positions)

    monkeypatch.setattr(model.temporal_encoder, "forward", spy)
    model([make_video(num_frames=4)])
    # pairs (person, object 1), (person, object 2) per frame: object 1 is track 1, object 2 track 2, frames 0..3
    assert seen["groups"].tolist() == [1, 2] * 4
    assert seen["positions"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_frame_numbers_from_ag_keys():
    video = make_video(num_frames=3)
    assert frame_numbers(video) == [0, 1, 2]
    for t, f in enumerate(video["frames"]):
        f["frame_key"] = f"v.mp4/{100 + 30 * t:06d}.png"
    assert frame_numbers(video) == [100, 130, 160]
    video["frames"][2]["frame_key"] = "v.mp4/last.png"  # no number: fall back to frame indices
    assert frame_numbers(video) == [0, 1, 2]


def test_bad_configs_fail_clearly():
    cfg = dsg_cfg()
    cfg.MODEL.DSGDETR.TRACKING = "sort"
    with pytest.raises(ValueError, match="MODEL.DSGDETR.TRACKING"):
        build_model(cfg)
    cfg = dsg_cfg()
    cfg.MODEL.DSGDETR.BOX_DIM = 9  # 32 + 8 + 9 = 49: odd, not divisible by 4 heads
    with pytest.raises(ValueError, match="OBJECT_HEADS"):
        build_model(cfg)
    cfg = dsg_cfg()
    cfg.MODEL.DSGDETR.TRACK_COSTS = (1.0, 1.0)
    with pytest.raises(ValueError, match="TRACK_COSTS"):
        build_model(cfg)


# ------------------------------------------------------------------------------------- engine, on the demo twin
TINY = ["MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.STTRAN.OBJ_FEATURE_DIM", "16", "MODEL.STTRAN.UNION_DIM", "8",
        "MODEL.STTRAN.VISUAL_DIM", "8", "MODEL.STTRAN.EMBED_DIM", "4", "MODEL.STTRAN.DIM_FEEDFORWARD", "16",
        "MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN", "8", "MODEL.STTRAN.POS_DIM", "4", "MODEL.STTRAN.NUM_HEADS", "4",
        "MODEL.DSGDETR.BOX_DIM", "4", "MODEL.DSGDETR.OBJECT_HEADS", "4", "MODEL.DSGDETR.OBJECT_FEEDFORWARD", "16",
        "MODEL.VIDEO_DETECTOR.REPRESENTATION_DIM", "16", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "0",
        "LOG_PERIOD", "1"]
CONFIGS = {"predcls": "configs/quick/dsgdetr_demo.yaml", "sgcls": "configs/quick/dsgdetr_sgcls_demo.yaml",
           "sgdet": "configs/quick/dsgdetr_sgdet_demo.yaml"}


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_train_resume_and_eval_only_on_the_demo(mode, tmp_path):
    cfg = CONFIGS[mode]
    straight = tmp_path / "straight"
    r = run_cli("--config-file", cfg, "OUTPUT_DIR", str(straight), "DATASETS.TEST", "()", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    # Interrupted after iteration 2 (model_0000001.pth), then resumed: the same final weights, bit for bit.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / "model_0000001.pth", resumed / "model_0000001.pth")
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    r = run_cli("--config-file", cfg, "--resume", "OUTPUT_DIR", str(resumed), "DATASETS.TEST", "()", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_model_state(straight / "model_final.pth"), load_model_state(resumed / "model_final.pth")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    mid = load_model_state(straight / "model_0000001.pth")
    assert not torch.equal(mid["attention_head.weight"], a["attention_head.weight"])
    assert any(k.startswith("tracklet_encoder.") for k in a)
    # Eval-only of the final weights with the video evaluator.
    ev = tmp_path / "eval"
    r = run_cli("--config-file", cfg, "--eval-only", "OUTPUT_DIR", str(ev), "MODEL.WEIGHTS",
                str(straight / "model_final.pth"), *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(os.path.join(ev, "inference", "demo_ag_test", "results.json")) as f:
        results = json.load(f)
    for key in ("with/R@20", "no/R@50", "with/mR@20"):
        assert 0.0 <= results["video_sgg"][key] <= 100.0
