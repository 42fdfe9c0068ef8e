"""Keyframe / video-summarization evaluation on TVSum and SumMe (DESIGN.md §5).

Protocols, each reported under its own label:

* ``F1`` (%) — the eccv16 protocol of Zhang et al. 2016 as implemented in KaiyangZhou/pytorch-vsumm-reinforce
  (``vsum_tools.py``) and DSNet: per-step scores are spread to frames over ``picks``, averaged per KTS shot
  (``change_points``), a 0/1 knapsack selects shots totalling at most ``floor(0.15 * n_frames)`` frames, and the
  resulting binary summary is compared frame-wise with every user summary; the per-user F1 is **averaged** (TVSum) or
  its **maximum** taken (SumMe). Precision and recall come from the same users (mean, or the argmax user for SumMe).
* ``tau`` / ``rho`` — rank correlation of the frame-level predicted scores with **each annotator's** raw scores,
  averaged over annotators, then over videos (Otani et al., "Rethinking the evaluation of video summaries", CVPR 2019;
  the PGL-SUM / CA-SUM code). Kendall's tau-b and Spearman's rho from scipy (ties get average ranks). Human
  agreement on TVSum under this protocol is tau 0.177, rho 0.204. For SumMe, the annotators' mean summary is the
  reference (as in CA-SUM).
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
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sgg.config import configurable
from sgg.data.catalog import MetadataCatalog
from sgg.structures.segments import generate_summary, minmax_normalize, upsample_to_frames
from sgg.utils import comm

from .build import EVALUATOR_REGISTRY
from .evaluator import DatasetEvaluator

__all__ = [
    "f1_against_users", "rank_correlations", "precision_at_ratio", "evaluate_video", "aggregate_video_metrics",
    "evaluate_keyframes", "KeyframeEvaluator",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- primitives
def f1_against_users(machine_summary: np.ndarray, user_summary: np.ndarray, reduction: str = "avg"
                     ) -> Tuple[float, float, float]:
    """``(f1, precision, recall)`` in [0, 1] of a binary summary against every user's (``(n_users, n_frames)``).

    The machine summary is cut or zero-padded to the users' length; per-user F1 is averaged (``"avg"``, TVSum)
    or maximised (``"max"``, SumMe; precision/recall then come from that user).
    """
    user_summary = (np.atleast_2d(np.asarray(user_summary, dtype=np.float32)) > 0).astype(np.float32)
    machine = (np.asarray(machine_summary, dtype=np.float32).reshape(-1) > 0).astype(np.float32)
    n_frames = user_summary.shape[1]
    machine = machine[:n_frames] if len(machine) >= n_frames else np.pad(machine, (0, n_frames - len(machine)))
    f1s, precisions, recalls = [], [], []
    for user in user_summary:
        overlap = float((machine * user).sum())
        precision = overlap / (machine.sum() + 1e-8)
        recall = overlap / (user.sum() + 1e-8)
        f1 = 0.0 if precision == 0 and recall == 0 else 2 * precision * recall / (precision + recall)
        f1s.append(f1)
        precisions.append(precision)
        recalls.append(recall)
    if reduction == "avg":
        return float(np.mean(f1s)), float(np.mean(precisions)), float(np.mean(recalls))
    if reduction == "max":
        best = int(np.argmax(f1s))
        return float(f1s[best]), float(precisions[best]), float(recalls[best])
    raise ValueError(f"F1 reduction must be 'avg' (TVSum) or 'max' (SumMe), got '{reduction}'.")


def _correlation(fn, x: np.ndarray, y: np.ndarray) -> float:
    # A constant prediction (or annotator) has no ranking: scipy would return NaN; count it as no correlation.
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    value = fn(x, y)[0]
    return float(value) if np.isfinite(value) else 0.0


def rank_correlations(frame_scores: np.ndarray, reference_scores: np.ndarray) -> Tuple[float, float]:
    """Kendall tau-b and Spearman rho of ``frame_scores`` against each row of ``reference_scores``, averaged.

    ``reference_scores`` is ``(n_annotators, n_frames)`` (or one row); both are cut to the shorter length.
    """
    from scipy import stats  # imported here: scipy.stats costs seconds, and every `import sgg.evaluation` loads us

    reference_scores = np.atleast_2d(np.asarray(reference_scores, dtype=np.float64))
    pred = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    length = min(len(pred), reference_scores.shape[1])
    taus, rhos = [], []
    for ref in reference_scores:
        taus.append(_correlation(stats.kendalltau, pred[:length], ref[:length]))
        rhos.append(_correlation(stats.spearmanr, pred[:length], ref[:length]))
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
def evaluate_video(step_scores: np.ndarray, gt: dict, *, ratio: float = 0.15, f1_reduction: str = "avg") -> dict:
    """All metrics of one video; ``gt`` holds the arrays listed in the module docstring.

    Returns ``{"F1", "precision", "recall", "MSE", "P@15%", "seed_rho", "seed_tau"}`` and, when per-annotator scores
    are known (``gt["user_scores"]``), ``"tau"`` and ``"rho"`` (all F1-style numbers in [0, 1] here).
    """
    step_scores = np.asarray(step_scores, dtype=np.float64).reshape(-1)
    picks, n_frames = np.asarray(gt["picks"]), int(gt["n_frames"])
    gtscore = np.asarray(gt["gtscore"], dtype=np.float64).reshape(-1)
    if len(step_scores) != len(picks) or len(gtscore) != len(picks):
        raise ValueError(f"Video '{gt.get('video_id', '?')}': {len(step_scores)} predicted scores, {len(picks)} "
                         f"picks and {len(gtscore)} gtscore entries; they must be equal.")
    summary = generate_summary(step_scores, gt["change_points"], n_frames, gt["n_frame_per_seg"], picks, ratio)
    f1, precision, recall = f1_against_users(summary, gt["user_summary"], f1_reduction)
    out = {"F1": f1, "precision": precision, "recall": recall,
           "MSE": float(np.mean((step_scores - minmax_normalize(gtscore)) ** 2)),
           "P@15%": precision_at_ratio(step_scores, gtscore, ratio)}
    out["seed_tau"], out["seed_rho"] = rank_correlations(step_scores, gtscore[None])
    frame_scores = upsample_to_frames(step_scores, picks, n_frames)
    if gt.get("user_scores") is not None:
        out["tau"], out["rho"] = rank_correlations(frame_scores, gt["user_scores"])
    elif f1_reduction == "max":
        # SumMe has no per-annotator scores: CA-SUM correlates with the annotators' mean summary.
        out["tau"], out["rho"] = rank_correlations(frame_scores, np.mean(gt["user_summary"], axis=0)[None])
    return out


def aggregate_video_metrics(per_video: Sequence[dict]) -> "OrderedDict[str, Dict[str, float]]":
    """Average per-video metrics into the reported tasks (F1/precision/recall in %)."""
    def mean(key):
        values = [v[key] for v in per_video if key in v]
        return float(np.mean(values)) if values else float("nan")

    main = OrderedDict()
    main["F1"] = 100.0 * mean("F1")
    main["precision"] = 100.0 * mean("precision")
    main["recall"] = 100.0 * mean("recall")
    main["tau"] = mean("tau")
    main["rho"] = mean("rho")
    main["MSE"] = mean("MSE")
    main["P@15%"] = mean("P@15%")
    main["num_videos"] = float(len(per_video))
    seed = OrderedDict(rho_vs_mean_gtscore=mean("seed_rho"), tau_vs_mean_gtscore=mean("seed_tau"))
    return OrderedDict(keyframe=main, keyframe_seed_protocol=seed)


def evaluate_keyframes(groundtruths: Sequence[dict], predictions: Sequence[np.ndarray], *, ratio: float = 0.15,
                       f1_reduction: str = "avg") -> "OrderedDict[str, Dict[str, float]]":
    """Functional API: per-video ``gt`` dicts and per-step score arrays -> ``{task: {metric: value}}``."""
    if len(groundtruths) != len(predictions):
        raise ValueError(f"{len(groundtruths)} ground truths but {len(predictions)} predictions.")
    per_video = [evaluate_video(p, g, ratio=ratio, f1_reduction=f1_reduction)
                 for g, p in zip(groundtruths, predictions)]
    return aggregate_video_metrics(per_video)


def _random_baseline(groundtruths: Sequence[dict], *, ratio: float, f1_reduction: str, trials: int,
                     seed: int) -> Dict[str, float]:
    """The same protocol on uniform random per-step scores, averaged over ``trials`` draws."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(trials):
        preds = [rng.random(len(g["picks"])) for g in groundtruths]
        runs.append(evaluate_keyframes(groundtruths, preds, ratio=ratio, f1_reduction=f1_reduction)["keyframe"])
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
                 f1_reduction: str = "avg", random_baseline_trials: int = 0, seed: int = 0):
        if f1_reduction not in ("avg", "max"):
            raise ValueError(f"f1_reduction must be 'avg' or 'max', got '{f1_reduction}'.")
        self.dataset_name, self.output_dir = dataset_name, output_dir
        self.ratio, self.f1_reduction = ratio, f1_reduction
        self.random_baseline_trials, self.seed = random_baseline_trials, seed
        self._records: List[dict] = []

    @classmethod
    def from_config(cls, cfg, dataset_name, output_dir=None):
        meta = MetadataCatalog.get(dataset_name)
        reduction = cfg.TEST.KEYFRAME.F1_REDUCTION or meta.get("f1_reduction", "avg")
        return {"dataset_name": dataset_name, "output_dir": output_dir, "ratio": cfg.TEST.KEYFRAME.SUMMARY_RATIO,
                "f1_reduction": reduction, "random_baseline_trials": cfg.TEST.KEYFRAME.RANDOM_BASELINE_TRIALS,
                "seed": max(cfg.SEED, 0)}

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
        per_video = [evaluate_video(p, g, ratio=self.ratio, f1_reduction=self.f1_reduction)
                     for g, p in zip(gts, preds)]
        results = aggregate_video_metrics(per_video)
        if not any("tau" in v for v in per_video):
            logger.warning("No per-annotator scores for '%s': tau/rho (Otani et al.) are NaN. Provide "
                           "ydata-tvsum50-anno.tsv next to the h5 (see datasets/README_tvsum.md).", self.dataset_name)
        if self.random_baseline_trials > 0:
            results["keyframe_random_baseline"] = _random_baseline(
                gts, ratio=self.ratio, f1_reduction=self.f1_reduction, trials=self.random_baseline_trials,
                seed=self.seed)
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
