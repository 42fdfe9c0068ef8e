"""Keyframe / video-summarization evaluation on TVSum and SumMe (DESIGN.md §5).

Every metric key names the protocol that produced it (``F1[vsumm]``, ``tau[otani]`` ...); the protocols are chosen
with ``TEST.KEYFRAME.F1_PROTOCOL`` / ``CORRELATION_PROTOCOL`` (functional API: ``f1_protocol=`` /
``correlation_protocol=``) and each follows one reference's arithmetic exactly (docs/keyframes.md has the table of
which published numbers use which):

* ``F1[vsumm]`` (%, the default) — the eccv16 protocol of Zhang et al. 2016 as implemented in
  KaiyangZhou/pytorch-vsumm-reinforce (``vsum_tools.py``): per-step scores are spread to frames over ``picks``,
  averaged per KTS shot (``change_points``), a 0/1 knapsack on a float32 table selects shots totalling at most
  ``floor(0.15 * n_frames)`` frames, and the binary summary is compared frame-wise with every user summary
  (``P = overlap / (|S| + 1e-8)``, same for R; F = 0 when P = R = 0); the per-user F1 is **averaged** (TVSum) or its
  **maximum** taken (SumMe). Precision and recall come from the same users (mean, or the argmax user for SumMe).
* ``F1[dsnet]`` — DSNet (li-plus/DSNet ``vsumm_helper.py``): shot value ``int(1000 * mean)``, OR-Tools' DP knapsack
  (which packs a zero-valued first shot), exact F1 without epsilon, 0 when there is no overlap.
* ``F1[pglsum]`` — PGL-SUM / CA-SUM (``generate_summary.py`` + ``evaluation_metrics.py``): float64 knapsack, capacity
  ``int((last shot end + 1) * 0.15)`` and a summary of that many frames (not ``n_frames``), both summaries zero-padded
  to the longer, F1 without epsilon: an **empty summary gives NaN** (0 / 0), as in the reference.
* ``tau[otani]`` / ``rho[otani]`` (the default) — Otani et al., "Rethinking the evaluation of video summaries" (CVPR
  2019): Kendall's tau-b and Spearman's rho (scipy, ties get average ranks) of the **frame-level** predicted scores
  against **each annotator's raw scores**, averaged over annotators, then over videos. Human agreement on TVSum
  under this protocol is tau 0.177, rho 0.204. For SumMe (no per-annotator scores) the annotators' mean summary is
  the reference. A constant prediction or annotator has no ranking: scipy gives NaN, sgg counts it as **0** and
  reports how often that happened (``constant_correlation_inputs``).
* ``tau[casum]`` / ``rho[casum]`` — CA-SUM's ``choose_best_model.py``: **step-level** scores against each
  annotator's row ``[::15]`` divided by its maximum, ``kendalltau(rankdata(.), rankdata(.))`` and ``spearmanr``,
  mean over annotators and videos; NaN on constant inputs (as the reference); TVSum only (NaN without per-annotator
  scores).
* ``MSE`` — mean squared error between predicted per-step scores and the training target (``gtscore`` min-max
  normalised to [0, 1] per video).
* ``P@15%`` — of the top ``ceil(0.15 n_steps)`` steps by predicted score, the fraction that are also among the top
  ``ceil(0.15 n_steps)`` steps of ``gtscore``.
* ``keyframe_seed_protocol`` — seed 003's variant: rho and tau of the per-step predictions against the *averaged*
  ``gtscore``. Averaging 20 annotators removes their disagreement, so this is far higher (≈ 3x) than the per-annotator
  numbers and is not comparable to published rho ≈ 0.2.

Per-video ground truth (the ``"gt"`` entry that :class:`~sgg.data.keyframe_mapper.KeyframeMapper` attaches in
evaluation mode): ``picks (n_steps,)``, ``n_frames``, ``change_points (n_segs, 2)`` inclusive, ``n_frame_per_seg``,
``user_summary (n_users, n_frames)``, ``gtscore (n_steps,)``, optional ``user_scores (n_users, n_frames)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sgg.config import configurable
from sgg.data.catalog import MetadataCatalog
from sgg.structures.segments import KNAPSACK_PROTOCOLS, generate_summary, minmax_normalize, upsample_to_frames
from sgg.utils import comm

from .build import EVALUATOR_REGISTRY
from .evaluator import DatasetEvaluator

__all__ = [
    "F1_PROTOCOLS", "CORRELATION_PROTOCOLS", "f1_against_users", "rank_correlations", "casum_correlations",
    "precision_at_ratio", "evaluate_video", "aggregate_video_metrics", "evaluate_keyframes", "KeyframeEvaluator",
]

logger = logging.getLogger(__name__)

F1_PROTOCOLS = KNAPSACK_PROTOCOLS  # ("vsumm", "dsnet", "pglsum"): summary + F1 of that reference
CORRELATION_PROTOCOLS = ("otani", "casum")


# ---------------------------------------------------------------------------- primitives
def _check_protocol(name: str, known: Sequence[str], what: str) -> None:
    if name not in known:
        raise ValueError(f"Keyframe {what} protocol must be one of {tuple(known)}, got {name!r}.")


def _user_scores(overlap: float, machine: float, user: float, protocol: str) -> Tuple[float, float, float]:
    """(F1, precision, recall) of one user in [0, 1] from the overlap and the two summary sizes (frames)."""
    if protocol == "vsumm":
        precision, recall = overlap / (machine + 1e-8), overlap / (user + 1e-8)
        f1 = 0.0 if precision == 0 and recall == 0 else 2 * precision * recall / (precision + recall)
        return f1, precision, recall
    if protocol == "dsnet":
        if overlap == 0:
            return 0.0, 0.0, 0.0
        precision, recall = overlap / machine, overlap / user
        return 2 * precision * recall / (precision + recall), precision, recall
    # pglsum: numpy integer division, so 0 / 0 is NaN (an empty summary), and F = 0 only when P + R == 0.
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = float(np.float64(overlap) / np.float64(machine))
        recall = float(np.float64(overlap) / np.float64(user))
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return f1, precision, recall


def f1_against_users(machine_summary: np.ndarray, user_summary: np.ndarray, reduction: str = "avg",
                     protocol: str = "vsumm") -> Tuple[float, float, float]:
    """``(f1, precision, recall)`` in [0, 1] of a binary summary against every user's (``(n_users, n_frames)``).

    ``vsumm`` / ``dsnet``: the machine summary is cut or zero-padded to the users' length; ``pglsum``: both are
    zero-padded to the longer. Per-user F1 is averaged (``"avg"``, TVSum) or maximised (``"max"``, SumMe; precision /
    recall then come from that user; ``pglsum`` takes Python's ``max``, so a NaN first user wins as in the reference).
    See the module docstring for each protocol's arithmetic.
    """
    _check_protocol(protocol, F1_PROTOCOLS, "F1")
    if reduction not in ("avg", "max"):
        raise ValueError(f"F1 reduction must be 'avg' (TVSum) or 'max' (SumMe), got '{reduction}'.")
    users = (np.atleast_2d(np.asarray(user_summary, dtype=np.float32)) > 0).astype(np.int64)
    machine = (np.asarray(machine_summary, dtype=np.float32).reshape(-1) > 0).astype(np.int64)
    n_frames = users.shape[1]
    if protocol == "pglsum":
        length = max(len(machine), n_frames)
        machine, users = np.pad(machine, (0, length - len(machine))), np.pad(users, ((0, 0), (0, length - n_frames)))
    else:
        machine = machine[:n_frames] if len(machine) >= n_frames else np.pad(machine, (0, n_frames - len(machine)))
    per_user = [_user_scores(float((machine & user).sum()), float(machine.sum()), float(user.sum()), protocol)
                for user in users]
    f1s = [f for f, _, _ in per_user]
    if reduction == "avg":
        return tuple(float(sum(col) / len(col)) for col in zip(*per_user))
    best = f1s.index(max(f1s)) if protocol == "pglsum" else int(np.argmax(f1s))
    return tuple(float(x) for x in per_user[best])


def _stats():
    """scipy.stats, imported on first use: it costs about 2 s, and every ``import sgg.evaluation`` loads this module."""
    from scipy import stats

    return stats


def _correlation(fn, x: np.ndarray, y: np.ndarray) -> Tuple[float, bool]:
    """(value, constant): a constant prediction (or annotator) has no ranking; scipy would return NaN, Otani's
    protocol in sgg counts it as 0 and flags it."""
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0, True
    value = fn(x, y)[0]
    return (float(value), False) if np.isfinite(value) else (0.0, True)


def rank_correlations(frame_scores: np.ndarray, reference_scores: np.ndarray,
                      return_constant: bool = False):
    """Otani et al.'s protocol: Kendall tau-b and Spearman rho of ``frame_scores`` against each row of
    ``reference_scores`` (``(n_annotators, n_frames)`` or one row; both cut to the shorter length), averaged.

    Constant inputs count as 0; with ``return_constant`` the number of such (annotator, metric) cases is returned
    as a third element.
    """
    reference_scores = np.atleast_2d(np.asarray(reference_scores, dtype=np.float64))
    pred = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    length = min(len(pred), reference_scores.shape[1])
    stats = _stats()
    taus, rhos, constant = [], [], 0
    for ref in reference_scores:
        for fn, out in ((stats.kendalltau, taus), (stats.spearmanr, rhos)):
            value, flat = _correlation(fn, pred[:length], ref[:length])
            out.append(value)
            constant += int(flat)
    result = (float(np.mean(taus)), float(np.mean(rhos)))
    return result + (constant,) if return_constant else result


def casum_correlations(step_scores: np.ndarray, user_scores: np.ndarray, video_id: str = "?") -> Tuple[float, float]:
    """CA-SUM's protocol (TVSum): per-step scores against each annotator's frame scores ``[::15]`` / max.

    ``kendalltau(rankdata(pred), rankdata(user))`` and ``spearmanr(pred, user)``, mean over annotators; NaN on a
    constant input, as the reference. The reference assumes TVSum's sampling (a step every 15 frames): a length
    mismatch is an error here, where the reference would crash inside scipy.
    """
    stats = _stats()
    pred = np.asarray(step_scores, dtype=np.float64).reshape(-1)
    taus, rhos = [], []
    for row in np.atleast_2d(np.asarray(user_scores, dtype=np.float64)):
        ref = (row / row.max(initial=-1))[::15]
        if len(ref) != len(pred):
            raise ValueError(f"Video '{video_id}': CA-SUM's correlation protocol compares the {len(pred)} step scores "
                             f"with every 15th annotator frame ({len(ref)}); it needs TVSum's 15-frame sampling. Use "
                             "TEST.KEYFRAME.CORRELATION_PROTOCOL otani for other data.")
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on constant input and returns NaN, as CA-SUM sees it
            rhos.append(float(stats.spearmanr(pred, ref)[0]))
            taus.append(float(stats.kendalltau(stats.rankdata(pred), stats.rankdata(ref))[0]))
    return float(np.mean(taus)), float(np.mean(rhos))


def precision_at_ratio(pred: np.ndarray, target: np.ndarray, ratio: float = 0.15) -> float:
    """Fraction of the top ``ceil(ratio n)`` predicted steps that are in the top ``ceil(ratio n)`` of ``target``.

    Ties are broken by position (stable sort), so the value is deterministic.
    """
    pred, target = np.asarray(pred, dtype=np.float64).reshape(-1), np.asarray(target, dtype=np.float64).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"precision_at_ratio: prediction {pred.shape} and target {target.shape} differ.")
    k = max(1, int(math.ceil(ratio * len(pred))))
    top_pred = set(np.argsort(-pred, kind="stable")[:k].tolist())
    top_true = set(np.argsort(-target, kind="stable")[:k].tolist())
    return len(top_pred & top_true) / k


# ---------------------------------------------------------------------------- per video / aggregate
def evaluate_video(step_scores: np.ndarray, gt: dict, *, ratio: float = 0.15, f1_reduction: str = "avg",
                   f1_protocol: str = "vsumm", correlation_protocol: str = "otani") -> dict:
    """All metrics of one video; ``gt`` holds the arrays listed in the module docstring.

    Returns ``{"F1[p]", "precision[p]", "recall[p]", "MSE", "P@15%", "seed_rho", "seed_tau"}`` (``p`` =
    ``f1_protocol``) and, when the correlation protocol has its reference scores, ``"tau[q]"``, ``"rho[q]"`` (``q`` =
    ``correlation_protocol``; Otani's also ``"constant_correlation_inputs"``). F1-style numbers are in [0, 1] here.
    """
    _check_protocol(f1_protocol, F1_PROTOCOLS, "F1")
    _check_protocol(correlation_protocol, CORRELATION_PROTOCOLS, "correlation")
    step_scores = np.asarray(step_scores, dtype=np.float64).reshape(-1)
    picks, n_frames = np.asarray(gt["picks"]), int(gt["n_frames"])
    gtscore = np.asarray(gt["gtscore"], dtype=np.float64).reshape(-1)
    video_id = gt.get("video_id", "?")
    if len(step_scores) != len(picks) or len(gtscore) != len(picks):
        raise ValueError(f"Video '{video_id}': {len(step_scores)} predicted scores, {len(picks)} "
                         f"picks and {len(gtscore)} gtscore entries; they must be equal.")
    summary = generate_summary(step_scores, gt["change_points"], n_frames, gt["n_frame_per_seg"], picks, ratio,
                               protocol=f1_protocol)
    f1, precision, recall = f1_against_users(summary, gt["user_summary"], f1_reduction, protocol=f1_protocol)
    p, q = f"[{f1_protocol}]", f"[{correlation_protocol}]"
    out = {"F1" + p: f1, "precision" + p: precision, "recall" + p: recall,
           "MSE": float(np.mean((step_scores - minmax_normalize(gtscore)) ** 2)),
           "P@15%": precision_at_ratio(step_scores, gtscore, ratio)}
    out["seed_tau"], out["seed_rho"] = rank_correlations(step_scores, gtscore[None])
    user_scores = gt.get("user_scores")
    if correlation_protocol == "casum":
        if user_scores is not None:
            out["tau" + q], out["rho" + q] = casum_correlations(step_scores, user_scores, video_id)
        return out
    frame_scores = upsample_to_frames(step_scores, picks, n_frames)
    reference = user_scores
    if reference is None and f1_reduction == "max":
        # SumMe has no per-annotator scores: correlate with the annotators' mean summary.
        reference = np.mean(gt["user_summary"], axis=0)[None]
    if reference is not None:
        out["tau" + q], out["rho" + q], out["constant_correlation_inputs"] = rank_correlations(
            frame_scores, reference, return_constant=True)
    return out


def aggregate_video_metrics(per_video: Sequence[dict]) -> "OrderedDict[str, Dict[str, float]]":
    """Average per-video metrics into the reported tasks (F1 / precision / recall in %); keys keep their protocol
    label. A NaN of a protocol that produces NaN (``pglsum``'s empty summary, ``casum``'s constant input) propagates
    to the mean, as in the reference."""
    def mean(key):
        values = [v[key] for v in per_video if key in v]
        return float(np.mean(values)) if values else float("nan")

    keys = list(dict.fromkeys(k for v in per_video for k in v))
    main = OrderedDict()
    for key in keys:
        if key.startswith(("F1[", "precision[", "recall[")):
            main[key] = 100.0 * mean(key)
    for key in keys:
        if key.startswith(("tau[", "rho[")):
            main[key] = mean(key)
    main["MSE"] = mean("MSE")
    main["P@15%"] = mean("P@15%")
    if "constant_correlation_inputs" in keys:
        main["constant_correlation_inputs"] = float(sum(v.get("constant_correlation_inputs", 0) for v in per_video))
    main["num_videos"] = float(len(per_video))
    seed = OrderedDict(rho_vs_mean_gtscore=mean("seed_rho"), tau_vs_mean_gtscore=mean("seed_tau"))
    return OrderedDict(keyframe=main, keyframe_seed_protocol=seed)


def evaluate_keyframes(groundtruths: Sequence[dict], predictions: Sequence[np.ndarray], *, ratio: float = 0.15,
                       f1_reduction: str = "avg", f1_protocol: str = "vsumm",
                       correlation_protocol: str = "otani") -> "OrderedDict[str, Dict[str, float]]":
    """Functional API: per-video ``gt`` dicts and per-step score arrays -> ``{task: {metric: value}}``; protocols as
    :func:`evaluate_video`."""
    if len(groundtruths) != len(predictions):
        raise ValueError(f"{len(groundtruths)} ground truths but {len(predictions)} predictions.")
    per_video = [evaluate_video(p, g, ratio=ratio, f1_reduction=f1_reduction, f1_protocol=f1_protocol,
                                correlation_protocol=correlation_protocol)
                 for g, p in zip(groundtruths, predictions)]
    return aggregate_video_metrics(per_video)


def _random_baseline(groundtruths: Sequence[dict], *, trials: int, seed: int, **protocol) -> Dict[str, float]:
    """The same protocol (``protocol``: :func:`evaluate_keyframes` keywords) on uniform random per-step scores,
    averaged over ``trials`` draws."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(trials):
        preds = [rng.random(len(g["picks"])) for g in groundtruths]
        runs.append(evaluate_keyframes(groundtruths, preds, **protocol)["keyframe"])
    return OrderedDict((k, float(np.mean([r[k] for r in runs]))) for k in runs[0])


# ---------------------------------------------------------------------------- DatasetEvaluator
@EVALUATOR_REGISTRY.register("keyframe")
class KeyframeEvaluator(DatasetEvaluator):
    """Collects ``outputs[i]["scores"]`` (per-step, in [0, 1]) with ``inputs[i]["gt"]`` and reports the protocols
    of the module docstring as tasks ``keyframe``, ``keyframe_seed_protocol`` and (optionally)
    ``keyframe_random_baseline``. Per-video numbers go to ``<output_dir>/keyframe_per_video.json``.
    """

    @configurable
    def __init__(self, *, dataset_name: str, output_dir: Optional[str] = None, ratio: float = 0.15,
                 f1_reduction: str = "avg", f1_protocol: str = "vsumm", correlation_protocol: str = "otani",
                 random_baseline_trials: int = 0, seed: int = 0):
        if f1_reduction not in ("avg", "max"):
            raise ValueError(f"f1_reduction must be 'avg' or 'max', got '{f1_reduction}'.")
        _check_protocol(f1_protocol, F1_PROTOCOLS, "F1 (TEST.KEYFRAME.F1_PROTOCOL)")
        _check_protocol(correlation_protocol, CORRELATION_PROTOCOLS, "correlation (TEST.KEYFRAME.CORRELATION_PROTOCOL)")
        self.dataset_name, self.output_dir = dataset_name, output_dir
        self.protocol = {"ratio": ratio, "f1_reduction": f1_reduction, "f1_protocol": f1_protocol,
                         "correlation_protocol": correlation_protocol}
        self.random_baseline_trials, self.seed = random_baseline_trials, seed
        self._records: List[dict] = []

    @classmethod
    def from_config(cls, cfg, dataset_name, output_dir=None):
        meta = MetadataCatalog.get(dataset_name)
        reduction = cfg.TEST.KEYFRAME.F1_REDUCTION or meta.get("f1_reduction", "avg")
        return {"dataset_name": dataset_name, "output_dir": output_dir, "ratio": cfg.TEST.KEYFRAME.SUMMARY_RATIO,
                "f1_reduction": reduction, "f1_protocol": cfg.TEST.KEYFRAME.F1_PROTOCOL,
                "correlation_protocol": cfg.TEST.KEYFRAME.CORRELATION_PROTOCOL,
                "random_baseline_trials": cfg.TEST.KEYFRAME.RANDOM_BASELINE_TRIALS, "seed": max(cfg.SEED, 0)}

    def reset(self) -> None:
        self._records = []

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "gt" not in inp:
                raise KeyError(f"KeyframeEvaluator: input '{inp.get('video_id', '?')}' has no 'gt' entry; build the "
                               "test loader with KeyframeMapper(cfg, is_train=False).")
            scores = out["scores"]
            scores = scores.detach().float().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores)
            gt = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in inp["gt"].items()}
            gt.setdefault("video_id", inp.get("video_id"))
            self._records.append({"video_id": inp.get("video_id"), "gt": gt, "scores": scores})

    def evaluate(self):
        records = [r for part in comm.gather(self._records) for r in part] if comm.get_world_size() > 1 \
            else self._records
        if not comm.is_main_process():
            return {}
        if not records:
            logger.warning("KeyframeEvaluator on '%s' received no videos.", self.dataset_name)
            return {}
        gts, preds = [r["gt"] for r in records], [r["scores"] for r in records]
        per_video = [evaluate_video(p, g, **self.protocol) for g, p in zip(gts, preds)]
        results = aggregate_video_metrics(per_video)
        if not any(k.startswith("tau[") for v in per_video for k in v):
            logger.warning("No per-annotator scores for '%s': tau/rho (%s protocol) are not reported. Provide "
                           "ydata-tvsum50-anno.tsv next to the h5 (see datasets/README_tvsum.md).", self.dataset_name,
                           self.protocol["correlation_protocol"])
        if self.random_baseline_trials > 0:
            results["keyframe_random_baseline"] = _random_baseline(
                gts, trials=self.random_baseline_trials, seed=self.seed, **self.protocol)
        self._write_per_video(records, per_video)
        return results

    def _write_per_video(self, records: List[dict], per_video: List[dict]) -> None:
        if not self.output_dir:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, "keyframe_per_video.json")
        rows = [{"video_id": r["video_id"], **m} for r, m in zip(records, per_video)]
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
        logger.info("Wrote per-video keyframe metrics to %s", path)
