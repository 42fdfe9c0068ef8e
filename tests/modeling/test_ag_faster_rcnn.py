"""AGFasterRCNN (Action Genome's Faster R-CNN R-101 in upstream's key layout) and its SGDet detector: state-dict
layout, the pieces of the upstream forward restated independently (anchors, legacy RoIAlign, "+1" NMS, Caffe-style
strides), upstream's per-class detection rules, weight loading and its errors."""

import math

import numpy as np
import pytest
import torch

from sgg.config import ConfigError, get_cfg
from sgg.modeling import build_video_detector, build_video_features
from sgg.modeling.ag_faster_rcnn import (
    AGFasterRCNN,
    AGFasterRCNNDetector,
    ag_state_dict_keys,
    bbox_transform_inv,
    generate_anchors,
    nms_plus_one,
)

TINY = dict(blocks=(1, 1, 1, 1), width=8)


def _net(**kw):
    torch.manual_seed(0)
    return AGFasterRCNN(**{**TINY, **kw}).eval()


def test_state_dict_is_upstreams_layout():
    net = _net()
    assert sorted(net.state_dict()) == sorted(ag_state_dict_keys((1, 1, 1, 1)))
    full = ag_state_dict_keys()
    # ResNet-101: 3 + 4 + 23 + 3 bottlenecks, each 3 convs + 3 BNs (4 tensors), 4 downsamples, the stem, RPN, heads
    assert len(full) == 5 + 33 * (3 + 12) + 4 * 5 + 6 + 4
    assert "RCNN_base.6.22.conv3.weight" in full and "RCNN_top.0.2.bn3.running_var" in full
    shapes = {k: tuple(v.shape) for k, v in AGFasterRCNN(**TINY).state_dict().items()}
    w = TINY["width"]
    assert shapes["RCNN_base.0.weight"] == (w, 3, 7, 7)
    assert shapes["RCNN_rpn.RPN_Conv.weight"] == (512, 16 * w, 3, 3)
    assert shapes["RCNN_rpn.RPN_cls_score.weight"] == (24, 512, 1, 1)  # 2 x 12 anchors
    assert shapes["RCNN_cls_score.weight"] == (37, 32 * w) and shapes["RCNN_bbox_pred.weight"] == (148, 32 * w)


def test_caffe_strides_and_feature_shapes():
    net = _net()
    # Caffe layout: the stride sits in conv1 (1x1) of a stage's first block, max-pool has no padding + ceil_mode
    assert net.RCNN_base[5][0].conv1.stride == (2, 2) and net.RCNN_base[5][0].conv2.stride == (1, 1)
    images = torch.randint(0, 256, (2, 3, 75, 101), dtype=torch.uint8)
    fmap = net.frame_features(images)
    h, w = 75, 101
    h, w = (h + 1) // 2, (w + 1) // 2  # conv1 7x7 s2 p3
    h, w = math.ceil((h - 3) / 2) + 1, math.ceil((w - 3) / 2) + 1  # max-pool 3 s2 ceil
    h, w = (h + 1) // 2, (w + 1) // 2  # layer2 (1x1 conv, stride 2)
    h, w = (h + 1) // 2, (w + 1) // 2  # layer3
    assert fmap.shape == (2, 16 * TINY["width"], h, w)
    # BGR, means subtracted: equals the network on upstream's blob
    blob = images.float().flip(1) - torch.tensor([102.9801, 115.9465, 122.7717]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(net.RCNN_base(blob), fmap)


def test_anchors_are_py_faster_rcnn_table():
    # the published 9-anchor table of py-faster-rcnn's generate_anchors() (scales 8, 16, 32)
    table = torch.tensor([[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                          [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                          [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]], dtype=torch.float32)
    assert torch.equal(generate_anchors(16, (0.5, 1, 2), (8, 16, 32)), table)
    assert generate_anchors().shape == (12, 4)  # AG's scales 4, 8, 16, 32


def _legacy_roi_align(fmap, box, scale, out=7):
    """Independent restatement of the compiled ROIAlign (maskrcnn-benchmark, aligned=False, adaptive sampling)."""
    c, h, w = fmap.shape
    x1, y1, x2, y2 = [float(v) * scale for v in box]
    rw, rh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bw, bh = rw / out, rh / out
    gw, gh = math.ceil(rw / out), math.ceil(rh / out)
    res = torch.zeros(c, out, out, dtype=torch.float64)
    f = fmap.double()

    def bilinear(y, x):
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return torch.zeros(c, dtype=torch.float64)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= h - 1:
            y0 = y1_ = h - 1
            y = float(y0)
        else:
            y1_ = y0 + 1
        if x0 >= w - 1:
            x0 = x1_ = w - 1
            x = float(x0)
        else:
            x1_ = x0 + 1
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * f[:, y0, x0] + (1 - ly) * lx * f[:, y0, x1_] + ly * (1 - lx) * f[:, y1_, x0]
                + ly * lx * f[:, y1_, x1_])

    for ph in range(out):
        for pw in range(out):
            acc = torch.zeros(c, dtype=torch.float64)
            for iy in range(gh):
                for ix in range(gw):
                    acc += bilinear(y1 + ph * bh + (iy + 0.5) * bh / gh, x1 + pw * bw + (ix + 0.5) * bw / gw)
            res[:, ph, pw] = acc / (gh * gw)
    return res


def test_roi_pooling_and_head_match_a_restatement_of_upstream():
    net = _net()
    fmap = torch.randn(2, 16 * TINY["width"], 9, 13)
    boxes = torch.tensor([[3.0, 5.0, 120.0, 90.0], [40.5, 10.2, 70.1, 30.9], [0.0, 0.0, 205.0, 140.0]])
    frame_idx = torch.tensor([0, 1, 1])
    union = net.union_features(fmap, boxes, frame_idx)
    for i in range(3):
        ref = _legacy_roi_align(fmap[frame_idx[i]], boxes[i], 1 / 16)
        assert torch.allclose(union[i].double(), ref, atol=1e-5)
    with torch.no_grad():
        feats = net.object_features(fmap, boxes, frame_idx)
        assert torch.allclose(feats, net.RCNN_top(union).mean((2, 3)), atol=1e-6)  # layer4, average -> 2048-d
        dist = net.class_distribution(feats)
        assert torch.allclose(dist, torch.softmax(net.RCNN_cls_score(feats)[:, 1:], 1))  # background dropped
    assert feats.shape == (3, 32 * TINY["width"]) and dist.shape == (3, 36)


def _nms_reference(boxes, scores, thr):
    """The compiled op's NMS restated: "+1" areas, suppression when IoU >= thr."""
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731
    keep, dead = [], set()
    for a, i in enumerate(order):
        if i in dead:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            bi, bj = boxes[i].tolist(), boxes[j].tolist()
            iw = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]) + 1)
            ih = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]) + 1)
            inter = iw * ih
            if inter / (area(bi) + area(bj) - inter) >= thr:
                dead.add(j)
    return keep


@pytest.mark.parametrize("seed", range(3))
def test_nms_uses_the_plus_one_convention(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(60, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + torch.rand(60, 2, generator=g) * 6 + 0.5], 1)  # small boxes: +1 matters
    scores = torch.rand(60, generator=g)
    assert nms_plus_one(boxes, scores, 0.4).tolist() == _nms_reference(boxes, scores, 0.4)
    groups = torch.randint(0, 3, (60,), generator=g)
    per_group = sorted(i for c in range(3) for i in torch.nonzero(groups == c).squeeze(1)[
        _nms_reference(boxes[groups == c], scores[groups == c], 0.4)].tolist())
    assert sorted(nms_plus_one(boxes, scores, 0.4, groups).tolist()) == per_group


def test_bbox_transform_inv_plus_one():
    boxes = torch.tensor([[10.0, 20.0, 29.0, 59.0]])  # w = 20, h = 40 with +1
    deltas = torch.tensor([[0.1, -0.2, math.log(2.0), 0.0]])
    out = bbox_transform_inv(boxes, deltas)[0]
    cx, cy = 10 + 10 + 0.1 * 20, 20 + 20 - 0.2 * 40
    assert torch.allclose(out, torch.tensor([cx - 20, cy - 20, cx + 20, cy + 20]))


def test_frame_detections_follow_upstreams_rules():
    det = AGFasterRCNNDetector(network=_net(), score_thresh=0.1, nms_thresh=0.4)
    # 4 RoIs, classes: background + person + 2 objects (K1 = 4); boxes (R, 4 x K1)
    probs = torch.tensor([[0.1, 0.6, 0.2, 0.1],    # person 0.6
                          [0.1, 0.7, 0.1, 0.1],    # person 0.7, overlaps RoI 0 -> suppressed / best person kept
                          [0.2, 0.3, 0.05, 0.45],  # person 0.3 (far away: survives NMS but only one person kept)
                          [0.5, 0.05, 0.35, 0.1]])  # object 1
    base = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [20, 20, 40, 40]], dtype=torch.float32)
    boxes = base.repeat(1, 4)
    feats = torch.arange(4, dtype=torch.float32)[:, None].repeat(1, 3)
    out_boxes, out_feats = det._frame_detections(boxes, probs, feats)
    # order: the single best person, then class 1 by score (RoIs 3 0.35, 0 0.2), then class 2 (RoI 2 0.45; RoIs 0,
    # 1, 3 at 0.1 are not above the threshold)
    assert out_feats[:, 0].tolist() == [1.0, 3.0, 0.0, 2.0]
    assert torch.equal(out_boxes, base[[1, 3, 0, 2]])


def test_clean_class_duplicates_with_the_next_best_class_and_class_nms():
    det = AGFasterRCNNDetector(network=_net(), clean_classes=(2,), class_nms_thresh=0.6)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10.5], [30, 30, 40, 40]], dtype=torch.float32)
    dist = torch.tensor([[0.1, 0.2, 0.7], [0.1, 0.3, 0.6], [0.6, 0.3, 0.1]])
    feats = torch.eye(3)
    (b, d, f), = det._clean_class([(boxes, dist, feats)], 2)
    assert len(b) == 5 and torch.equal(b[3:], boxes[:2])
    assert torch.equal(d[3:], torch.tensor([[0.1, 0.2, 0.0], [0.1, 0.3, 0.0]]))  # not renormalised
    b2, d2, f2 = det._class_nms(b, d, f)
    # arg-max classes: 2, 2, 0, 1, 1 -> per class NMS 0.6: the two near-identical boxes keep one each
    assert d2.argmax(1).tolist() == [0, 1, 2]
    assert torch.equal(f2, torch.stack([feats[2], feats[1], feats[0]]))


def test_detections_interface_and_clipping_quirk():
    net = _net()
    with torch.no_grad():
        net.RCNN_cls_score.weight.normal_(0, 0.5)
        net.RCNN_bbox_pred.weight.normal_(0, 0.5)
    fmap = net.frame_features(torch.randint(0, 256, (3, 3, 96, 128), dtype=torch.uint8))
    det = AGFasterRCNNDetector(network=net, score_thresh=0.03)
    boxes, frame_idx, dist, feats = det.detections(fmap, (96, 128), 2.0)
    assert len(boxes) == len(frame_idx) == len(dist) == len(feats) > 0
    assert torch.all(frame_idx[1:] >= frame_idx[:-1]) and dist.shape[1] == 36 and feats.shape[1] == net.object_dim
    assert boxes[:, 2].max() <= 127 + 1e-4 and boxes[:, 3].max() <= 95 + 1e-4 and boxes.min() >= 0
    assert all(torch.equal(a, b) for a, b in zip(det.detect(fmap, (96, 128), 2.0), (boxes, frame_idx, dist)))
    # no parameters of its own: the network is saved once, by the feature source
    assert not list(det.state_dict()) and not list(det.parameters())


def test_from_config_shares_the_feature_source_and_refuses_the_wrong_pairing():
    cfg = get_cfg()
    cfg.MODEL.VIDEO_FEATURES.NAME = "AGFasterRCNN"
    cfg.MODEL.AG_DETECTOR.BLOCKS, cfg.MODEL.AG_DETECTOR.WIDTH = (1, 1, 1, 1), 8
    cfg.MODEL.VIDEO_DETECTOR.NAME = "AGFasterRCNNDetector"
    cfg.MODEL.VIDEO_DETECTOR.TRAIN = False
    features = build_video_features(cfg)
    assert isinstance(features, AGFasterRCNN) and features.frozen
    assert not any(p.requires_grad for p in features.parameters())
    features.train()
    assert not features.training  # a frozen detector stays in eval mode
    det = build_video_detector(cfg, features.backbone)
    assert det.network is features
    cfg.MODEL.VIDEO_DETECTOR.TRAIN = True
    with pytest.raises(ConfigError, match="inference-only"):
        build_video_detector(cfg, features.backbone)
    with pytest.raises(ConfigError, match="MODEL.VIDEO_FEATURES.NAME 'AGFasterRCNN'"):
        AGFasterRCNNDetector(network=torch.nn.Linear(2, 2))


def test_loads_upstream_file_and_its_conversion_and_refuses_a_wrong_one(tmp_path):
    src = _net()
    state = {k: v.clone() for k, v in src.state_dict().items()}
    state.update({k.rsplit(".", 1)[0] + ".num_batches_tracked": torch.tensor(7)
                  for k in state if k.endswith("running_mean")})
    up = tmp_path / "faster_rcnn_ag.pth"
    torch.save({"session": 1, "epoch": 10, "model": state, "pooling_mode": "align", "class_agnostic": False}, up)
    net = AGFasterRCNN(**TINY, weights=str(up))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in src.state_dict().items())
    conv = tmp_path / "converted.pth"
    torch.save({"model": {"features." + k: v for k, v in src.state_dict().items()}}, conv)
    assert torch.equal(AGFasterRCNN(**TINY, weights=str(conv)).RCNN_cls_score.weight, src.RCNN_cls_score.weight)
    with pytest.raises(ConfigError, match=r"is not an Action Genome Faster R-CNN of this size: .*missing"):
        AGFasterRCNN(blocks=(1, 1, 2, 1), width=8, weights=str(up))
    np.testing.assert_equal(len(ag_state_dict_keys((1, 1, 2, 1))) - len(ag_state_dict_keys((1, 1, 1, 1))), 15)
