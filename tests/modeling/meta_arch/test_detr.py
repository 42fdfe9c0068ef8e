"""DETR detector (SpeaQ's initialisation): losses with per-sample weights and the auxiliary term, overfitting."""

import torch

from tests.modeling.set_prediction_tiny import fit, scene, tiny_detr


def test_losses_are_finite_weighted_and_include_the_auxiliary_term():
    model = tiny_detr(aux=1.0).train()
    x = scene([(4, 6, 24, 26), (36, 30, 60, 58)], [0, 1], [(0, 1, 1)])
    losses = model([x])
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_encoder_ce"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    half = {**x, "loss_weight": 0.5}
    assert torch.allclose(sum(model([half]).values()), 0.5 * sum(losses.values()))
    empty = scene([], [], [], image_id=1)
    sum(model([empty]).values()).backward()  # no boxes at all: still a connected graph


def test_overfits_one_image(one_thread):
    x = scene([(4, 6, 24, 26), (36, 30, 60, 58), (40, 4, 58, 20)], [0, 1, 2], [(0, 1, 1)])
    model = fit(tiny_detr(queries=4), [x])
    with torch.no_grad():
        pred, = model([x])
    assert pred["rel_pairs"].shape == (0, 2) and pred["rel_scores"].shape == (0, 4)
    top = pred["boxes"][:3]
    for box, label in zip(x["gt_boxes"], x["gt_classes"]):
        iou = torch.tensor([float(_iou(box, b)) for b in top])
        k = int(iou.argmax())
        assert iou[k] > 0.5 and pred["labels"][k] == label, (box, pred)


def _iou(a, b):
    lt = torch.maximum(a[:2], b[:2])
    rb = torch.minimum(a[2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod()
    return inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter)
