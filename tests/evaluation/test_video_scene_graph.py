"""Video SGG evaluation (STTran protocol + TEMPURA mR): hand-computed cases per constraint, the +1 IoU convention,
agreement with the straightforward per-frame implementation, the registered evaluator, and error messages."""

import json

import numpy as np
import pytest
import torch

from sgg.config import get_cfg
from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.evaluation import build_evaluator
from sgg.evaluation.video_scene_graph import (
    NUM_PREDICATES,
    VideoSceneGraphEvaluator,
    evaluate_video_scene_graphs,
    evaluate_video_scene_graphs_per_frame,
)

LOOKING_AT, IN_FRONT_OF, BEHIND, HOLDING, NOT_CONTACTING = 0, 5, 6, 14, 17
CUP = 10


def _gt_frame(object_box=(20, 20, 30, 30), relations=((0, 1, LOOKING_AT), (1, 0, IN_FRONT_OF), (0, 1, HOLDING))):
    return {"boxes": np.array([[0, 0, 10, 10], object_box], np.float32), "labels": np.array([0, CUP]),
            "relations": np.array(relations, np.int64)}


def _pred_frame(object_box=(20, 20, 30, 30), object_label=CUP, scores=(1.0, 1.0)):
    """One pair; probabilities chosen so the three constraints rank differently (see the test docstrings)."""
    spatial = np.zeros(6, np.float32)
    spatial[[0, 1, IN_FRONT_OF - 3, BEHIND - 3, 4]] = [0.1, 0.2, 0.91, 0.95, 0.05]
    contacting = np.full(17, 0.01, np.float32)
    contacting[HOLDING - 9], contacting[NOT_CONTACTING - 9] = 0.6, 0.92
    return {"boxes": np.array([[0, 0, 10, 10], object_box], np.float32), "labels": np.array([0, object_label]),
            "scores": np.array(scores, np.float32), "pairs": np.array([[0, 1]]),
            "attention": np.array([[0.7, 0.2, 0.1]], np.float32), "spatial": spatial[None],
            "contacting": contacting[None]}


def _evaluate(gts, preds, constraint, ks=(1, 3, 5), **kw):
    out = evaluate_video_scene_graphs(gts, preds, constraint=constraint, ks=ks, **kw)
    ref = evaluate_video_scene_graphs_per_frame(gts, preds, constraint=constraint, ks=ks, **kw)
    assert out == pytest.approx(ref, abs=1e-9)  # both implementations, every case
    return out


def test_with_constraint_keeps_top1_per_group():
    """Triplets: looking_at .7 (hit), behind .95 (miss: GT says in_front_of), not_contacting .92 (miss).
    Ranked behind, not_contacting, looking_at -> hits at ranks >= 2 only."""
    out = _evaluate([_gt_frame()], [_pred_frame()], "with")
    assert out["R@1"] == 0.0
    assert out["R@3"] == pytest.approx(100 / 3)
    assert out["R@5"] == pytest.approx(100 / 3)
    # mR: looking_at 1/1, in_front_of 0/1, holding 0/1, the other 23 predicates count 0.
    assert out["mR@5"] == pytest.approx(100 / 26, rel=1e-6)


def test_semi_constraint_keeps_spatial_and_contacting_above_threshold():
    """Triplets: looking_at .7, in_front_of .91 and behind .95 (> 0.9), not_contacting .92; holding .6 is dropped.
    Ranked behind, not_contacting, in_front_of (hit), looking_at (hit)."""
    out = _evaluate([_gt_frame()], [_pred_frame()], "semi")
    assert out["R@1"] == 0.0
    assert out["R@3"] == pytest.approx(100 / 3)
    assert out["R@5"] == pytest.approx(200 / 3)
    assert out["mR@5"] == pytest.approx(200 / 26, rel=1e-6)
    # A lower threshold also admits holding (.6): everything is recalled at 5.
    assert _evaluate([_gt_frame()], [_pred_frame()], "semi", semi_threshold=0.5)["R@5"] == pytest.approx(100.0)


def test_no_constraint_ranks_every_predicate():
    """All 26 (pair, predicate) candidates: behind .95, not_contacting .92, in_front_of .91 (hit), looking_at .7
    (hit), holding .6 (hit), ..."""
    out = _evaluate([_gt_frame()], [_pred_frame()], "no")
    assert out["R@1"] == 0.0
    assert out["R@3"] == pytest.approx(100 / 3)
    assert out["R@5"] == pytest.approx(100.0)
    assert out["mR@5"] == pytest.approx(300 / 26, rel=1e-6)


def test_object_scores_enter_the_triplet_score():
    """Without constraint the score is s_person * s_object * p: two detections of the cup, the correct one with a low
    score, push its triplets below the wrong-box ones."""
    gt = _gt_frame()
    pred = _pred_frame()
    pred["boxes"] = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70]], np.float32)
    pred["labels"] = np.array([0, CUP, CUP])
    pred["scores"] = np.array([1.0, 0.1, 1.0], np.float32)
    pred["pairs"] = np.array([[0, 1], [0, 2]])
    for key in ("attention", "spatial", "contacting"):
        pred[key] = np.repeat(pred[key], 2, 0)
    # Ranks 0-8: the wrong pair's candidates with p >= 0.1 (scores .95 ... .1); then the right pair's, scaled by 0.1:
    # 9 behind (.095), 10 not_contacting (.092), 11 in_front_of (hit), 12 looking_at (hit), 13 holding (hit).
    out = _evaluate([gt], [pred], "no", ks=(11, 12, 14))
    assert out["R@11"] == 0.0
    assert out["R@12"] == pytest.approx(100 / 3)
    assert out["R@14"] == pytest.approx(100.0)


def test_iou_uses_the_plus_one_pixel_convention():
    """GT cup [0,0,9,9] vs predicted [0,0,9,4]: IoU 50/100 = 0.5 with +1-pixel areas (a hit at 0.5), 36/81 without."""
    gt = _gt_frame(object_box=(0, 0, 9, 9), relations=((0, 1, LOOKING_AT),))
    gt["boxes"][0] = [40, 40, 50, 50]
    pred = _pred_frame(object_box=(0, 0, 9, 4))
    pred["boxes"][0] = [40, 40, 50, 50]
    assert _evaluate([gt], [pred], "with")["R@5"] == pytest.approx(100.0)
    assert _evaluate([gt], [pred], "with", iou_threshold=0.51)["R@5"] == 0.0


def test_labels_and_direction_must_match():
    # SGCls / SGDet: a wrong object class is never a hit.
    assert _evaluate([_gt_frame()], [_pred_frame(object_label=CUP + 1)], "no")["R@5"] == 0.0
    # Spatial GT written person -> object (the wrong convention) cannot match: spatial triplets are object -> person.
    gt = _gt_frame(relations=((0, 1, IN_FRONT_OF),))
    assert _evaluate([gt], [_pred_frame()], "no")["R@5"] == 0.0
    gt = _gt_frame(relations=((1, 0, IN_FRONT_OF),))
    assert _evaluate([gt], [_pred_frame()], "no")["R@5"] == pytest.approx(100.0)


def test_recall_is_averaged_over_frames_and_mr_pooled_over_frames():
    """Frame 1 recalls 1/3 (with constraint, see above), frame 2 recalls its single looking_at relation, frame 3 has
    no GT relation and is skipped. R = (1/3 + 1) / 2; mR pools: looking_at 2/2, in_front_of 0/1, holding 0/1."""
    gts = [_gt_frame(), _gt_frame(relations=((0, 1, LOOKING_AT),)), _gt_frame(relations=np.zeros((0, 3)))]
    preds = [_pred_frame(), _pred_frame(), _pred_frame()]
    out = _evaluate(gts, preds, "with")
    assert out["R@5"] == pytest.approx((1 / 3 + 1) / 2 * 100)
    assert out["mR@5"] == pytest.approx(100 / 26, rel=1e-6)


def test_frame_without_prediction_pairs_counts_zero():
    pred = _pred_frame()
    pred.update(pairs=np.zeros((0, 2), np.int64), attention=np.zeros((0, 3)), spatial=np.zeros((0, 6)),
                contacting=np.zeros((0, 17)))
    out = _evaluate([_gt_frame(), _gt_frame()], [pred, _pred_frame()], "with")
    assert out["R@5"] == pytest.approx(100 / 6)


def test_all_zero_group_gives_predicate_zero_like_the_reference():
    """The reference takes argmax over the zero-padded 26-way row: a spatial group of zeros yields predicate 0
    (looking_at) on the (object, person) pair, which can never match; its spatial GT is missed."""
    pred = _pred_frame()
    pred["spatial"][:] = 0
    gt = _gt_frame(relations=((1, 0, 3),))  # above: argmax within the group would pick index 3
    assert _evaluate([gt], [pred], "with")["R@5"] == 0.0


def _random_dataset(rng, num_frames, detections):
    gts, preds = [], []
    for _ in range(num_frames):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 150, (n + 1, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 50, (n + 1, 2))], 1).astype(np.float32)
        labels = np.concatenate([[0], rng.integers(1, 6, n)])
        rels = []
        for j in range(1, n + 1):
            rels.append([0, j, rng.integers(0, 3)])
            rels += [[j, 0, 3 + s] for s in rng.choice(6, rng.integers(1, 3), replace=False)]
            rels += [[0, j, 9 + c] for c in rng.choice(17, rng.integers(1, 3), replace=False)]
        gts.append({"boxes": boxes, "labels": labels, "relations": np.array(rels)})
        extra = int(rng.integers(0, 4)) if detections else 0
        pb = np.concatenate([boxes, boxes[rng.integers(0, n + 1, extra)]])
        pl = np.concatenate([labels, rng.integers(0, 6, extra)])
        if detections:
            pb = pb + rng.normal(0, 4, pb.shape).astype(np.float32)
            pl[rng.random(len(pl)) < 0.1] = 3
        scores = rng.uniform(0.2, 1, len(pb)).astype(np.float32) if detections else np.ones(len(pb), np.float32)
        pairs = np.array([[0, o] for o in range(1, len(pb))]).reshape(-1, 2)
        att = rng.random((len(pairs), 3)).astype(np.float32)
        preds.append({"boxes": pb, "labels": pl, "scores": scores, "pairs": pairs,
                      "attention": att / att.sum(1, keepdims=True),
                      "spatial": (rng.random((len(pairs), 6)) ** 0.3).astype(np.float32),
                      "contacting": (rng.random((len(pairs), 17)) ** 0.5).astype(np.float32)})
    return gts, preds


@pytest.mark.parametrize("constraint", ["with", "semi", "no"])
@pytest.mark.parametrize("detections", [False, True], ids=["predcls", "sgdet"])
def test_vectorised_equals_per_frame_implementation(constraint, detections):
    gts, preds = _random_dataset(np.random.default_rng(7), 150, detections)
    out = evaluate_video_scene_graphs(gts, preds, constraint=constraint, ks=(10, 20, 50, 100))
    ref = evaluate_video_scene_graphs_per_frame(gts, preds, constraint=constraint, ks=(10, 20, 50, 100))
    assert out == pytest.approx(ref, abs=1e-9)
    assert 0 < out["R@10"] <= out["R@20"] <= out["R@50"] <= 100


@pytest.mark.parametrize("constraint", ["with", "semi", "no"])
def test_exact_ties_are_broken_like_the_per_frame_implementation(constraint):
    """Quantised probabilities and scores make many exact ties, also across the no-constraint cut at 100 triplets
    (frames with up to 8 pairs = 208 candidates)."""
    gts, preds = _random_dataset(np.random.default_rng(11), 120, True)
    for pred in preds:
        pred["scores"] = np.round(pred["scores"] * 2) / 2 + 0.5
        for key in ("attention", "spatial", "contacting"):
            pred[key] = (np.round(pred[key] * 4) / 4).astype(np.float32)
        extra = np.random.default_rng(len(pred["boxes"])).integers(0, 5)
        pred["pairs"] = np.concatenate([pred["pairs"], np.repeat(pred["pairs"][:1], extra, 0)])
        for key in ("attention", "spatial", "contacting"):
            pred[key] = np.concatenate([pred[key], np.repeat(pred[key][:1] * 0 + 0.5, extra, 0)])
    ks = (5, 10, 20, 50, 100)
    out = evaluate_video_scene_graphs(gts, preds, constraint=constraint, ks=ks)
    assert out == pytest.approx(evaluate_video_scene_graphs_per_frame(gts, preds, constraint=constraint, ks=ks),
                                abs=1e-9)


def test_tensor_inputs_match_numpy_inputs():
    gts, preds = _random_dataset(np.random.default_rng(3), 20, True)
    as_tensors = [{k: torch.as_tensor(v) for k, v in p.items()} for p in preds]
    for constraint in ("with", "semi", "no"):
        assert evaluate_video_scene_graphs(gts, as_tensors, constraint=constraint) == \
            evaluate_video_scene_graphs(gts, preds, constraint=constraint)


def test_clear_errors():
    gt, pred = _gt_frame(), _pred_frame()
    with pytest.raises(ValueError, match="constraint must be one of"):
        evaluate_video_scene_graphs([gt], [pred], constraint="strict")
    with pytest.raises(ValueError, match="1 ground-truth frames but 2 prediction frames"):
        evaluate_video_scene_graphs([gt], [pred, pred], constraint="with")
    with pytest.raises(KeyError, match="Prediction frame 0 lacks 'contacting'"):
        evaluate_video_scene_graphs([gt], [{k: v for k, v in pred.items() if k != "contacting"}], constraint="with")
    bad = dict(pred, pairs=np.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"Prediction frame 1: 'pairs' row \[0, 5\] refers to a box"):
        evaluate_video_scene_graphs([gt, gt], [pred, bad], constraint="with")
    bad = dict(pred, attention=np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"Prediction frame 0: 'attention' must have shape \(N, 3\), got \(1, 4\)"):
        evaluate_video_scene_graphs([gt], [bad], constraint="with")
    bad = dict(pred, spatial=np.ones((2, 6)))
    with pytest.raises(ValueError, match="'spatial' has 2 rows but 'pairs' has 1"):
        evaluate_video_scene_graphs([gt], [bad], constraint="with")
    with pytest.raises(ValueError, match="Prediction frame 1: 'labels' must be 0-based"):
        evaluate_video_scene_graphs([gt, gt], [pred, dict(pred, labels=np.array([0, -1]))], constraint="with")
    with pytest.raises(ValueError, match=r"predicate ids must be in \[0, 26\)"):
        evaluate_video_scene_graphs([_gt_frame(relations=((0, 1, 26),))], [pred], constraint="with")


# ------------------------------------------------------------------------------------------------ the evaluator
@pytest.fixture
def tiny_video_dataset():
    name = "_test_video_sgg_tiny"
    videos = [{"video_id": "A", "frames": [_gt_frame(), _gt_frame(relations=((0, 1, LOOKING_AT),))]},
              {"video_id": "B", "frames": [_gt_frame()]}]
    DatasetCatalog.register(name, lambda: videos)
    MetadataCatalog.get(name).set(evaluator_type="video_scene_graph")
    yield name, videos
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_registered_evaluator_reports_every_constraint(tiny_video_dataset, tmp_path):
    name, videos = tiny_video_dataset
    cfg = get_cfg()
    cfg.TEST.RELATION.MODE = "predcls"
    evaluator = build_evaluator(cfg, name, str(tmp_path))
    evaluator.reset()
    to_tensors = lambda f: {k: torch.as_tensor(v) for k, v in f.items()}  # noqa: E731
    # Videos arrive in any order and batch split; outputs may be tensors.
    evaluator.process([videos[1]], [{"frames": [to_tensors(_pred_frame())]}])
    evaluator.process([videos[0]], [{"frames": [to_tensors(_pred_frame()), to_tensors(_pred_frame())]}])
    results = evaluator.evaluate()["video_sgg"]
    gts = [f for v in videos for f in v["frames"]]
    for constraint in ("with", "semi", "no"):
        expected = evaluate_video_scene_graphs(gts, [_pred_frame()] * 3, constraint=constraint)
        for key, value in expected.items():
            assert results[f"{constraint}/{key}"] == pytest.approx(value)
    assert results["with/R@10"] == pytest.approx((1 / 3 + 1 + 1 / 3) / 3 * 100)
    saved = json.loads((tmp_path / "video_sgg_results.json").read_text())
    assert saved["mode"] == "predcls" and saved["num_frames"] == 3
    assert len(saved["per_predicate_recall"]["no"]["50"]) == NUM_PREDICATES


def test_evaluator_checks_frame_counts_and_video_ids(tiny_video_dataset):
    name, videos = tiny_video_dataset
    evaluator = VideoSceneGraphEvaluator(dataset_name=name)
    with pytest.raises(ValueError, match="returned 1 frames for video 'A', which has 2"):
        evaluator.process([videos[0]], [{"frames": [_pred_frame()]}])
    evaluator.process([{"video_id": "Z"}], [{"frames": [_pred_frame()]}])
    with pytest.raises(KeyError, match=r"Predicted video\(s\) \['Z'\] are not in dataset"):
        evaluator.evaluate()


def _oracle_prediction(frame, floor=1e-3):
    """Perfect PredCls output for a GT frame: probability 1 for its relations, ``floor`` for the others."""
    n = len(frame["boxes"])
    pairs = np.stack([np.zeros(n - 1, np.int64), np.arange(1, n)], 1)
    probs = np.full((n - 1, NUM_PREDICATES), floor, np.float32)
    for sub, obj, pred in frame["relations"]:
        probs[max(sub, obj) - 1, pred] = 1.0
    return {"boxes": frame["boxes"], "labels": frame["labels"], "scores": np.ones(n, np.float32), "pairs": pairs,
            "attention": probs[:, :3], "spatial": probs[:, 3:9], "contacting": probs[:, 9:]}


def test_evaluator_on_demo_action_genome_with_oracle_predictions(tmp_path, monkeypatch):
    """Oracle predictions on demo_ag_test: no / semi constraint recall everything; with constraint keeps one spatial
    predicate per pair, so objects with two spatial labels lose one."""
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    cfg = get_cfg()
    cfg.TEST.RELATION.MODE = "predcls"
    evaluator = build_evaluator(cfg, "demo_ag_test", str(tmp_path / "out"))
    videos = DatasetCatalog.get("demo_ag_test")
    evaluator.reset()
    for video in videos:
        evaluator.process([video], [{"frames": [_oracle_prediction(f) for f in video["frames"]]}])
    results = evaluator.evaluate()["video_sgg"]
    for k in (10, 20, 50):
        assert results[f"semi/R@{k}"] == pytest.approx(100.0)
    assert results["no/R@50"] == pytest.approx(100.0)
    frames = [f for v in videos for f in v["frames"]]
    expected = np.mean([3 * (len(f["boxes"]) - 1) / len(f["relations"]) for f in frames]) * 100
    assert results["with/R@50"] == pytest.approx(expected)
    assert results["with/R@50"] < 100.0  # the demo has objects with two spatial relations


def test_semi_constraint_reproduces_the_reference_group_test_on_exact_zeros():
    """The reference recognises a semi-constraint row by p[first] + p[second] of its group being > 0, so exactly-zero
    probabilities there (one-hot outputs) drop the row: an in_front_of-only spatial row and a holding-only contacting
    row produce no triplet."""
    gt = _gt_frame()
    pred = _oracle_prediction(gt, floor=0.0)
    out = _evaluate([gt], [pred], "semi")
    assert out["R@5"] == pytest.approx(100 / 3)  # only looking_at survives
    assert _evaluate([gt], [_oracle_prediction(gt, floor=1e-6)], "semi")["R@5"] == pytest.approx(100.0)


def _noisy_prediction(frame, seed):
    """A deterministic imperfect prediction for a GT frame (oracle probabilities mixed with noise)."""
    pred = _oracle_prediction(frame, floor=0.0)
    rng = np.random.default_rng(seed)
    for key in ("attention", "spatial", "contacting"):
        pred[key] = (0.5 * pred[key] + 0.6 * rng.random(pred[key].shape)).astype(np.float32)
    return pred


def test_evaluator_merges_the_predictions_of_all_ranks(tmp_path, monkeypatch):
    """Two ranks each process half of demo_ag_test; rank 0 receives both halves through ``comm.gather`` and must
    report what one process seeing everything reports. (The gather itself is sgg.utils.comm's, tested there.)"""
    from sgg.utils import comm

    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    videos = DatasetCatalog.get("demo_ag_test")
    ranks = [VideoSceneGraphEvaluator(dataset_name="demo_ag_test") for _ in range(2)]
    single = VideoSceneGraphEvaluator(dataset_name="demo_ag_test")
    for index, video in enumerate(videos):
        output = {"frames": [_noisy_prediction(f, index) for f in video["frames"]]}
        ranks[index % 2].process([video], [output])
        single.process([video], [output])
    expected = single.evaluate()["video_sgg"]
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [ranks[0]._predictions, ranks[1]._predictions])
    gathered = ranks[0].evaluate()["video_sgg"]
    monkeypatch.setattr(comm, "get_rank", lambda: 1)
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [])
    assert ranks[1].evaluate() == {}  # non-main ranks report nothing
    assert gathered == pytest.approx(expected)
    assert 0 < expected["with/R@10"] < 100
