"""Shared parts of the STTran family (sgg/modeling/video_sgg.py): box masks, targets, word vectors, pairs, losses,
the per-frame output format and the backbone feature source."""

import numpy as np
import pytest
import torch

from sgg.config import get_cfg
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES, AG_PREDICATES
from sgg.data.stket_priors import compute_stket_priors, save_stket_priors
from sgg.modeling import build_model
from sgg.modeling.backbone.small_cnn import SmallCNN
from sgg.modeling.video_sgg import (
    BackboneRoIFeatures,
    RelationFeatures,
    assign_person_labels,
    attention_loss,
    gather_gt_boxes,
    load_word_vectors,
    multi_label_loss,
    pair_box_masks,
    pairs_of_persons,
    predcls_persons,
    relation_targets,
    split_frames,
    training_pairs,
    video_relation_targets,
)
from tests.modeling.meta_arch.test_sttran import make_video, tiny_cfg


def test_pair_box_masks_exact_coverage():
    sub = torch.tensor([[0.0, 0.0, 5.0, 10.0]])  # left half of the union box (0, 0, 10, 10)
    obj = torch.tensor([[2.5, 0.0, 10.0, 10.0]])
    m = pair_box_masks(sub, obj, size=4)
    assert m.shape == (1, 2, 4, 4)
    assert torch.allclose(m[0, 0, :, :2], torch.full((4, 2), 0.5))
    assert torch.allclose(m[0, 0, :, 2:], torch.full((4, 2), -0.5))
    # object starts at x = 1.0 grid units: cell 0 empty, cells 1..3 full
    assert torch.allclose(m[0, 1, :, 0], torch.full((4,), -0.5))
    assert torch.allclose(m[0, 1, :, 1:], torch.full((4, 3), 0.5))
    partial = pair_box_masks(torch.tensor([[0.0, 0.0, 1.5, 4.0]]), torch.tensor([[0.0, 0.0, 4.0, 4.0]]), size=4)
    assert partial[0, 0, 0, 1].item() == pytest.approx(0.0)  # half-covered cell -> 0.5 - 0.5
    with pytest.raises(ValueError, match="xyxy"):
        pair_box_masks(torch.zeros(2, 4), torch.zeros(3, 4))


def test_relation_targets_follow_ag_directions():
    frame = {"relations": np.array([[0, 1, 1], [1, 0, 5], [0, 1, 14], [0, 1, 9], [2, 0, 3], [0, 2, 25]])}
    att, spa, con = relation_targets(frame, torch.tensor([1, 2]), (3, 6, 17))
    assert att.tolist() == [1, -100]  # object 2 has no attention relation -> ignored
    assert spa[0].nonzero().flatten().tolist() == [2] and spa[1].nonzero().flatten().tolist() == [0]
    assert con[0].nonzero().flatten().tolist() == [0, 5] and con[1].nonzero().flatten().tolist() == [16]
    with pytest.raises(ValueError, match="outside"):
        relation_targets({"relations": np.array([[0, 1, 26]])}, torch.tensor([1]), (3, 6, 17))


def test_word_vectors_average_multiword_names(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("closet 1 2 3\ncabinet 3 4 5\nperson 0 0 1\nsofa 9 9 9\n")
    vecs, missing = load_word_vectors(str(path), ["person", "closet/cabinet", "sofa/couch", "zzz"], 3)
    assert vecs[0].tolist() == [0, 0, 1] and vecs[1].tolist() == [2, 3, 4] and vecs[2].tolist() == [9, 9, 9]
    assert missing == ["zzz"]
    with pytest.raises(ValueError, match="expected 4"):
        load_word_vectors(str(path), ["person"], 4)
    with pytest.raises(FileNotFoundError, match="WORD_VECTORS"):
        load_word_vectors(str(tmp_path / "none.txt"), ["person"], 3)


def _video():
    """Two frames: (person, cup) and (person, cup, chair); relations in AG's directions."""
    frames = []
    for t, n in enumerate((2, 3)):
        boxes = np.array([[0, 0, 20, 40], [10, 10, 20, 20], [30, 0, 40, 10]][:n], dtype=np.float32) + t
        rel = [[0, 1, 0], [1, 0, 5], [0, 1, 12]] + ([[0, 2, 1], [2, 0, 4]] if n == 3 else [])
        frames.append({"frame_key": f"v/{t}", "boxes": boxes * 2, "gt_boxes": boxes,
                       "labels": np.array([0, 5, 9][:n]), "relations": np.array(rel)})
    return {"video_id": "v", "frames": frames, "images": torch.zeros(2, 3, 48, 64, dtype=torch.uint8)}


def test_gt_boxes_pairs_and_targets_of_a_video():
    video = _video()
    gt = gather_gt_boxes(video, torch.device("cpu"))
    assert gt.frame_idx.tolist() == [0, 0, 1, 1, 1] and gt.rows.tolist() == [0, 1, 0, 1, 2]
    assert torch.equal(gt.original, gt.boxes * 2) and gt.labels.tolist() == [0, 5, 0, 5, 9]
    pairs = training_pairs(gt)
    assert pairs.tolist() == [[0, 1], [2, 3], [2, 4]]
    att, spa, con = video_relation_targets(video, gt, pairs, (3, 6, 17))
    assert att.tolist() == [0, 0, 1]
    assert spa.argmax(1).tolist() == [2, 2, 1] and spa.sum().item() == 3
    assert con[:, 3].tolist() == [1.0, 1.0, 0.0] and con.sum().item() == 2
    video["frames"][1]["gt_boxes"] = np.zeros((0, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="v/1"):
        gather_gt_boxes(video, torch.device("cpu"))


def test_person_rules_and_inference_pairs():
    frame_idx = torch.tensor([0, 0, 1, 1, 1])
    person, is_person = predcls_persons(frame_idx, 3)
    assert person.tolist() == [0, 2, -1] and is_person.tolist() == [True, False, True, False, False]
    assert pairs_of_persons(person, is_person, frame_idx).tolist() == [[0, 1], [2, 3], [2, 4]]
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.1, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.5, 0.1, 0.4]])
    labels, scores, person, is_person = assign_person_labels(probs, frame_idx, 3)
    # frame 0: box 1 is the most person-like; frame 1: boxes 3 and 4 tie -> the first is the person
    assert person.tolist() == [1, 3, -1] and labels.tolist() == [1, 0, 2, 0, 2]
    assert torch.allclose(scores, torch.tensor([0.8, 0.6, 0.6, 0.5, 0.4]))


def test_split_frames_reindexes_pairs_and_splits_every_pair_output():
    frame_idx = torch.tensor([0, 0, 1, 1, 1])
    boxes = torch.arange(20.0).view(5, 4)
    pairs = torch.tensor([[0, 1], [2, 3], [2, 4]])
    out = split_frames(3, frame_idx, boxes, torch.arange(5), torch.ones(5), pairs,
                       attention=torch.eye(3), uncertainty=torch.tensor([0.1, 0.2, 0.3]))
    assert [len(f["boxes"]) for f in out] == [2, 3, 0]
    assert out[1]["pairs"].tolist() == [[0, 1], [0, 2]] and out[1]["uncertainty"].tolist() == pytest.approx([0.2, 0.3])
    assert out[2]["attention"].shape == (0, 3) and out[0]["labels"].tolist() == [0, 1]


def test_multi_label_losses():
    logits = torch.tensor([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss = multi_label_loss(logits, target, "bce")
    assert torch.equal(loss, torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), target))
    # a NaN logit gives a NaN loss (the trainer's guard skips the step) instead of raising
    assert torch.isnan(multi_label_loss(torch.tensor([[float("nan"), 0.0, 1.0]]), target[:1], "bce"))
    margin = multi_label_loss(logits, target, "margin")
    p = torch.sigmoid(logits)
    # MultiLabelMarginLoss, restated: sum over positives j and negatives i of max(0, 1 - (p_j - p_i)) / C, mean
    expected = ((1 - (p[0, 0] - p[0, 1])).clamp(min=0) + (1 - (p[0, 2] - p[0, 1])).clamp(min=0)) / 3 + (
        (1 - (p[1, 2] - p[1, 0])).clamp(min=0) + (1 - (p[1, 2] - p[1, 1])).clamp(min=0)) / 3
    assert margin.item() == pytest.approx(expected.item() / 2, rel=1e-6)
    with pytest.raises(ValueError, match="margin"):
        multi_label_loss(logits, target, "hinge")
    none = attention_loss(torch.randn(2, 3, requires_grad=True), torch.tensor([-100, -100]))
    assert none.item() == 0.0 and none.requires_grad


def test_backbone_feature_source_and_relation_vector():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.OUT_CHANNELS = 8
    source = BackboneRoIFeatures(backbone=SmallCNN(cfg), object_dim=12, freeze_backbone=True)
    source.train()
    assert not source.backbone.training and not any(p.requires_grad for p in source.backbone.parameters())
    assert source.box_head[1].weight.requires_grad
    video = _video()
    fmap = source.frame_features(video["images"])
    gt = gather_gt_boxes(video, torch.device("cpu"))
    feats = source.object_features(fmap, gt.boxes, gt.frame_idx)
    assert feats.shape == (5, 12) and source.object_features(fmap, gt.boxes[:0], gt.frame_idx[:0]).shape == (0, 12)
    pairs = training_pairs(gt)
    union = source.union_features(fmap, gt.boxes[pairs[:, 1]], gt.frame_idx[pairs[:, 1]])
    assert union.shape == (3, 8, 7, 7)
    rel = RelationFeatures(object_dim=12, union_channels=8, union_dim=4, visual_dim=6, embed_dim=5, num_classes=10)
    assert rel(feats, union, gt.boxes, gt.labels, pairs).shape == (3, rel.dim) and rel.dim == 28
    with pytest.raises(ValueError, match="MASK_SIZE"):
        RelationFeatures(object_dim=12, union_channels=8, mask_size=20)


def test_box_mask_rules_and_class_prior():
    from sgg.modeling.video_sgg import class_prior, pair_box_masks

    sub = torch.tensor([[0.0, 0.0, 27.0, 27.0]])
    obj = torch.tensor([[3.2, 3.2, 3.7, 3.7]])  # starts and ends inside cell 3
    exact = pair_box_masks(sub, obj, rule="exact") + 0.5
    ref = pair_box_masks(sub, obj, rule="sttran") + 0.5
    assert torch.isclose(exact[0, 1, 3, 3], torch.tensor(0.25))
    assert torch.isclose(ref[0, 1, 3, 3], torch.tensor(0.56 * 0.56))  # (4 - 3.2)(3.7 - 3) per axis
    assert torch.equal(exact[0, 0], ref[0, 0])  # identical for boxes on cell edges
    with pytest.raises(ValueError, match="BOX_MASK_RULE"):
        pair_box_masks(sub, obj, rule="nope")
    feats = torch.randn(4, 6)
    assert torch.allclose(class_prior(torch.nn.Identity(), feats, 5), torch.full((4, 5), 0.2))

    class WithDistribution(torch.nn.Module):
        def class_distribution(self, f):
            return f[:, :3].softmax(1)

    assert torch.allclose(class_prior(WithDistribution(), feats, 3), feats[:, :3].softmax(1))


@pytest.mark.parametrize("arch", ["STTran", "TEMPURA", "STKET", "DSGDETR"])
def test_every_sgcls_model_starts_from_the_feature_sources_class_distribution(arch, tmp_path, one_thread):
    """With a feature source that has its own class distribution (the AG Faster R-CNN), each model's SGCls object
    classifier receives it, in training and inference — not a uniform one."""
    cfg = tiny_cfg("sgcls")
    cfg.MODEL.META_ARCHITECTURE = arch
    if arch == "STKET":
        cfg.MODEL.STTRAN.ENC_LAYERS = cfg.MODEL.STTRAN.DEC_LAYERS = 2
        cfg.MODEL.STKET.PRIOR_FILE = str(tmp_path / "priors.json")
        save_stket_priors(compute_stket_priors([make_video(num_frames=4)], AG_OBJECT_CLASSES, AG_PREDICATES),
                          cfg.MODEL.STKET.PRIOR_FILE)
    if arch == "TEMPURA":
        cfg.MODEL.TEMPURA.NUM_MIXTURES, cfg.MODEL.TEMPURA.TRACKING_HEADS = 3, 4
        cfg.MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS = 2
    torch.manual_seed(0)
    model = build_model(cfg)
    seen = []

    def class_distribution(feats):
        dist = torch.linspace(1.0, 2.0, model.num_classes).softmax(0).expand(len(feats), -1)
        seen.append(len(feats))
        return dist

    model.features.class_distribution = class_distribution
    classifier_inputs = []
    hook = model.object_classifier if arch != "DSGDETR" else model.prior_classifier
    hook.register_forward_hook(lambda module, args, out: classifier_inputs.append(args[1].detach().clone()))
    video = make_video(num_frames=3)
    model.train()
    model([video])
    model.eval()
    with torch.no_grad():
        model([video])
    assert seen == [9, 9]  # 3 frames x 3 GT boxes, once in training and once in inference
    expected = torch.linspace(1.0, 2.0, model.num_classes).softmax(0)
    assert len(classifier_inputs) == 2 and all(torch.allclose(x, expected.expand_as(x)) for x in classifier_inputs)


# --------------------------------------------------------------------------------------- SGDet training boxes
def test_detections_are_assigned_to_gt_boxes_as_upstream():
    from sgg.modeling.video_sgg import _assign_detections

    # 3 detections x (person, obj A, obj B): the person takes its best; A's best (det 0) is the person's, so A takes its
    # next best above 0.5 (det 2); B's only overlap above 0.5 is det 2, already A's: B is unfound (upstream would take
    # det 1 below the threshold).
    iou = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.3, 0.4], [0.0, 0.6, 0.7]])
    assert _assign_detections(iou, 0.5) == [0, 2, -1]
    assert _assign_detections(torch.zeros((0, 2)), 0.5) == [-1, -1]
    assert _assign_detections(torch.tensor([[0.5, 0.51]]), 0.5) == [-1, 0]  # strictly above the threshold


def test_sgdet_training_boxes_use_detections_and_supply_the_unfound():
    from sgg.modeling.video_sgg import sgdet_training_boxes

    video = make_video(num_frames=2)  # per frame: person, object 1, object 2 (resized = original * 0.5)
    gt = gather_gt_boxes(video, torch.device("cpu"))
    # frame 0: person and object 1 detected (shifted 1 px); frame 1: only object 2 detected
    det_boxes = torch.stack([gt.boxes[0] + 1, gt.boxes[1] + 1, gt.boxes[5] + 0.5])
    det_frames = torch.tensor([0, 0, 1])
    det_feats = torch.arange(3 * 4, dtype=torch.float32).reshape(3, 4)
    calls = []

    def gt_feats(boxes, frame_idx):
        calls.append(len(boxes))
        return torch.full((len(boxes), 4), -1.0)

    kept, feats = sgdet_training_boxes(gt, det_boxes, det_frames, det_feats, gt_feats, image_scale=0.5)
    assert torch.equal(kept.rows, gt.rows) and torch.equal(kept.labels, gt.labels)  # every GT box kept
    assert torch.equal(kept.boxes[[0, 1, 5]], det_boxes) and torch.equal(kept.boxes[[2, 3, 4]], gt.boxes[[2, 3, 4]])
    assert torch.equal(feats[[0, 1, 5]], det_feats) and (feats[[2, 3, 4]] == -1).all() and calls == [3]
    torch.testing.assert_close(kept.original, kept.boxes / 0.5)
    pairs = training_pairs(kept)
    assert pairs.tolist() == [[0, 1], [0, 2], [3, 4], [3, 5]]
    # without supply: frame 1 lost its person (all its pairs go), frame 0 keeps person + object 1
    kept, feats = sgdet_training_boxes(gt, det_boxes, det_frames, det_feats, gt_feats, image_scale=0.5,
                                       supply=False)
    assert kept.rows.tolist() == [0, 1] and kept.frame_idx.tolist() == [0, 0] and torch.equal(feats, det_feats[:2])
    assert training_pairs(kept).tolist() == [[0, 1]]
    targets = video_relation_targets(video, kept, training_pairs(kept), (3, 6, 17))
    assert [len(t) for t in targets] == [1, 1, 1]


def test_sttran_sgdet_trains_on_assigned_detections(one_thread):
    cfg = tiny_cfg("sgdet")
    cfg.MODEL.STTRAN.SGDET_TRAIN_BOXES = "detections"
    cfg.MODEL.VIDEO_DETECTOR.TRAIN = False
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    losses = model([make_video(num_frames=3)])
    assert {"loss_object", "loss_attention", "loss_spatial", "loss_contacting"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.attention_head.weight.grad is not None
    cfg.MODEL.STTRAN.SGDET_TRAIN_BOXES = "nope"
    with pytest.raises(ValueError, match="SGDET_TRAIN_BOXES must be one of"):
        build_model(cfg)


@pytest.mark.parametrize("arch", ["TEMPURA", "STKET"])
def test_tempura_and_stket_sgdet_train_on_assigned_detections(arch, tmp_path, one_thread):
    cfg = tiny_cfg("sgdet")
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.MODEL.STTRAN.SGDET_TRAIN_BOXES = "detections"
    cfg.MODEL.VIDEO_DETECTOR.TRAIN = False
    if arch == "STKET":
        cfg.MODEL.STTRAN.ENC_LAYERS = cfg.MODEL.STTRAN.DEC_LAYERS = 2
        cfg.MODEL.STKET.PRIOR_FILE = str(tmp_path / "priors.json")
        save_stket_priors(compute_stket_priors([make_video(num_frames=4)], AG_OBJECT_CLASSES, AG_PREDICATES),
                          cfg.MODEL.STKET.PRIOR_FILE)
    else:
        cfg.MODEL.TEMPURA.NUM_MIXTURES, cfg.MODEL.TEMPURA.TRACKING_HEADS = 3, 4
        cfg.MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS = 2
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.sgdet_train_boxes == "detections"
    model.train()
    total = sum(model([make_video(num_frames=3)]).values())
    assert torch.isfinite(total)
    total.backward()
