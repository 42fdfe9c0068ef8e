"""easg_graph: EASG's graph-level recall against hand-computed graphs (every score below is a binary fraction, so the
sums are exact and the ties real)."""

import uuid

import numpy as np
import pytest

from sgg.data.datasets.easg import register_easg_split
from sgg.evaluation.easg_graph import EASGGraphEvaluator, candidate_triplets, evaluate_easg_graphs, graph_recall
from tests.data.easg_layout import write_easg


def _recall(mode, gt, pred, ks):  # ks must hold 50: max(ks) sizes the per-object lists, as upstream's list_k
    return evaluate_easg_graphs([gt], [pred], mode=mode, ks=ks)


def test_edgecls_top1_with_constraint_topk_without():
    gt = {"verb": 0, "object_labels": [1, 2], "triplets": [[0, 1, 0], [0, 2, 1], [0, 2, 2]]}
    pred = {"relation_scores": np.array([[0.875, 0.125, 0.375, 0.0], [0.25, 0.75, 0.5, 0.125]])}
    r = _recall("edgecls", gt, pred, (1, 2, 3, 50))
    # with: (0,1,0) .875, (0,2,1) .75 -> 2 of 3 GT; no: + (0,2,2) .5 third
    assert r["with/R@1"] == pytest.approx(100 / 3) and r["with/R@2"] == r["with/R@50"] == pytest.approx(200 / 3)
    assert r["no/R@2"] == pytest.approx(200 / 3) and r["no/R@3"] == pytest.approx(100.0)
    ranked, scores = candidate_triplets("edgecls", "no", 0, [1, 2], None, None, pred["relation_scores"])
    assert len(ranked) == 8 and list(scores) == sorted(scores, reverse=True)  # ceil(50 / 2) >= 4 relations each


def test_ties_keep_the_generation_order():
    gt = {"verb": 0, "object_labels": [0], "triplets": [[0, 0, 1]]}
    pred = {"relation_scores": np.array([[0.5, 0.5, 0.125]])}
    r = _recall("edgecls", gt, pred, (1, 2, 50))
    assert r["with/R@1"] == r["with/R@2"] == 0.0  # top-1 of a tie = the lower relation index
    assert r["no/R@1"] == 0.0 and r["no/R@2"] == 100.0


def test_sgcls_sums_object_and_relation_scores():
    gt = {"verb": 2, "object_labels": [0, 3], "triplets": [[2, 0, 0], [2, 3, 2]]}
    pred = {"object_scores": np.array([[0.75, 0.125, 0.125, 0.0], [0.0, 0.125, 0.25, 0.625]]),
            "relation_scores": np.array([[0.5, 0.25, 0.25], [0.125, 0.25, 0.5]]),
            "verb_scores": np.array([1.0, 0.0, 0.0])}  # ignored in sgcls: the GT verb is given
    ranked, scores = candidate_triplets("sgcls", "with", 2, [0, 3], pred["verb_scores"], pred["object_scores"],
                                        pred["relation_scores"])
    # with: all ceil(50 / 2) = 25 (>= 4) classes x top-1 relation per object
    assert ranked[:2].tolist() == [[2, 0, 0], [2, 3, 2]] and scores[:2].tolist() == [1.25, 1.125]
    assert len(ranked) == 8
    r = _recall("sgcls", gt, pred, (1, 2, 50))
    assert r["with/R@1"] == 50.0 and r["with/R@2"] == 100.0
    # a class, not a box, is matched: object 1 predicted as object 0's class with its relation still hits (2, 0, 0)
    wrong = {"object_scores": np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]),
             "relation_scores": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])}
    r = _recall("sgcls", gt, wrong, (1, 2, 50))
    assert r["with/R@1"] == 0.0 and r["with/R@2"] == 50.0  # (2, 1, 1) first, then (2, 0, 0) from object 1


def test_easgcls_top5_verbs_and_summed_scores():
    gt = {"verb": 2, "object_labels": [1], "triplets": [[2, 1, 0]]}
    pred = {"verb_scores": np.array([0.0625, 0.5, 0.25, 0.0625, 0.0625, 0.0625]),
            "object_scores": np.array([[0.25, 0.5, 0.25]]), "relation_scores": np.array([[0.5, 0.25]])}
    ranked, scores = candidate_triplets("easgcls", "with", 0, [1], pred["verb_scores"], pred["object_scores"],
                                        pred["relation_scores"])
    # 5 verbs x ceil(50 / 5) = 10 (>= 3) classes x 1 relation; 1.5 first, then three ties at 1.25 in generation order
    assert len(ranked) == 15 and {int(v) for v in ranked[:, 0]} == {0, 1, 2, 3, 4}  # verb 5 loses the tie
    assert ranked[:4].tolist() == [[1, 1, 0], [1, 0, 0], [1, 2, 0], [2, 1, 0]] and scores[0] == 1.5
    r = _recall("easgcls", gt, pred, (3, 4, 50))  # K = max(ks) = 50 sizes the candidate lists
    assert r["with/R@3"] == 0.0 and r["with/R@4"] == 100.0
    # no constraint: ceil(50 / 25) = 2 classes (1, then 0 before the tied 2) x 5 (both) relations
    ranked, _ = candidate_triplets("easgcls", "no", 0, [1], pred["verb_scores"], pred["object_scores"],
                                   pred["relation_scores"])
    assert len(ranked) == 20 and ranked[:4].tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0], [2, 1, 0]]


def test_graph_recall_counts_distinct_gt_once():
    assert graph_recall([[0, 1, 2], [0, 1, 2]], [[0, 1, 2]], (1,)) == {1: 1.0}
    with pytest.raises(ValueError, match="without GT triplets"):
        graph_recall(np.zeros((0, 3)), [[0, 1, 2]], (1,))


def test_evaluator_on_multi_annotator_graphs(tmp_path):
    root = write_easg(tmp_path / "easg", frames=False)
    name = f"easg_eval_test_{uuid.uuid4().hex[:8]}"
    register_easg_split(name, "train", lambda: root)
    from sgg.data.catalog import DatasetCatalog

    graphs = DatasetCatalog.get(name)
    ev = EASGGraphEvaluator(dataset_name=name, mode="edgecls", extra_modes=("easgcls",), ks=(10, 20, 50))
    ev.reset()
    for g in graphs:  # a perfect model: probability 1 for every GT relation / class / verb
        n = len(g["objects"])
        rel = np.zeros((n, 4))
        obj = np.zeros((n, 5))
        for j, o in enumerate(g["objects"]):
            rel[j, o["relations"]] = 1.0
            obj[j, o["category_id"]] = 1.0
        verb = np.eye(3)[g["verb"]]
        ev.process([{"graph_id": g["graph_id"]}], [{"relation_scores": rel, "object_scores": obj,
                                                     "verb_scores": verb}])
    m = ev.evaluate()["easg"]
    # clipA_000020's TABLE has two relations (two rows): with constraint only one counts -> 2/3 for that graph; the
    # two-annotator graph clipA_000060 (3 GT triplets from both annotators) and the two verb graphs of clipC: 1
    assert m["with/R@20"] == pytest.approx(100 * (2 / 3 + 3) / 4) and m["no/R@20"] == 100.0
    assert m["score"] == pytest.approx((m["with/R@20"] + m["no/R@20"]) / 2)
    assert m["easgcls/with/R@10"] == m["with/R@10"]  # a perfect verb / object keeps the same ranking
    with pytest.raises(KeyError, match="not in dataset"):
        ev.process([{"graph_id": "nope"}], [{"relation_scores": rel}])
        ev.evaluate()
