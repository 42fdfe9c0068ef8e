"""EASG's graph-level recall (Rodin et al., CVPR 2024; fpv-iplab/EASG run_easg.py / train_with_EASG.py), registered
as ``easg_graph``.

A graph's ground truth is the set of distinct triplets ``(verb, object class, relation)`` (objects are classes, not
boxes: no IoU). A model gives per graph ``verb_scores (V,)``, ``object_scores (N, C)`` and ``relation_scores (N, R)``
(probabilities; N = the graph's GT objects in the dataset dict's order). Candidate triplets per mode, with
``K = max(ks)`` (50), ``n`` = number of objects, top-k = the k best classes of that row:

* **edgecls** (GT verb and object classes): per object, *with constraint* its top-1 relation, *no constraint* its top
  ``ceil(K / n)`` relations; score = the relation probability.
* **sgcls** (GT verb): per object, *with* top ``ceil(K / n)`` object classes x top-1 relation, *no* top
  ``ceil(K / (5 n))`` classes x top-5 relations; score = object + relation probability.
* **easgcls**: top-5 verbs x per object *with* top ``ceil(K / (5 n))`` classes x top-1 relation, *no* top
  ``ceil(K / (25 n))`` classes x top-5 relations; score = verb + object + relation probability (a **sum**).

Candidates are ranked by score (ties: the order above — verb rank, object, class rank, relation rank — kept by a
stable sort; upstream's ``torch.argsort`` leaves the order of exact ties unspecified), R@k of a graph = the share of
its GT triplets found among the first k candidates (a predicted class may match any GT object of that class), and
R@k = the mean over graphs x 100. Keys (task ``easg``): ``with/R@k``, ``no/R@k`` for ``TEST.RELATION.MODE``,
``{mode}/with/R@k`` ... for every mode in ``TEST.EASG.MODES``, and ``score`` = (with/R@20 + no/R@20) / 2, the metric
STTran-EASG's plateau scheduler follows.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from sgg.config import configurable
from sgg.data.catalog import DatasetCatalog
from sgg.utils import comm

from .build import EVALUATOR_REGISTRY
from .evaluator import DatasetEvaluator

__all__ = ["EASG_MODES", "EASGGraphEvaluator", "candidate_triplets", "graph_recall", "evaluate_easg_graphs"]

logger = logging.getLogger(__name__)

EASG_MODES = ("edgecls", "sgcls", "easgcls")
TOP_VERBS, TOP_REL_WITH, TOP_REL_NO = 5, 1, 5  # upstream's num_top_verb, num_top_rel_with, num_top_rel_no


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries, best first; equal scores keep index order (stable)."""
    return np.argsort(-scores, kind="stable")[:max(int(k), 0)]


def candidate_triplets(mode: str, constraint: str, verb: int, object_labels: Sequence[int],
                       verb_scores: Optional[np.ndarray], object_scores: Optional[np.ndarray],
                       relation_scores: np.ndarray, max_k: int = 50) -> Tuple[np.ndarray, np.ndarray]:
    """Ranked candidates of one graph: ``(triplets (M, 3) [verb, class, relation], scores (M,))``, best first.

    ``mode`` one of :data:`EASG_MODES`, ``constraint`` "with" / "no"; ``verb`` / ``object_labels`` the GT (used by
    edgecls / sgcls); scores are probabilities ``(V,)``, ``(N, C)``, ``(N, R)``.
    """
    if mode not in EASG_MODES:
        raise ValueError(f"EASG mode must be one of {EASG_MODES}, got {mode!r}.")
    if constraint not in ("with", "no"):
        raise ValueError(f"constraint must be 'with' or 'no', got {constraint!r}.")
    rel = np.asarray(relation_scores, dtype=np.float64)
    n = len(rel)
    if n == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0)
    top_rel = TOP_REL_WITH if constraint == "with" else TOP_REL_NO
    triplets: List[Tuple[int, int, int]] = []
    scores: List[float] = []
    if mode == "edgecls":
        k_rel = TOP_REL_WITH if constraint == "with" else math.ceil(max_k / n)
        for j in range(n):
            for r in _top(rel[j], k_rel):
                triplets.append((int(verb), int(object_labels[j]), int(r)))
                scores.append(rel[j, r])
    else:
        obj = np.asarray(object_scores, dtype=np.float64)
        if obj.shape[0] != n:
            raise ValueError(f"object_scores has {obj.shape[0]} rows, relation_scores {n}; give one row per object.")
        if mode == "sgcls":
            verbs = [(int(verb), 0.0)]
            k_obj = math.ceil(max_k / (top_rel * n))
        else:
            vs = np.asarray(verb_scores, dtype=np.float64).reshape(-1)
            verbs = [(int(v), float(vs[v])) for v in _top(vs, TOP_VERBS)]
            k_obj = math.ceil(max_k / (TOP_VERBS * top_rel * n))
        for v, v_score in verbs:
            for j in range(n):
                rels = _top(rel[j], top_rel)
                for c in _top(obj[j], k_obj):
                    for r in rels:
                        triplets.append((v, int(c), int(r)))
                        scores.append(v_score + obj[j, c] + rel[j, r])
    t = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    return t[order], s[order]


def graph_recall(gt_triplets: np.ndarray, ranked: np.ndarray, ks: Sequence[int]) -> Dict[int, float]:
    """``{k: share of the distinct GT triplets (G, 3) that occur among the first k ranked candidates (M, 3)}``."""
    gt = np.unique(np.asarray(gt_triplets, dtype=np.int64).reshape(-1, 3), axis=0)
    if not len(gt):
        raise ValueError("A graph without GT triplets cannot be evaluated (every EASG object has a relation).")
    ranked = np.asarray(ranked, dtype=np.int64).reshape(-1, 3)
    match = (gt[:, None, :] == ranked[None, :, :]).all(-1)  # (G, M)
    first = np.where(match.any(1), match.argmax(1), np.iinfo(np.int64).max)
    return {int(k): float((first < k).sum()) / len(gt) for k in ks}


def evaluate_easg_graphs(groundtruths: Sequence[Mapping], predictions: Sequence[Mapping], *, mode: str,
                         ks: Sequence[int] = (10, 20, 50)) -> Dict[str, float]:
    """``{"with/R@k", "no/R@k"}`` (percent) over paired graphs.

    ``groundtruths[i]``: ``{"verb": int, "object_labels" (N,) or "objects": [{"category_id"}], "triplets" (G, 3)}``;
    ``predictions[i]``: ``{"verb_scores" (V,), "object_scores" (N, C), "relation_scores" (N, R)}``.
    """
    if len(groundtruths) != len(predictions):
        raise ValueError(f"{len(groundtruths)} ground-truth graphs but {len(predictions)} predictions.")
    ks = tuple(int(k) for k in ks)
    sums = {c: {k: 0.0 for k in ks} for c in ("with", "no")}
    for gt, pred in zip(groundtruths, predictions):
        labels = gt.get("object_labels")
        if labels is None:
            labels = [o["category_id"] for o in gt["objects"]]
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        rel = _numpy(pred["relation_scores"])
        if len(rel) != len(labels):
            raise ValueError(f"Graph '{gt.get('graph_id', '?')}': {len(rel)} rows of relation_scores for "
                             f"{len(labels)} objects; predict one row per GT object, in the dataset's order.")
        for c in ("with", "no"):
            ranked, _ = candidate_triplets(mode, c, int(gt["verb"]), labels, _numpy(pred.get("verb_scores")),
                                           _numpy(pred.get("object_scores")), rel, max(ks))
            for k, v in graph_recall(gt["triplets"], ranked, ks).items():
                sums[c][k] += v
    n = max(len(groundtruths), 1)
    return OrderedDict((f"{c}/R@{k}", 100.0 * sums[c][k] / n) for c in ("with", "no") for k in ks)


def _numpy(x) -> Optional[np.ndarray]:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


class EASGGraphEvaluator(DatasetEvaluator):
    """EASG graph-level recall (see the module docstring). ``process`` stores each graph's scores by ``graph_id``;
    ``evaluate`` pairs them with the dataset's graphs and returns ``{"easg": {...}}``."""

    @configurable
    def __init__(self, *, dataset_name: str, output_dir: Optional[str] = None, mode: str = "edgecls",
                 extra_modes: Sequence[str] = (), ks: Sequence[int] = (10, 20, 50), distributed: bool = True):
        for m in (mode, *extra_modes):
            if m not in EASG_MODES:
                raise ValueError(f"easg_graph evaluates TEST.RELATION.MODE / TEST.EASG.MODES in {EASG_MODES}, got "
                                 f"{m!r}.")
        if not ks or min(ks) <= 0:
            raise ValueError(f"TEST.EASG.KS must be positive, got {tuple(ks)}.")
        self.dataset_name, self.output_dir, self.mode = dataset_name, output_dir, mode
        self.extra_modes = tuple(m for m in extra_modes)
        self.ks = tuple(int(k) for k in ks)
        self.distributed = distributed
        self._predictions: Dict[str, dict] = {}

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> dict:
        """``TEST.RELATION.MODE``, ``TEST.EASG.MODES`` and ``TEST.EASG.KS``."""
        DatasetCatalog.check_configured(cfg, [dataset_name])
        return {"dataset_name": dataset_name, "output_dir": output_dir, "mode": cfg.TEST.RELATION.MODE,
                "extra_modes": tuple(cfg.TEST.EASG.MODES), "ks": tuple(cfg.TEST.EASG.KS)}

    def reset(self) -> None:
        """Forget all processed predictions."""
        self._predictions = {}

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Store ``{verb_scores, object_scores, relation_scores}`` of every graph (CPU numpy)."""
        for inp, out in zip(inputs, outputs):
            if not isinstance(out, Mapping) or "relation_scores" not in out:
                raise KeyError(f"Model output for EASG graph '{inp.get('graph_id')}' must be a dict with "
                               "'relation_scores' (N, R) (+ 'object_scores' (N, C), 'verb_scores' (V,)).")
            self._predictions[inp["graph_id"]] = {k: _numpy(out.get(k)) for k in
                                                  ("verb_scores", "object_scores", "relation_scores")}

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """``{"easg": {"with/R@10": ..., "no/R@50": ..., "score": ...}}`` on the main process, ``{}`` elsewhere."""
        predictions = self._predictions
        if self.distributed and comm.get_world_size() > 1:
            parts = comm.gather(predictions, dst=0)
            if not comm.is_main_process():
                return {}
            predictions = {k: v for part in parts for k, v in part.items()}
        if not predictions:
            logger.warning("EASGGraphEvaluator received no predictions.")
            return {}
        graphs = {g["graph_id"]: g for g in DatasetCatalog.get(self.dataset_name)}
        unknown = sorted(set(predictions) - set(graphs))
        if unknown:
            raise KeyError(f"Predicted graph(s) {unknown[:3]} are not in dataset '{self.dataset_name}'.")
        if len(predictions) < len(graphs):
            logger.warning("%d of %d graphs of '%s' have no prediction; evaluating the %d that do.",
                           len(graphs) - len(predictions), len(graphs), self.dataset_name, len(predictions))
        ids = [g for g in graphs if g in predictions]
        gts, preds = [graphs[g] for g in ids], [predictions[g] for g in ids]
        metrics: Dict[str, float] = OrderedDict(evaluate_easg_graphs(gts, preds, mode=self.mode, ks=self.ks))
        if 20 in self.ks:
            metrics["score"] = (metrics["with/R@20"] + metrics["no/R@20"]) / 2
        for m in self.extra_modes:
            for k, v in evaluate_easg_graphs(gts, preds, mode=m, ks=self.ks).items():
                metrics[f"{m}/{k}"] = v
        logger.info("EASG graph recall (%s) on %s: %d graphs, %d GT triplets.", self.mode, self.dataset_name,
                    len(ids), sum(len(g["triplets"]) for g in gts))
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "easg_results.json"), "w") as f:
                json.dump({"dataset": self.dataset_name, "mode": self.mode, "num_graphs": len(ids),
                           "metrics": metrics}, f, indent=1)
        return {"easg": metrics}


EVALUATOR_REGISTRY.register("easg_graph")(EASGGraphEvaluator)
