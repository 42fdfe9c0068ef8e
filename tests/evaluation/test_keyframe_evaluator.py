"""Keyframe protocol tests with hand-computed answers (knapsack, summaries, F1 over users, tau/rho with ties)."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from sgg.config import get_cfg
from sgg.evaluation import EVALUATOR_REGISTRY
from sgg.evaluation.keyframe import (
    KeyframeEvaluator,
    casum_correlations,
    evaluate_keyframes,
    evaluate_video,
    f1_against_users,
    precision_at_ratio,
    rank_correlations,
)
from sgg.structures.segments import (
    generate_summary,
    knapsack_01,
    knapsack_float64,
    knapsack_ortools_dp,
    upsample_to_frames,
)


def test_f1_against_several_users_avg_and_max():
    machine = np.array([1, 1, 0, 0])
    users = np.array([[1, 0, 0, 0],   # P 1/2, R 1   -> F 2/3
                      [0, 0, 1, 1],   # no overlap   -> F 0
                      [1, 1, 0, 0]])  # identical    -> F 1
    f, p, r = f1_against_users(machine, users, "avg")
    assert f == pytest.approx((2 / 3 + 0 + 1) / 3, abs=1e-6)
    assert p == pytest.approx((0.5 + 0 + 1) / 3, abs=1e-6)
    assert r == pytest.approx((1 + 0 + 1) / 3, abs=1e-6)
    assert f1_against_users(machine, users, "max") == pytest.approx((1.0, 1.0, 1.0), abs=1e-6)
    # A shorter machine summary is zero-padded: [1] vs user [1, 1] -> P 1, R 1/2, F 2/3.
    assert f1_against_users([1], [[1, 1]], "avg")[0] == pytest.approx(2 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="'avg' .* or 'max'"):
        f1_against_users(machine, users, "median")


def test_rank_correlations_with_ties_hand_computed():
    pred = np.array([1.0, 2.0, 3.0, 4.0])
    users = np.array([[1, 1, 2, 2],    # tied pairs: tau-b = 4 / sqrt(6 * 4), rho = 4 / sqrt(5 * 4)
                      [4, 3, 2, 1]])   # reversed: tau = rho = -1
    tau, rho = rank_correlations(pred, users)
    assert tau == pytest.approx((4 / math.sqrt(24) - 1) / 2, abs=1e-9)
    assert rho == pytest.approx((4 / math.sqrt(20) - 1) / 2, abs=1e-9)
    # Ties in the prediction too: pred [1, 1, 2, 3] vs user [1, 2, 2, 3]: C = 4, D = 0, ties 1 each side.
    tau, rho = rank_correlations([1, 1, 2, 3], [[1, 2, 2, 3]])
    assert tau == pytest.approx(4 / 5, abs=1e-9)
    assert rho == pytest.approx(stats.spearmanr([1, 1, 2, 3], [1, 2, 2, 3])[0], abs=1e-12)
    # A constant prediction has no ranking: counted as 0 instead of NaN.
    assert rank_correlations([0.5, 0.5, 0.5], [[1, 2, 3]]) == (0.0, 0.0)


def test_precision_at_ratio():
    pred = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0])
    target = np.array([1.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    # k = ceil(0.15 * 10) = 2: predicted top {0, 2}, true top {0, 1} -> 1 / 2.
    assert precision_at_ratio(pred, target, 0.15) == 0.5
    assert precision_at_ratio(target, target, 0.15) == 1.0


def _toy_gt(user_scores=True):
    # 20 frames, picks every 5 frames, two shots [0, 9] and [10, 19]; users prefer the second shot.
    gt = {"picks": np.array([0, 5, 10, 15]), "n_frames": 20, "change_points": np.array([[0, 9], [10, 19]]),
          "n_frame_per_seg": np.array([10, 10]), "gtscore": np.array([0.1, 0.2, 0.8, 0.9]),
          "user_summary": np.array([[0] * 10 + [1] * 10, [0] * 10 + [1] * 3 + [0] * 7])}
    if user_scores:
        gt["user_scores"] = np.array([[1] * 10 + [5] * 10, [2] * 5 + [1] * 5 + [4] * 10])
    return gt


def test_evaluate_video_end_to_end_hand_case():
    gt = _toy_gt()
    # Ratio 0.5 -> capacity 10 frames: exactly one shot; the prediction prefers shot 2.
    m = evaluate_video(np.array([0.0, 0.1, 0.7, 1.0]), gt, ratio=0.5)
    # machine = frames 10..19; user 1 identical (F 1), user 2: P 3/10, R 1 -> F 6/13.
    assert m["F1[vsumm]"] == pytest.approx((1 + 6 / 13) / 2, abs=1e-6)
    assert m["MSE"] == pytest.approx(np.mean((np.array([0, 0.1, 0.7, 1.0]) - np.array([0, 1 / 8, 7 / 8, 1])) ** 2))
    assert m["seed_rho"] == pytest.approx(1.0) and m["seed_tau"] == pytest.approx(1.0)
    frame_scores = upsample_to_frames([0.0, 0.1, 0.7, 1.0], gt["picks"], 20)
    expected_tau = np.mean([stats.kendalltau(frame_scores, u)[0] for u in gt["user_scores"]])
    assert m["tau[otani]"] == pytest.approx(expected_tau, abs=1e-12) and m["constant_correlation_inputs"] == 0
    # Without per-annotator scores (TVSum h5 alone) tau/rho are absent, not invented.
    assert "tau[otani]" not in evaluate_video(np.array([0.0, 0.1, 0.7, 1.0]), _toy_gt(False), ratio=0.5)
    # SumMe: F1 is the best user's, correlation against the mean user summary.
    m = evaluate_video(np.array([0.0, 0.1, 0.7, 1.0]), _toy_gt(False), ratio=0.5, f1_reduction="max")
    assert m["F1[vsumm]"] == pytest.approx(1.0, abs=1e-6) and "rho[otani]" in m


def test_evaluate_keyframes_aggregates_in_percent():
    gts = [_toy_gt(), _toy_gt()]
    res = evaluate_keyframes(gts, [np.array([0.0, 0.1, 0.7, 1.0]), np.array([1.0, 0.7, 0.1, 0.0])], ratio=0.5)
    # Video 2 picks shot 1: user 1 F 0, user 2 F 0 -> mean over videos ((1 + 6/13) / 2 + 0) / 2, in %.
    assert res["keyframe"]["F1[vsumm]"] == pytest.approx(100 * (1 + 6 / 13) / 4, abs=1e-4)
    assert res["keyframe"]["num_videos"] == 2
    assert res["keyframe_seed_protocol"]["rho_vs_mean_gtscore"] == pytest.approx(0.0, abs=1e-9)  # +1 and -1
    with pytest.raises(ValueError, match="2 ground truths but 1 predictions"):
        evaluate_keyframes(gts, [np.zeros(4)])
    with pytest.raises(ValueError, match="3 predicted scores, 4 picks"):
        evaluate_keyframes(gts[:1], [np.zeros(3)])


def test_evaluator_registered_and_writes_per_video(tmp_path):
    cfg = get_cfg()
    cfg.TEST.KEYFRAME.SUMMARY_RATIO = 0.5
    cfg.TEST.KEYFRAME.RANDOM_BASELINE_TRIALS = 3
    evaluator = EVALUATOR_REGISTRY.get("keyframe")(cfg, "some_keyframe_dataset", str(tmp_path))
    assert isinstance(evaluator, KeyframeEvaluator) and evaluator.protocol["f1_reduction"] == "avg"
    evaluator.reset()
    evaluator.process([{"video_id": "a", "gt": _toy_gt()}], [{"scores": np.array([0.0, 0.1, 0.7, 1.0])}])
    results = evaluator.evaluate()
    assert results["keyframe"]["F1[vsumm]"] == pytest.approx(100 * (1 + 6 / 13) / 2, abs=1e-4)
    assert set(results) == {"keyframe", "keyframe_seed_protocol", "keyframe_random_baseline"}
    rows = json.loads((tmp_path / "keyframe_per_video.json").read_text())
    assert rows[0]["video_id"] == "a" and rows[0]["F1[vsumm]"] == pytest.approx((1 + 6 / 13) / 2, abs=1e-6)
    with pytest.raises(KeyError, match="has no 'gt' entry"):
        evaluator.process([{"video_id": "b"}], [{"scores": np.zeros(4)}])


# ---------------------------------------------------------------------------------------------- protocols
def test_f1_protocols_differ_exactly_where_their_references_do():
    machine, users = np.array([1, 1, 0, 0]), np.array([[1, 0, 0, 0], [0, 0, 1, 1]])
    # No overlap with user 2: every protocol gives 0 there; user 1: P 1/2, R 1.
    for protocol in ("vsumm", "dsnet", "pglsum"):
        f, p, r = f1_against_users(machine, users, "avg", protocol=protocol)
        assert f == pytest.approx((2 / 3) / 2, abs=1e-6) and r == pytest.approx(0.5, abs=1e-6)
    # vsumm's epsilon: P = 1 / (1 + 1e-8), not exactly 1; DSNet and PGL-SUM are exact.
    assert f1_against_users([1], [[1]], protocol="vsumm")[1] < 1.0
    assert f1_against_users([1], [[1]], protocol="dsnet") == (1.0, 1.0, 1.0)
    assert f1_against_users([1], [[1]], protocol="pglsum") == (1.0, 1.0, 1.0)
    # An empty summary: vsumm / dsnet give 0, PGL-SUM divides 0 by 0 -> NaN.
    assert f1_against_users([0, 0], [[1, 0]], protocol="vsumm")[0] == 0.0
    assert f1_against_users([0, 0], [[1, 0]], protocol="dsnet")[0] == 0.0
    assert math.isnan(f1_against_users([0, 0], [[1, 0]], protocol="pglsum")[0])
    # A longer machine summary: vsumm / dsnet cut it to the users' length, PGL-SUM pads the users instead.
    assert f1_against_users([1, 1], [[1]], protocol="dsnet")[0] == 1.0
    assert f1_against_users([1, 1], [[1]], protocol="pglsum")[0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="F1 protocol"):
        f1_against_users(machine, users, protocol="summe")


def _two_shot_gt():
    # Issue #21's case: shots [0, 13] and [14, 79] of a 100-frame video.
    return {"picks": np.arange(0, 100, 10), "n_frames": 100, "change_points": np.array([[0, 13], [14, 79]]),
            "n_frame_per_seg": np.array([14, 66]), "gtscore": np.linspace(0, 1, 10),
            "user_summary": np.array([[1] * 14 + [0] * 86]), "user_scores": np.tile(np.arange(100.0), (2, 1))}


def test_pglsum_capacity_comes_from_the_last_shot_so_nothing_fits():
    gt, scores = _two_shot_gt(), np.linspace(1, 0, 10)
    vsumm = generate_summary(scores, gt["change_points"], 100, gt["n_frame_per_seg"], gt["picks"], 0.15)
    assert vsumm[:14].all() and not vsumm[14:].any()  # capacity floor(15) holds shot 0
    pgl = generate_summary(scores, gt["change_points"], 100, gt["n_frame_per_seg"], gt["picks"], 0.15,
                           protocol="pglsum")
    assert pgl.shape == (80,) and not pgl.any()  # capacity int(80 * 0.15) = 12 < 14
    assert evaluate_video(scores, gt, f1_protocol="vsumm")["F1[vsumm]"] == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(evaluate_video(scores, gt, f1_protocol="pglsum")["F1[pglsum]"])
    res = evaluate_keyframes([gt, gt], [scores, scores], f1_protocol="pglsum")["keyframe"]
    assert math.isnan(res["F1[pglsum]"]) and "F1[vsumm]" not in res


def test_knapsacks_on_the_diverging_inputs():
    # DSNet / OR-Tools packs the zero-valued item 0 when nothing better fits; the others pack nothing.
    assert knapsack_ortools_dp([0, 200], [1, 4], 1) == [0]
    assert knapsack_01([0.0, 0.2], [1, 4], 1) == [] and knapsack_float64([0.0, 0.2], [1, 4], 1) == []
    # float32 shot means: the float64 table prefers item 2 (0.6000000238 > 0.2000000030 + 0.4000000060), the float32
    # table sees a tie and keeps items 0 and 1.
    values = [float(np.float32(v)) for v in (0.2, 0.4, 0.6)]
    assert knapsack_float64(values, [3, 1, 4], 4) == [2]
    assert knapsack_01(values, [3, 1, 4], 4) == [0, 1]
    # OR-Tools packs everything when everything fits (its capacity reduction), zero values included.
    assert knapsack_ortools_dp([0, 0, 5], [1, 1, 1], 3) == [0, 1, 2]
    assert knapsack_ortools_dp([3, 4, 5], [2, 3, 4], 5) == [0, 1]


def test_dsnet_summary_uses_integer_shot_values():
    # Shot means 0.0004 and 0.0009 both truncate to int(1000 * m) = 0: OR-Tools then packs item 0 (the first shot),
    # while the float protocols pick the better second shot.
    gt = {"picks": np.array([0, 10]), "n_frames": 20, "change_points": np.array([[0, 9], [10, 19]]),
          "n_frame_per_seg": np.array([10, 10])}
    scores = np.array([0.0004, 0.0009])
    args = (scores, gt["change_points"], 20, gt["n_frame_per_seg"], gt["picks"], 0.5)
    assert generate_summary(*args, protocol="dsnet")[:10].all()
    assert generate_summary(*args, protocol="vsumm")[10:].all() and not generate_summary(*args)[:10].any()


def test_correlation_protocols():
    gt = _two_shot_gt()
    gt["user_scores"] = np.stack([np.arange(100.0), np.arange(100.0)[::-1]])
    scores = np.linspace(0, 1, 10)
    m = evaluate_video(scores, gt, correlation_protocol="otani")
    assert set(k for k in m if k.startswith(("tau", "rho"))) == {"tau[otani]", "rho[otani]"}
    # CA-SUM: the step scores against every 15th annotator frame -- needs 15-frame sampling.
    with pytest.raises(ValueError, match="15-frame sampling"):
        evaluate_video(scores, gt, correlation_protocol="casum")
    picks = np.arange(0, 100, 15)  # 7 steps
    gt.update(picks=picks, gtscore=np.linspace(0, 1, 7))
    m = evaluate_video(np.linspace(0, 1, 7), gt, correlation_protocol="casum")
    assert m["tau[casum]"] == pytest.approx(0.0) and m["rho[casum]"] == pytest.approx(0.0)  # +1 and -1
    tau, rho = casum_correlations(np.linspace(0, 1, 7), gt["user_scores"][:1])
    assert tau == pytest.approx(1.0) and rho == pytest.approx(1.0)
    # Constant prediction: CA-SUM (scipy) gives NaN; Otani's protocol in sgg gives a flagged 0.
    flat = np.full(7, 0.5)
    assert all(math.isnan(v) for v in casum_correlations(flat, gt["user_scores"]))
    tau, rho, constant = rank_correlations(upsample_to_frames(flat, picks, 100), gt["user_scores"],
                                           return_constant=True)
    assert (tau, rho, constant) == (0.0, 0.0, 4)
    res = evaluate_keyframes([gt], [flat])["keyframe"]
    assert res["constant_correlation_inputs"] == 4.0


def test_evaluator_protocol_keys_from_config(tmp_path):
    cfg = get_cfg()
    cfg.TEST.KEYFRAME.SUMMARY_RATIO = 0.5
    cfg.TEST.KEYFRAME.F1_PROTOCOL = "dsnet"
    evaluator = EVALUATOR_REGISTRY.get("keyframe")(cfg, "some_keyframe_dataset", str(tmp_path))
    evaluator.process([{"video_id": "a", "gt": _toy_gt()}], [{"scores": np.array([0.0, 0.1, 0.7, 1.0])}])
    results = evaluator.evaluate()["keyframe"]
    assert results["F1[dsnet]"] == pytest.approx(100 * (1 + 6 / 13) / 2, abs=1e-9) and "tau[otani]" in results
    cfg.TEST.KEYFRAME.CORRELATION_PROTOCOL = "kendall"
    with pytest.raises(ValueError, match="CORRELATION_PROTOCOL"):
        EVALUATOR_REGISTRY.get("keyframe")(cfg, "some_keyframe_dataset", str(tmp_path))
