"""pycocotools box AP in Scene-Graph-Benchmark's +1-pixel convention."""

import math

import numpy as np
import pytest
import torch

from sgg.evaluation.box_ap import evaluate_box_ap

one = pytest.approx(1.0, abs=1e-12)  # pycocotools averages 101 precision samples: exact up to rounding

GT = {"boxes": np.array([[0, 0, 9, 9]], np.float32), "labels": np.array([3])}


def det(boxes, labels, scores):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels),
            "scores": np.array(scores, np.float32)}


def test_perfect_detection_is_ap_one():
    r = evaluate_box_ap([GT], [det([[0, 0, 9, 9]], [3], [0.9])])
    assert r["AP"] == one and r["AP50"] == one and r["AP75"] == one
    assert r["APs"] == one  # a 10 x 10 box is "small" in COCO's ranges
    assert math.isnan(r["APm"]) and math.isnan(r["APl"])  # no GT in those ranges: pycocotools' -1 -> NaN


def test_iou_exactly_half_counts_only_at_050_with_plus_one_widths():
    # +1 widths: [0,0,9,4] is 10 x 5 = 50 of the 10 x 10 GT -> IoU 0.5: a hit at 0.50 only (1 of 10 thresholds)
    r = evaluate_box_ap([GT], [det([[0, 0, 9, 4]], [3], [0.9])])
    assert r["AP50"] == one and r["AP75"] == 0.0
    assert r["AP"] == pytest.approx(0.1, abs=1e-12)
    # continuous widths: 9 x 4 = 36 of 81 -> IoU 0.44, a miss everywhere
    assert evaluate_box_ap([GT], [det([[0, 0, 9, 4]], [3], [0.9])], plus_one=False)["AP50"] == 0.0


def test_wrong_label_false_positive_ranking_and_empty_detections():
    assert evaluate_box_ap([GT], [det([[0, 0, 9, 9]], [2], [0.9])])["AP"] == 0.0
    # a higher-scored false positive before the true positive halves the precision at full recall
    two = evaluate_box_ap([GT], [det([[50, 50, 59, 59], [0, 0, 9, 9]], [3, 3], [0.9, 0.5])])
    assert two["AP50"] == pytest.approx(0.5, abs=1e-12)
    empty = evaluate_box_ap([GT], [det([], [], [])])
    assert empty == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": 0.0, "APm": 0.0, "APl": 0.0}


def test_tensors_and_several_images():
    gts = [GT, {"boxes": torch.tensor([[10.0, 10, 19, 19]]), "labels": torch.tensor([0])}]
    dets = [det([[0, 0, 9, 9]], [3], [0.9]), {"boxes": torch.tensor([[10.0, 10, 19, 19]]),
                                               "labels": torch.tensor([1]), "scores": torch.tensor([0.8])}]
    r = evaluate_box_ap(gts, dets, class_names=["a", "b", "c", "d"])
    assert r["AP"] == pytest.approx(0.5, abs=1e-12)  # class 3 perfect, class 0 missed (class 1/2: no GT, ignored)


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 ground truths but 1 predictions"):
        evaluate_box_ap([GT, GT], [det([[0, 0, 9, 9]], [3], [0.9])])
    with pytest.raises(KeyError, match="prediction of image 0: missing key 'scores'"):
        evaluate_box_ap([GT], [{"boxes": np.zeros((1, 4)), "labels": np.zeros(1)}])
    with pytest.raises(ValueError, match="prediction of image 0: boxes/labels/scores lengths differ: 1/2/1"):
        evaluate_box_ap([GT], [det([[0, 0, 9, 9]], [3, 3], [0.9])])
