"""The 'oed' protocol of the video SGG evaluator against hand-computed cases: IoU without the +1 convention, no semi
constraint, OED's triplet NMS (with its +1 on normalised boxes), labelled keys."""

import numpy as np
import pytest

from sgg.evaluation.video_scene_graph import VideoSceneGraphEvaluator, evaluate_video_scene_graphs, protocol_key


def _frame(pairs, attention, boxes, labels, scores=None):
    n = len(pairs)
    return {"boxes": np.asarray(boxes, float), "labels": np.asarray(labels), "pairs": np.asarray(pairs),
            "scores": np.ones(len(boxes)) if scores is None else np.asarray(scores, float),
            "attention": np.asarray(attention, float), "spatial": np.zeros((n, 6)), "contacting": np.zeros((n, 17))}


def test_iou_without_plus_one_decides_a_borderline_match():
    # GT object [0, 0, 2, 2] vs predicted [0, 0, 2, 5]: IoU 4 / 10 = 0.4 (OED) but 9 / 18 = 0.5 with +1 (STTran)
    gt = [{"boxes": np.array([[10, 10, 40, 40], [0, 0, 2, 2]], float), "labels": np.array([0, 3]),
           "relations": np.array([[0, 1, 1]]), "width": 100, "height": 100}]
    pred = [_frame([[0, 1]], [[0.1, 0.8, 0.1]], [[10, 10, 40, 40], [0, 0, 2, 5]], [0, 3])]
    sttran = evaluate_video_scene_graphs(gt, pred, constraint="with", ks=(1,))
    oed = evaluate_video_scene_graphs(gt, pred, constraint="with", ks=(1,), protocol="oed")
    assert sttran["R@1"] == 100.0 and oed["R@1"] == 0.0


def _duplicate_case():
    # person 0, two objects of class 3 (boxes 1 and 2), both GT "looking_at" (0); the prediction repeats pair (0, 1)
    gt = [{"boxes": np.array([[0, 0, 50, 50], [50, 50, 100, 100], [0, 50, 50, 100]], float),
           "labels": np.array([0, 3, 3]), "relations": np.array([[0, 1, 0], [0, 2, 0]]), "width": 100, "height": 100}]
    boxes = [[0, 0, 50, 50], [50, 50, 100, 100], [50, 51, 100, 100], [0, 50, 50, 100]]
    pred = [_frame([[0, 1], [0, 2], [0, 3]], [[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.3, 0.0]], boxes,
                   [0, 3, 3, 3])]
    return gt, pred


def test_triplet_nms_drops_the_duplicate_so_the_next_triplet_enters_the_top_k():
    gt, pred = _duplicate_case()
    # ranked: (0,1) 0.9, (0,2) 0.8 (a duplicate of the first), (0,3) 0.7. Without NMS R@2 finds one GT of two.
    assert evaluate_video_scene_graphs(gt, pred, constraint="with", ks=(2,))["R@2"] == 50.0
    assert evaluate_video_scene_graphs(gt, pred, constraint="with", ks=(2,), protocol="oed")["R@2"] == 50.0
    # NMS: same labels (person, looking_at, class 3); sub IoU 1, obj IoU on normalised boxes with +1 ~ 0.99 > 0.9 ->
    # the duplicate goes. (0,3) survives: its object box is disjoint, but OED's +1 on normalised boxes gives it an
    # IoU of 1.5 / 3.0 = 0.5 (product 0.5 <= 0.9), so it is kept.
    nms = evaluate_video_scene_graphs(gt, pred, constraint="with", ks=(2,), protocol="oed", triplet_nms=True)
    assert nms["R@2"] == 100.0
    no = evaluate_video_scene_graphs(gt, pred, constraint="no", ks=(2,), protocol="oed", triplet_nms=True)
    assert no["R@2"] == 100.0
    del gt[0]["width"]
    with pytest.raises(ValueError, match="width"):
        evaluate_video_scene_graphs(gt, pred, constraint="with", ks=(2,), protocol="oed", triplet_nms=True)


def test_nms_threshold_is_on_the_product_of_the_two_ious():
    gt, pred = _duplicate_case()
    # move the duplicate's object so the product of the +1-normalised IoUs falls just below 0.9: kept -> 50 %
    pred[0]["boxes"][2] = [50, 60, 100, 100]  # obj IoU (1.5 * 1.4) / (2.25 + 2.1 - 2.1) = 0.933 -> suppressed
    assert evaluate_video_scene_graphs(gt, pred, constraint="with", ks=(2,), protocol="oed",
                                       triplet_nms=True)["R@2"] == 100.0
    pred[0]["boxes"][2] = [50, 80, 100, 100]  # obj IoU (1.5 * 1.2) / (2.25 + 1.8 - 1.8) = 0.8 -> kept
    assert evaluate_video_scene_graphs(gt, pred, constraint="with", ks=(2,), protocol="oed",
                                       triplet_nms=True)["R@2"] == 50.0


def test_protocol_options_are_validated_and_keys_labelled():
    gt, pred = _duplicate_case()
    with pytest.raises(ValueError, match="semi"):
        evaluate_video_scene_graphs(gt, pred, constraint="semi", protocol="oed")
    with pytest.raises(ValueError, match="protocol"):
        evaluate_video_scene_graphs(gt, pred, constraint="with", protocol="sgb")
    assert protocol_key("with", "sttran") == "with" and protocol_key("no", "oed") == "no[oed]"
    with pytest.raises(ValueError, match="PROTOCOLS"):
        VideoSceneGraphEvaluator(dataset_name="x", protocols=("sttran", "paper"))
    with pytest.raises(ValueError, match="OED_TRIPLET_NMS"):
        VideoSceneGraphEvaluator(dataset_name="x", protocols=("oed",), oed_triplet_nms="yes")
    assert VideoSceneGraphEvaluator(dataset_name="x", mode="sgdet", protocols=("oed",)).oed_triplet_nms
    assert not VideoSceneGraphEvaluator(dataset_name="x", mode="predcls", protocols=("oed",)).oed_triplet_nms
