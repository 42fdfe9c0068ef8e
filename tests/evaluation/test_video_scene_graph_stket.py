"""The video evaluator's STKET additions: the mR variants (STKET's per-frame zero-filled mR, avgR = TEMPURA's mR) on
hand-made predictions, per-branch evaluation, and that the plain keys are unchanged for other models."""

import json

import numpy as np
import pytest

from sgg.config import get_cfg
from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.evaluation import build_evaluator
from sgg.evaluation.video_scene_graph import (
    evaluate_video_scene_graphs,
    evaluate_video_scene_graphs_per_frame,
)
from tests.evaluation.test_video_scene_graph import LOOKING_AT, _gt_frame, _pred_frame, _random_dataset

NOT_LOOKING_AT = 1


def _both(gts, preds, **kw):
    out = evaluate_video_scene_graphs(gts, preds, **kw)
    ref = evaluate_video_scene_graphs_per_frame(gts, preds, **kw)
    assert out == pytest.approx(ref, abs=1e-9)
    return out


def test_stket_mr_is_a_per_frame_mean_with_absent_predicates_zero():
    """Three frames, GT looking_at only: frame 1 one relation (recalled), frame 2 two (both recalled), frame 3 one on
    a box no prediction overlaps (missed). TEMPURA / avgR pool the counts: 3 / 4. STKET averages per-frame recalls:
    (1 + 1 + 0) / 3. Every other predicate is absent (0 in both); both are divided by 26."""
    gts = [_gt_frame(relations=((0, 1, LOOKING_AT),)),
           _gt_frame(relations=((0, 1, LOOKING_AT), (0, 1, LOOKING_AT)))]
    gts.append(_gt_frame(object_box=(100, 100, 120, 120), relations=((0, 1, LOOKING_AT),)))
    preds = [_pred_frame(), _pred_frame(), _pred_frame()]
    tempura = _both(gts, preds, constraint="with", ks=(5,))
    stket = _both(gts, preds, constraint="with", ks=(5,), mr_variant="stket")
    # aggregate: looking_at hits 1 + 2 + 0 = 3 of 4
    assert tempura["mR@5"] == pytest.approx(3 / 4 / 26 * 100)
    assert stket["avgR@5"] == pytest.approx(tempura["mR@5"])
    # per frame: looking_at 1, 1, 0 -> 2/3; every other predicate absent everywhere -> 0
    assert stket["mR@5"] == pytest.approx(2 / 3 / 26 * 100)
    assert stket["R@5"] == tempura["R@5"] and "avgR@5" not in tempura


def test_mr_variants_agree_with_the_per_frame_implementation_on_random_data():
    gts, preds = _random_dataset(np.random.default_rng(3), 80, True)
    for constraint in ("with", "no"):
        out = _both(gts, preds, constraint=constraint, ks=(10, 20), mr_variant="stket")
        assert set(out) == {"R@10", "R@20", "mR@10", "mR@20", "avgR@10", "avgR@20"}
        assert out["mR@20"] != out["avgR@20"]


def test_branches_are_read_from_prefixed_keys():
    gts = [_gt_frame(relations=((0, 1, LOOKING_AT),))]
    good, bad = _pred_frame(), _pred_frame()
    bad["attention"] = np.array([[0.1, 0.8, 0.1]], np.float32)  # top-1 = not_looking_at: misses the GT
    frame = dict(bad)
    frame.update({f"ensemble/{k}": good[k] for k in ("attention", "spatial", "contacting")})
    assert evaluate_video_scene_graphs(gts, [frame], constraint="with", ks=(5,))["R@5"] == 0.0
    assert _both(gts, [frame], constraint="with", ks=(5,), branch="ensemble")["R@5"] == pytest.approx(100.0)
    with pytest.raises(KeyError, match="temporal/attention"):
        evaluate_video_scene_graphs(gts, [frame], constraint="with", branch="temporal")
    with pytest.raises(ValueError, match="mr_variant"):
        evaluate_video_scene_graphs(gts, [frame], constraint="with", mr_variant="sgb")


@pytest.fixture
def tiny_dataset():
    name = "stket_eval_tiny"
    videos = [{"video_id": "A", "frames": [_gt_frame(), _gt_frame(relations=((0, 1, NOT_LOOKING_AT),))]}]
    DatasetCatalog.register(name, lambda: videos)
    MetadataCatalog.get(name).set(evaluator_type="video_scene_graph")
    yield name, videos
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_evaluator_reports_every_branch_under_its_own_key(tiny_dataset, tmp_path):
    name, videos = tiny_dataset
    cfg = get_cfg()
    cfg.TEST.RELATION.MODE = "predcls"
    plain = build_evaluator(cfg, name, str(tmp_path / "plain"))
    plain.reset()
    plain.process(videos, [{"frames": [_pred_frame(), _pred_frame()]}])
    plain_results = plain.evaluate()["video_sgg"]
    assert not any(k.count("/") > 1 or "avgR" in k for k in plain_results)  # other models: keys unchanged

    cfg.TEST.VIDEO_RELATION.BRANCHES = ("spatial", "ensemble")
    cfg.TEST.VIDEO_RELATION.MR_VARIANT = "stket"
    evaluator = build_evaluator(cfg, name, str(tmp_path / "branches"))
    evaluator.reset()
    frames = []
    for _ in range(2):
        f = _pred_frame()
        worse = dict(f, attention=np.array([[0.1, 0.8, 0.1]], np.float32))
        f.update({f"spatial/{k}": worse[k] for k in ("attention", "spatial", "contacting")})
        f.update({f"ensemble/{k}": f[k] for k in ("attention", "spatial", "contacting")})
        frames.append(f)
    evaluator.process(videos, [{"frames": frames}])
    results = evaluator.evaluate()["video_sgg"]
    gts = videos[0]["frames"]
    for constraint in ("with", "semi", "no"):
        for branch, source in (("", frames), ("ensemble/", frames), ("spatial/", [dict(
                f, **{k: f[f"spatial/{k}"] for k in ("attention", "spatial", "contacting")}) for f in frames])):
            expected = evaluate_video_scene_graphs(gts, source, constraint=constraint, mr_variant="stket")
            for key, value in expected.items():
                assert results[f"{branch}{constraint}/{key}"] == pytest.approx(value)
    assert results["with/R@10"] == results["ensemble/with/R@10"] != results["spatial/with/R@10"]
    assert results["with/R@10"] == plain_results["with/R@10"]
    saved = json.loads((tmp_path / "branches" / "video_sgg_results.json").read_text())
    assert saved["mr_variant"] == "stket" and saved["branches"] == ["spatial", "ensemble"]
    with pytest.raises(KeyError, match="TEST.VIDEO_RELATION.BRANCHES"):
        evaluator.process(videos, [{"frames": [_pred_frame(), _pred_frame()]}])
