"""sgg/structures/boxes.py: conversions are torchvision's; IoU / GIoU / areas equal torchvision's on regular boxes and
stay finite where torchvision's divide by zero; the +1-pixel convention."""

import numpy as np
import torch
from torchvision import ops

from sgg.structures.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    paired_iou,
    pairwise_iou,
)


def _boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50 + 0.5], 1)


def test_conversions_round_trip_and_match_the_formulas():
    boxes = _boxes(64)
    cxcywh = box_xyxy_to_cxcywh(boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    assert torch.equal(cxcywh, torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1))
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), boxes)
    assert torch.equal(box_xywh_to_xyxy(torch.tensor([[1.0, 2.0, 3.0, 4.0]])), torch.tensor([[1.0, 2.0, 4.0, 6.0]]))
    batched = torch.rand(2, 5, 4)  # any leading shape (DETR's (batch, queries, 4))
    assert box_cxcywh_to_xyxy(batched).shape == (2, 5, 4)


def test_iou_and_giou_equal_torchvisions_on_regular_boxes_and_stay_finite_on_degenerate_ones():
    a, b = _boxes(30, 1), _boxes(20, 2)
    assert torch.equal(generalized_box_iou(a, b), ops.generalized_box_iou(a, b))
    torch.testing.assert_close(pairwise_iou(a, b), ops.box_iou(a, b))
    torch.testing.assert_close(box_area(a), ops.box_area(a))
    zero = torch.zeros(2, 4)
    assert torch.isnan(ops.generalized_box_iou(zero, zero)).all()
    assert torch.equal(generalized_box_iou(zero, zero), torch.zeros(2, 2))
    assert torch.equal(pairwise_iou(zero, zero), torch.zeros(2, 2))


def test_plus_one_convention():
    a = np.array([[0, 0, 9, 9]], np.float32)  # 10 x 10 pixels inclusive
    b = np.array([[5, 5, 14, 14]], np.float32)
    assert box_area(a, plus_one=True)[0] == 100 and box_area(a)[0] == 81
    assert abs(float(pairwise_iou(a, b, plus_one=True)[0, 0]) - 25 / 175) < 1e-7  # float32
    assert abs(float(paired_iou(a, b, plus_one=True)[0]) - 25 / 175) < 1e-7  # in the inputs' dtype
