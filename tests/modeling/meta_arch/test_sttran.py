"""STTran (PredCls / SGCls / SGDet) and the video frequency baseline, on tiny synthetic videos."""

import numpy as np
import pytest
import torch

import sgg.modeling  # noqa: F401  (registers backbones and meta-architectures)
from sgg.config import get_cfg
from sgg.evaluation.video_scene_graph import evaluate_video_scene_graphs
from sgg.modeling import build_model
from sgg.modeling.meta_arch.video_baselines import VideoFrequencyBaseline, predicate_statistics


def tiny_cfg(mode="predcls"):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "STTran"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "SmallCNN"
    cfg.MODEL.BACKBONE.OUT_CHANNELS = 8
    s = cfg.MODEL.STTRAN
    s.OBJ_FEATURE_DIM, s.UNION_DIM, s.VISUAL_DIM, s.EMBED_DIM = 32, 8, 16, 8
    s.NUM_HEADS, s.DIM_FEEDFORWARD, s.OBJ_CLASSIFIER_HIDDEN, s.POS_DIM = 4, 32, 16, 8
    s.FREEZE_BACKBONE, s.DROPOUT = False, 0.0
    cfg.MODEL.VIDEO_DETECTOR.REPRESENTATION_DIM = 16
    cfg.MODEL.VIDEO_DETECTOR.SCORE_THRESH = 0.0
    cfg.MODEL.VIDEO_DETECTOR.BOX_BATCH_SIZE_PER_IMAGE = 16
    cfg.TEST.RELATION.MODE = mode
    return cfg


def make_video(seed=0, num_frames=3, size=(64, 80)):
    """A synthetic mapped video: person (row 0) + 2 objects per frame, AG-style relations, scale 0.5."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    frames = []
    for t in range(num_frames):
        boxes = np.array([[20 + 2 * t, 10, 60, 120], [70, 40, 100, 70], [10 + t, 90, 50, 118]], np.float32)
        relations = np.array([[0, 1, 0], [1, 0, 3], [0, 1, 17], [0, 2, 1], [2, 0, 4], [2, 0, 5], [0, 2, 23]])
        frames.append({"frame_key": f"v{seed}.mp4/{t:06d}.png", "height": 2 * h, "width": 2 * w, "boxes": boxes,
                       "labels": np.array([0, 10, 7]), "relations": relations,
                       "gt_boxes": torch.from_numpy(boxes * 0.5)})
    images = torch.randint(0, 255, (num_frames, 3, h, w), generator=g, dtype=torch.uint8)
    return {"video_id": f"v{seed}", "frames": frames, "images": images, "image_scale": 0.5, "image_size": (h, w)}


# ---------------------------------------------------------------------------------------------- model
def check_prediction(video, out, groups=(3, 6, 17)):
    assert len(out["frames"]) == len(video["frames"])
    for frame, pred in zip(video["frames"], out["frames"]):
        p = len(pred["pairs"])
        assert pred["attention"].shape == (p, groups[0]) and pred["spatial"].shape == (p, groups[1])
        assert pred["contacting"].shape == (p, groups[2])
        if p:
            assert torch.allclose(pred["attention"].sum(1), torch.ones(p), atol=1e-5)
            assert (pred["labels"][pred["pairs"][:, 0]] == 0).all()  # subject column is the person
            assert (pred["pairs"] < len(pred["boxes"])).all()


def test_predcls_trains_and_predicts_in_original_pixels():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("predcls"))
    video = make_video()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        losses = model([video])
        assert set(losses) == {"loss_attention", "loss_spatial", "loss_contacting"}
        total = sum(losses.values())
        first = float(total.detach()) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total.detach()) < 0.5 * first  # it fits one video
    assert model.features.backbone.body[0][0].weight.grad is not None  # gradients reach the (trainable) backbone
    model.eval()
    out = model([video])[0]
    check_prediction(video, out)
    f0 = out["frames"][0]
    assert torch.equal(f0["boxes"], torch.from_numpy(video["frames"][0]["boxes"]))
    assert f0["pairs"].tolist() == [[0, 1], [0, 2]] and f0["labels"].tolist() == [0, 10, 7]
    gts = [{k: fr[k] for k in ("boxes", "labels", "relations")} for fr in video["frames"]]
    # With constraint one spatial predicate per pair can be right: 6 of the 7 GT triplets per frame at most.
    assert evaluate_video_scene_graphs(gts, out["frames"], constraint="with")["R@20"] == pytest.approx(600 / 7)


def test_sgcls_has_object_loss_and_one_person_per_frame():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("sgcls"))
    video = make_video(1)
    losses = model.train()([video])
    assert "loss_object" in losses and torch.isfinite(sum(losses.values()))
    out = model.eval()([video])[0]
    check_prediction(video, out)
    for pred in out["frames"]:
        assert (pred["labels"] == 0).sum() == 1 and len(pred["pairs"]) == 2


def test_sgdet_trains_detector_and_outputs_detections():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("sgdet"))
    video = make_video(2, num_frames=2)
    losses = model.train()([video])
    assert {"loss_det_objectness", "loss_det_classifier", "loss_object"} <= set(losses)
    sum(losses.values()).backward()
    assert model.detector.rpn.head.conv[0][0].weight.grad is not None
    out = model.eval()([video])[0]
    check_prediction(video, out)
    boxes = torch.cat([f["boxes"] for f in out["frames"]])
    assert len(boxes) > 0 and (boxes[:, 2] <= 160 + 1e-3).all()  # original pixels (2 x the 80 px input)


def test_bad_configs_fail_clearly():
    cfg = tiny_cfg("predcls")
    cfg.TEST.RELATION.MODE = "relcls"
    with pytest.raises(ValueError, match="predcls"):
        build_model(cfg)
    cfg = tiny_cfg("predcls")
    cfg.MODEL.STTRAN.MASK_SIZE = 20
    with pytest.raises(ValueError, match="MASK_SIZE"):
        build_model(cfg)
    model = build_model(tiny_cfg("predcls"))
    video = make_video()
    video["images"] = video["images"][:2]
    with pytest.raises(ValueError, match="2 images for 3 frame"):
        model.train()([video])


# ---------------------------------------------------------------------------------------------- baseline
def test_frequency_baseline_scores_are_training_frequencies():
    videos = [make_video(0), make_video(1)]
    stats = predicate_statistics(videos)
    assert stats["pair_counts"][10] == 6 and stats["predicate_counts"][10, 17] == 6
    model = VideoFrequencyBaseline(mode="predcls", statistics=stats).eval()
    out = model([videos[0]])[0]
    check_prediction(videos[0], out)
    f = out["frames"][0]
    assert f["attention"][0].tolist() == [1.0, 0.0, 0.0]  # class 10 is always looking_at
    assert f["spatial"][1].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # class 7: beneath + in_front_of
    sgcls = VideoFrequencyBaseline(mode="sgcls", statistics=stats).eval()([videos[0]])[0]["frames"][0]
    assert sgcls["labels"].tolist()[0] == 0 and len(set(sgcls["labels"].tolist()[1:])) == 1
    sgdet = VideoFrequencyBaseline(mode="sgdet", statistics=stats, sgdet_num_objects=2).eval()([videos[0]])
    boxes = sgdet[0]["frames"][0]["boxes"]
    assert torch.allclose(boxes[0], torch.tensor([22.0, 10.0, 60.0, 120.0]))  # mean person box of the 6 frames
    with pytest.raises(RuntimeError, match="nothing to train"):
        model.train()([videos[0]])


def test_reference_duplicate_class_suppression():
    from sgg.modeling.meta_arch.sttran import suppress_duplicate_classes

    # frame 0: person + three boxes labelled 3 (the mode) -> the two less confident ones move to their next class;
    # the least confident one's next best is the person class: it leaves the pairs, the frame's person stays
    probs = torch.tensor([[0.9, 0.05, 0.0, 0.05], [0.1, 0.2, 0.0, 0.7], [0.05, 0.35, 0.1, 0.5],
                          [0.5, 0.1, 0.0, 0.4], [0.8, 0.1, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0]])
    labels = torch.tensor([0, 3, 3, 3, 0, 1])
    scores = torch.tensor([0.9, 0.7, 0.5, 0.4, 0.8, 0.8])
    is_person = torch.tensor([True, False, False, False, True, False])
    frame_idx = torch.tensor([0, 0, 0, 0, 1, 1])
    new_labels, new_scores, excluded = suppress_duplicate_classes(probs, labels, scores, is_person, frame_idx, 2)
    assert new_labels.tolist() == [0, 3, 1, 0, 0, 1]
    assert torch.allclose(new_scores, torch.tensor([0.9, 0.7, 0.35, 0.5, 0.8, 0.8]))
    assert excluded.tolist() == [True, False, False, True, True, False]
    assert labels.tolist() == [0, 3, 3, 3, 0, 1]  # inputs untouched
