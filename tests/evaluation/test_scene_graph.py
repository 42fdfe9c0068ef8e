"""Image SGG metrics: hand-computed cases for every metric, equivalence with a per-image transcription of
Scene-Graph-Benchmark's loops (with ties), the DatasetEvaluator, saved predictions and error messages."""

import importlib.util
import math
import os

import numpy as np
import pytest
import torch

from sgg.config import get_cfg
from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.evaluation import EVALUATOR_REGISTRY, build_evaluator
from sgg.evaluation.scene_graph import (
    SceneGraphEvaluator,
    compute_zeroshot_triplets,
    evaluate_scene_graphs,
    load_predictions_file,
    load_zeroshot_triplets,
    rank_scene_graph_prediction,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("sgg_bench_eval", os.path.join(ROOT, "tools/benchmarks/eval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BOXES = np.array([[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9]], dtype=np.float32)


def gt(relations, boxes=BOXES, labels=(0, 1, 2)):
    return {"boxes": boxes, "labels": np.array(labels), "relations": np.array(relations, dtype=np.int64).reshape(-1, 3)}


def pred(pairs, rel_scores, boxes=BOXES, labels=(0, 1, 2), scores=None):
    n = len(boxes)
    return {"boxes": boxes, "labels": np.array(labels), "scores": np.ones(n, np.float32) if scores is None
            else np.array(scores, np.float32), "rel_pairs": np.array(pairs, dtype=np.int64).reshape(-1, 2),
            "rel_scores": np.array(rel_scores, np.float32).reshape(len(pairs), -1 if len(pairs) else 3)}


def ev(gts, preds, **kw):
    kw.setdefault("num_predicates", 3)
    kw.setdefault("ks", (1, 2))
    return evaluate_scene_graphs(gts, preds, **kw)


# ---------------------------------------------------------------------------- hand-computed cases
def test_perfect_prediction_every_metric():
    g = gt([[0, 1, 0], [1, 2, 1]])
    p = pred([[0, 1], [1, 2]], [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    r = ev([g], [p], zeroshot_triplets=np.array([[1, 2, 1]]), mode="predcls")
    # top-1 triplet is (0,1,pred 0) (0.9 > 0.8): one of two relations; both by K=2
    assert r["R@1"] == 0.5 and r["R@2"] == 1.0
    assert r["ngR@1"] == 0.5 and r["ngR@2"] == 1.0
    # per predicate at K=1: pred 0 -> 1, pred 1 -> 0, pred 2 absent -> 0; mean over all 3 predicates
    assert r["mR@1"] == 1 / 3 and r["mR@2"] == 2 / 3
    assert r["ngmR@1"] == 1 / 3 and r["ngmR@2"] == 2 / 3
    # the zero-shot relation (1, 2, 1) is hit only at K=2
    assert r["zR@1"] == 0.0 and r["zR@2"] == 1.0 and r["ngzR@1"] == 0.0 and r["ngzR@2"] == 1.0
    assert r["A@1"] == 0.5 and r["A@2"] == 1.0
    assert list(r) == ["R@1", "R@2", "ngR@1", "ngR@2", "mR@1", "mR@2", "ngmR@1", "ngmR@2", "zR@1", "zR@2",
                       "ngzR@1", "ngzR@2", "A@1", "A@2"]


def test_shuffled_order_and_object_scores_rank_triplets():
    g = gt([[0, 1, 0], [1, 2, 1]])
    # pair (1,2) comes first and has the higher predicate score, but object scores make (0,1) win:
    # (0,1): 0.6 * 1.0 * 0.9 = 0.54 ; (1,2): 0.9 * 0.9 * 0.5 = 0.405
    p = pred([[1, 2], [0, 1]], [[0.05, 0.9, 0.05], [0.6, 0.2, 0.2]], scores=[1.0, 0.9, 0.5])
    r = ev([g], [p])
    assert r["R@1"] == 0.5
    hit_first = ev([gt([[0, 1, 0]])], [p])
    assert hit_first["R@1"] == 1.0  # (0,1,0) is the top triplet
    assert ev([gt([[1, 2, 1]])], [p])["R@1"] == 0.0 and ev([gt([[1, 2, 1]])], [p])["R@2"] == 1.0
    assert "A@1" not in r and "zR@1" not in r  # no mode, no zero-shot list


def test_iou_threshold_uses_plus_one_convention():
    g = gt([[0, 1, 0]], boxes=BOXES[:2], labels=(0, 1))
    # +1 convention: GT [0,0,9,9] is 10x10 = 100; [0,0,9,4] is 10x5 = 50 inside it -> IoU exactly 0.5 (a hit);
    # in continuous coordinates it would be 36/81 = 0.44 (a miss)
    at = np.array([[0, 0, 9, 4], [20, 0, 29, 9]], np.float32)
    below = np.array([[0, 0, 9, 3.9], [20, 0, 29, 9]], np.float32)  # 10 x 4.9 = 49 -> IoU 0.49
    assert ev([g], [pred([[0, 1]], [[1, 0, 0]], boxes=at, labels=(0, 1))])["R@1"] == 1.0
    assert ev([g], [pred([[0, 1]], [[1, 0, 0]], boxes=below, labels=(0, 1))])["R@1"] == 0.0
    # the threshold is configurable; the object box must pass too
    assert ev([g], [pred([[0, 1]], [[1, 0, 0]], boxes=at, labels=(0, 1))], iou_threshold=0.51)["R@1"] == 0.0


def test_labels_must_match():
    g = gt([[0, 1, 0]])
    assert ev([g], [pred([[0, 1]], [[1, 0, 0]], labels=(0, 2, 2))])["R@2"] == 0.0  # wrong object label
    assert ev([g], [pred([[1, 0]], [[1, 0, 0]])])["R@2"] == 0.0  # subject / object swapped
    assert ev([g], [pred([[0, 1]], [[0, 1, 0]])])["R@2"] == 0.0  # wrong predicate


def test_duplicate_triplets():
    # duplicated GT relations: one prediction hits both copies
    assert ev([gt([[0, 1, 0], [0, 1, 0]])], [pred([[0, 1]], [[1, 0, 0]])])["R@1"] == 1.0
    # duplicated predictions use up K: the two copies of (0,1,0) rank first
    g = gt([[0, 1, 0], [1, 2, 1]])
    p = pred([[0, 1], [0, 1], [1, 2]], [[0.9, 0.1, 0], [0.8, 0.1, 0.1], [0.1, 0.7, 0.2]])
    r = ev([g], [p], ks=(1, 2, 3))
    assert (r["R@1"], r["R@2"], r["R@3"]) == (0.5, 0.5, 1.0)
    # without graph constraint the duplicates' best combos (0.9, 0.8) still come before (1,2,p1) = 0.7
    assert (r["ngR@1"], r["ngR@2"], r["ngR@3"]) == (0.5, 0.5, 1.0)


def test_no_graph_constraint_uses_every_predicate():
    g = gt([[0, 1, 1]])
    p = pred([[0, 1], [1, 2]], [[0.6, 0.4, 0.0], [0.0, 0.0, 0.5]])
    r = ev([g], [p])
    # graph constraint: (0,1) keeps only its argmax (pred 0) -> never hits
    assert r["R@1"] == 0.0 and r["R@2"] == 0.0
    # no constraint: combos 0.6 (0,1,p0), 0.5 (1,2,p2), 0.4 (0,1,p1) -> the hit is third
    assert r["ngR@2"] == 0.0 and ev([g], [p], ks=(3,))["ngR@3"] == 1.0


def test_images_without_relations_are_skipped():
    g = gt([[0, 1, 0], [1, 2, 1]])
    p = pred([[0, 1], [1, 2]], [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    base = ev([g], [p])
    no_rel = gt([])
    with_skipped = ev([no_rel, g, no_rel], [p, p, pred([], [])])
    assert with_skipped == base  # an empty GT does not count, with or without candidate pairs
    everything_skipped = ev([no_rel, no_rel], [p, pred([], [])])
    assert all(math.isnan(v) for v in everything_skipped.values())


def _with_and_without_pairs():
    """Image A (2 GT relations, a good prediction) and image B (3 GT relations, no candidate pair)."""
    g_a = gt([[0, 1, 0], [1, 2, 1]])
    p_a = pred([[0, 1], [1, 2]], [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    g_b = gt([[0, 2, 2], [1, 0, 0], [2, 1, 0]])
    return g_a, p_a, g_b, pred([], [])


def test_image_with_relations_but_no_pairs_counts_as_zero():
    g_a, p_a, g_b, p_b = _with_and_without_pairs()
    zs = np.array([[1, 2, 1], [0, 2, 2]])  # A's (1,2,p1) (hit at K=2) and B's (0,2,p2)
    alone = ev([g_a], [p_a], zeroshot_triplets=zs, mode="sgcls")
    assert (alone["R@1"], alone["R@2"], alone["mR@1"], alone["A@1"]) == (0.5, 1.0, 1 / 3, 0.5)
    r = ev([g_a, g_b], [p_a, p_b], zeroshot_triplets=zs, mode="sgcls")
    # R@K: A recalls 1/2 then 2/2; B recalls 0 of its 3
    assert r["R@1"] == np.mean([0.5, 0.0]) == 0.25 and r["R@2"] == np.mean([1.0, 0.0]) == 0.5
    assert r["ngR@1"] == 0.25 and r["ngR@2"] == 0.5  # combos 0.9 (0,1,p0), 0.8 (1,2,p1): as graph-constrained
    # mR@K per image and predicate: A p0 1, p1 0 (K=1) / 1 (K=2); B p0 0/2, p2 0/1.
    # K=1: p0 mean(1, 0) = 0.5, p1 0, p2 0 ; K=2: p0 0.5, p1 1, p2 0 ; each / 3 predicates
    assert r["mR@1"] == (0.5 + 0.0 + 0.0) / 3 and r["mR@2"] == (0.5 + 1.0 + 0.0) / 3
    assert r["ngmR@1"] == r["mR@1"] and r["ngmR@2"] == r["mR@2"]
    # zR: A's zero-shot relation hit at K=2 only, B's missed
    assert r["zR@1"] == 0.0 and r["zR@2"] == np.mean([1.0, 0.0]) and r["ngzR@2"] == 0.5
    # A@K: total hits / total GT relations; B's 3 relations are misses
    assert r["A@1"] == np.mean([1.0, 0.0]) / np.mean([2.0, 3.0]) == 0.2
    assert r["A@2"] == np.mean([2.0, 0.0]) / np.mean([2.0, 3.0]) == 0.4
    # the order of the images does not matter here, and ranked records give the same numbers
    assert ev([g_b, g_a], [p_b, p_a], zeroshot_triplets=zs, mode="sgcls") == r
    ranked = [rank_scene_graph_prediction(p, num_predicates=3, max_k=2, ng_k=2, mode="sgcls", groundtruth=g)
              for g, p in ((g_a, p_a), (g_b, p_b))]
    assert ranked[1]["num_pairs"] == 0 and len(ranked[1]["rel_pairs"]) == 0
    assert ev([g_a, g_b], ranked, zeroshot_triplets=zs, mode="sgcls") == r
    # the accumulator counts B and its GT relations
    from sgg.evaluation.scene_graph import SceneGraphRecallAccumulator

    acc = SceneGraphRecallAccumulator(num_predicates=3, ks=(1, 2))
    for i, (g, p) in enumerate(((g_a, p_a), (g_b, p_b), (gt([]), p_a))):
        acc.add(g, p, key=i)
    assert acc.num_images() == 3 and acc.num_evaluated_images() == 2
    assert acc.predicate_gt_counts().tolist() == [3, 1, 1]
    assert acc.per_predicate_recall(2).tolist() == [0.5, 1.0, 0.0]


def test_no_pairs_anywhere_gives_zero_not_nan():
    g_a, _, g_b, no_pairs = _with_and_without_pairs()
    zs = np.array([[1, 2, 1]])
    r = ev([g_a, gt([]), g_b], [no_pairs] * 3, zeroshot_triplets=zs, mode="sgcls")
    assert len(r) == 14 and all(v == 0.0 for v in r.values()), r  # R, ngR, mR, ngmR, zR, ngzR, A at K=1, 2
    r = ev([g_b], [no_pairs], mode="predcls")
    assert all(v == 0.0 for v in r.values()), r


def test_mean_recall_averages_per_image_then_over_all_predicates():
    # image 1: pred 0 hit (1/1); image 2: pred 0 missed (0/1), pred 1 hit 1 of 2
    g1 = gt([[0, 1, 0]])
    p1 = pred([[0, 1]], [[1, 0, 0]])
    g2 = gt([[0, 1, 0], [1, 2, 1], [0, 2, 1]])
    p2 = pred([[1, 2], [0, 1]], [[0, 1, 0], [0, 0, 1]])
    r = ev([g1, g2], [p1, p2], ks=(2,))
    # R: mean(1/1, 1/3) ; mR: pred0 mean(1, 0) = 0.5, pred1 mean(1/2) = 0.5, pred2 unseen 0 -> 1/3
    assert r["R@2"] == np.mean([1.0, 1 / 3])
    assert r["mR@2"] == (0.5 + 0.5 + 0.0) / 3
    # an unseen predicate (2) still divides by num_predicates; with 5 predicates the mean shrinks
    p1_5, p2_5 = (dict(p, rel_scores=np.pad(p["rel_scores"], ((0, 0), (0, 2)))) for p in (p1, p2))
    r5 = ev([g1, g2], [p1_5, p2_5], ks=(2,), num_predicates=5)
    assert r5["mR@2"] == 1.0 / 5 and r5["R@2"] == r["R@2"]


def test_zero_shot_recall_counts_only_listed_triplets():
    g_zs = gt([[0, 1, 0], [1, 2, 1]])
    g_plain = gt([[0, 1, 0]])
    p = pred([[0, 1], [1, 2]], [[0.9, 0.1, 0.0], [0.2, 0.1, 0.7]])  # (1,2) predicted with the wrong predicate
    zs = np.array([[1, 2, 1], [5, 5, 5]])
    r = ev([g_zs, g_plain], [p, p], zeroshot_triplets=zs)
    assert r["zR@2"] == 0.0  # only image 1 has a zero-shot relation, and it is missed
    assert r["ngzR@1"] == 0.0 and r["ngzR@2"] == 0.0  # combos: 0.9, 0.7 (wrong), ...
    # combos 0.9 (0,1,p0), 0.7 (1,2,p2), 0.2 (1,2,p0), then a tie at 0.1: the pair ranked first by the graph-
    # constrained score, (0,1), wins it, so the zero-shot (1,2,p1) is 5th
    deep = ev([g_zs], [p], zeroshot_triplets=zs, ks=(4, 5))
    assert deep["ngzR@4"] == 0.0 and deep["ngzR@5"] == 1.0
    none = ev([g_plain], [p], zeroshot_triplets=zs)
    assert math.isnan(none["zR@1"])  # no image has a zero-shot relation: undefined, as in the reference


def test_pair_accuracy_ranks_only_gt_pairs():
    g = gt([[0, 1, 0], [1, 2, 1]])
    # the non-GT pair (2,0) has the best score; A@1 looks at GT pairs only
    p = pred([[2, 0], [1, 2], [0, 1]], [[0.99, 0, 0], [0, 0.9, 0], [0.8, 0, 0]])
    r = ev([g], [p], mode="sgcls")
    assert r["R@1"] == 0.0 and r["R@2"] == 0.5
    assert r["A@1"] == 0.5 and r["A@2"] == 1.0
    g2 = gt([[0, 1, 2]])
    r2 = ev([g, g2], [p, p], mode="sgcls")
    assert r2["A@2"] == (2.0 + 0.0) / (2 + 1)  # total hits over total GT relations, not a mean of ratios


def test_predcls_uses_gt_boxes_and_unit_scores():
    g = gt([[0, 1, 0]])
    shifted = BOXES + np.float32(100)
    p = pred([[1, 2], [0, 1]], [[0.9, 0, 0], [0.8, 0, 0]], boxes=shifted, labels=(2, 2, 2), scores=[0.1, 1, 1])
    assert ev([g], [p], mode="predcls")["R@2"] == 1.0
    assert ev([g], [p], mode="predcls")["R@1"] == 0.0  # object scores are 1, so 0.9 beats 0.8
    assert ev([g], [p])["R@2"] == 0.0  # as SGDet the shifted boxes and wrong labels miss


def test_tensor_inputs_and_half_precision():
    g = gt([[0, 1, 0], [1, 2, 1]])
    p = pred([[0, 1], [1, 2]], [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    tg = {k: torch.as_tensor(v) for k, v in g.items()}
    tp = {k: torch.as_tensor(v) for k, v in p.items()}
    tp["rel_scores"] = tp["rel_scores"].half()
    assert ev([tg], [tp]) == ev([g], [p])


# ---------------------------------------------------------------------------- equivalence with the loop version
def _quantised_images(rng, n, mode):
    """Random images with many score ties (quantised scores), duplicate GT rows, images without GT relations and
    images without candidate pairs."""
    bench = _load_benchmark()
    out = []
    for i in range(n):
        g, p = bench.random_image(rng, num_pairs=int(rng.integers(5, 300)), num_predicates=7, max_gt_objects=8,
                                 num_classes=12)
        p["rel_scores"] = np.round(p["rel_scores"] * 20).astype(np.float32) / 20
        p["scores"] = np.round(p["scores"] * 4).astype(np.float32) / 4 + np.float32(0.25)
        if i % 5 == 0 and len(g["relations"]):
            g["relations"] = np.concatenate([g["relations"], g["relations"][:1]])
        if i % 9 == 4:  # no candidate pair (with or without GT relations): counts 0 when it has GT relations
            p["rel_pairs"], p["rel_scores"] = p["rel_pairs"][:0], p["rel_scores"][:0]
        if mode in ("predcls", "sgcls"):
            n_gt = len(g["boxes"])
            keep = (p["rel_pairs"] < n_gt).all(1)
            p = dict(p, boxes=p["boxes"][:n_gt], labels=p["labels"][:n_gt], scores=p["scores"][:n_gt],
                     rel_pairs=p["rel_pairs"][keep], rel_scores=p["rel_scores"][keep])
            if mode == "predcls":
                p["boxes"], p["labels"] = g["boxes"], g["labels"]
        out.append((g, p))
    return out


@pytest.mark.parametrize("mode", ["sgdet", "sgcls", "predcls"])
def test_matches_reference_loops_bit_exactly(mode):
    rng = np.random.default_rng({"sgdet": 1, "sgcls": 2, "predcls": 3}[mode])
    images = _quantised_images(rng, 60, mode)
    gts, preds = [g for g, _ in images], [p for _, p in images]
    zs = np.array([[a, b, c] for a in range(12) for b in range(12) for c in range(7) if (a * 3 + b + c) % 5 == 0])
    ks = (5, 20, 50)
    ours = evaluate_scene_graphs(gts, preds, num_predicates=7, ks=ks, zeroshot_triplets=zs, mode=mode)
    ref = _load_benchmark().reference_evaluate(gts, preds, num_predicates=7, ks=ks, zeroshot_triplets=zs, mode=mode)
    assert set(ours) == set(ref)
    assert ours == ref  # bit-identical, not approximately equal
    assert 0 < ours["R@50"] < 1 and 0 < ours["mR@50"] < 1  # a non-trivial case


def test_ranked_records_give_the_same_numbers_and_are_short():
    images = _quantised_images(np.random.default_rng(4), 20, "sgcls")
    gts, preds = [g for g, _ in images], [p for _, p in images]
    raw = evaluate_scene_graphs(gts, preds, num_predicates=7, ks=(3, 10), mode="sgcls")
    ranked = [rank_scene_graph_prediction(p, num_predicates=7, max_k=10, ng_k=10, mode="sgcls", groundtruth=g)
              for g, p in images]
    assert all(len(r["rel_pairs"]) <= 10 and len(r["ng_rel_pairs"]) <= 10 for r in ranked)
    assert evaluate_scene_graphs(gts, ranked, num_predicates=7, ks=(3, 10), mode="sgcls") == raw
    with pytest.raises(ValueError, match=r"truncated at 10 triplets .* K=20"):
        evaluate_scene_graphs(gts, ranked, num_predicates=7, ks=(20,), mode="sgcls")


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    g = gt([[0, 1, 0]])
    with pytest.raises(ValueError, match=r"rel_scores.*\(1, 3\).*background column: drop column 0"):
        ev([g], [pred([[0, 1]], [[0.1, 0.9, 0, 0]])])
    p = pred([[0, 1]], [[1, 0, 0]])
    del p["rel_pairs"]
    with pytest.raises(KeyError, match=r"image 0: missing key 'rel_pairs'"):
        ev([g], [p])
    with pytest.raises(ValueError, match=r"'rel_pairs' holds object indices in \[0, 7\] but only 3 exist"):
        ev([g], [pred([[0, 7]], [[1, 0, 0]])])
    with pytest.raises(ValueError, match=r"'relations' holds object indices .* only 3 exist"):
        ev([gt([[0, 5, 0]])], [pred([[0, 1]], [[1, 0, 0]])])
    with pytest.raises(ValueError, match="2 ground truths but 1 predictions"):
        ev([g, g], [pred([[0, 1]], [[1, 0, 0]])])
    with pytest.raises(ValueError, match="'rel_scores' contains NaN or inf"):
        ev([g], [pred([[0, 1]], [[np.nan, 0, 0]])])
    with pytest.raises(ValueError, match="object 'scores' contains NaN or inf"):
        ev([g], [pred([[0, 1]], [[1, 0, 0]], scores=[1, np.inf, 1])])
    with pytest.raises(ValueError, match=r"object 'scores' must be probabilities \(>= 0\); got -0.5"):
        ev([g], [pred([[0, 1]], [[1, 0, 0]], scores=[1, -0.5, 1])])
    with pytest.raises(ValueError, match="predicted 'labels' must be 0-based class indices; got -1"):
        ev([g], [pred([[0, 1]], [[1, 0, 0]], labels=(0, -1, 2))])
    with pytest.raises(ValueError, match="GT 'labels' and relation predicates must be 0-based"):
        ev([gt([[0, 1, -1]])], [pred([[0, 1]], [[1, 0, 0]])])
    with pytest.raises(ValueError, match="in sgcls the prediction must hold the GT boxes"):
        ev([g], [pred([[0, 1]], [[1, 0, 0]], boxes=BOXES[:2], labels=(0, 1))], mode="sgcls")
    with pytest.raises(ValueError, match="Unknown scene-graph mode 'sgdett'"):
        ev([g], [pred([[0, 1]], [[1, 0, 0]])], mode="sgdett")


# ---------------------------------------------------------------------------- zero-shot files
def test_zeroshot_triplets_from_splits_and_files(tmp_path):
    train = [gt([[0, 1, 0], [1, 2, 1]]), gt([[2, 0, 2]])]
    test = [gt([[0, 1, 0], [1, 0, 1]]), gt([[1, 2, 2], [1, 0, 1]])]
    zs = compute_zeroshot_triplets(train, test)
    assert zs.tolist() == [[1, 0, 1], [1, 2, 2]]  # (sub label, obj label, predicate), sorted, unique
    for name, save in (("z.npy", lambda p: np.save(p, zs)), ("z.txt", lambda p: np.savetxt(p, zs, fmt="%d")),
                       ("z.pth", lambda p: torch.save(torch.from_numpy(zs), p))):
        path = str(tmp_path / name)
        save(path)
        assert load_zeroshot_triplets(path).tolist() == zs.tolist()
    with pytest.raises(FileNotFoundError, match="missing.npy' does not exist.*compute_zeroshot_triplets"):
        load_zeroshot_triplets(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "bad.npy", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"bad.npy' must hold a \(T, 3\) array.*got shape \(4, 2\)"):
        load_zeroshot_triplets(str(tmp_path / "bad.npy"))
    (tmp_path / "corrupt.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="Cannot read zero-shot triplet file .*corrupt.npy"):
        load_zeroshot_triplets(str(tmp_path / "corrupt.npy"))


# ---------------------------------------------------------------------------- the DatasetEvaluator
PREDICATES = ["on", "has", "near"]


def register_tiny_dataset(name, images):
    """Register ``images`` [(gt, pred)] as an image-SGG dataset (image ids 100, 101, ...)."""
    dicts = [dict(g, file_name=f"{i}.jpg", image_id=100 + i, height=60, width=60, dataset_name=name)
             for i, (g, _) in enumerate(images)]
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c"], predicate_classes=PREDICATES,
                                  predicate_frequencies=[10, 5, 1], evaluator_type="scene_graph")
    return [{"image_id": 100 + i} for i in range(len(images))]


def tiny_images():
    g = gt([[0, 1, 0], [1, 2, 1]])
    p = pred([[0, 1], [1, 2], [2, 0]], [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], scores=[0.9, 0.8, 0.7])
    g2 = gt([[2, 0, 2]])
    p2 = pred([[2, 0], [0, 1]], [[0.2, 0.1, 0.7], [0.5, 0.4, 0.1]], boxes=BOXES + np.float32(1))
    return [(g, p), (g2, p2), (gt([]), p)]


def test_evaluator_from_config_reports_and_writes_outputs(tmp_path):
    images = tiny_images()
    inputs = register_tiny_dataset("sgg_eval_test_tiny", images)
    cfg = get_cfg()
    cfg.TEST.RELATION.MODE = "sgdet"
    cfg.TEST.RELATION.RECALL_KS = (1, 2)
    cfg.TEST.SAVE_PREDICTIONS = True
    evaluator = build_evaluator(cfg, "sgg_eval_test_tiny", str(tmp_path))
    assert isinstance(evaluator._evaluators[0], EVALUATOR_REGISTRY.get("scene_graph"))
    evaluator.reset()
    # outputs as tensors, in a batch of 2 then 1
    outputs = [{k: torch.as_tensor(v) for k, v in p.items()} for _, p in images]
    evaluator.process(inputs[:2], outputs[:2])
    evaluator.process(inputs[2:], outputs[2:])
    results = evaluator.evaluate()
    expected = evaluate_scene_graphs([g for g, _ in images], [p for _, p in images], num_predicates=3, ks=(1, 2))
    assert dict(results["sgg"]) == dict(expected)
    assert results["sgg"]["R@2"] == np.mean([1.0, 1.0]) and results["sgg"]["R@1"] == np.mean([0.5, 1.0])
    assert set(results["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    for name in ("per_predicate_recall.csv", "per_predicate_recall.png", "predictions.pth"):
        assert (tmp_path / name).stat().st_size > 0
    csv_text = (tmp_path / "per_predicate_recall.csv").read_text().splitlines()
    assert csv_text[0].startswith("predicate,gt_count,train_count,R@1,R@2")
    assert csv_text[1].startswith("on,1,10,1.0,1.0")
    saved = load_predictions_file(str(tmp_path / "predictions.pth"))
    assert [r["image_id"] for r in saved["predictions"]] == [100, 101, 102]
    assert saved["mode"] == "sgdet" and saved["dataset"] == "sgg_eval_test_tiny"


def test_evaluator_errors_name_the_problem(tmp_path):
    images = tiny_images()
    register_tiny_dataset("sgg_eval_test_err", images)
    evaluator = SceneGraphEvaluator(dataset_name="sgg_eval_test_err", output_dir=None, mode="sgdet", ks=(1,))
    with pytest.raises(KeyError, match="image_id 999 is not in dataset 'sgg_eval_test_err'"):
        evaluator.process([{"image_id": 999}], [images[0][1]])
    with pytest.raises(KeyError, match="needs 'image_id' in every input"):
        evaluator.process([{"file_name": "x.jpg"}], [images[0][1]])
    with pytest.raises(ValueError, match="image_id 100: 'rel_scores' must have shape"):
        evaluator.process([{"image_id": 100}], [dict(images[0][1], rel_scores=np.zeros((3, 4), np.float32))])
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        SceneGraphEvaluator(dataset_name="sgg_eval_test_err", mode="sgdet", zeroshot_file=str(tmp_path / "nope.npy"))


def test_matching_in_small_batches_and_re_added_keys_give_the_same_numbers():
    from sgg.evaluation.scene_graph import SceneGraphRecallAccumulator

    images = _quantised_images(np.random.default_rng(5), 30, "sgdet")
    whole = evaluate_scene_graphs([g for g, _ in images], [p for _, p in images], num_predicates=7, ks=(5, 20))
    acc = SceneGraphRecallAccumulator(num_predicates=7, ks=(5, 20))
    acc._BATCH = 4  # force many batches
    for i, (g, p) in enumerate(images):
        acc.add(g, p, key=i)
    for i in (3, 17):  # re-adding a key replaces its record (here with a worse prediction, then the original)
        acc.add(images[i][0], dict(images[i][1], rel_scores=images[i][1]["rel_scores"][:, ::-1].copy()), key=i)
        acc.add(*images[i], key=i)
    assert acc.summarize() == whole
    assert acc.num_evaluated_images() == sum(len(g["relations"]) > 0 for g, _ in images)


# ---------------------------------------------------------------------------- chunked processing
def _acc(**kw):
    from sgg.evaluation.scene_graph import SceneGraphRecallAccumulator

    return SceneGraphRecallAccumulator(num_predicates=7, ks=(5, 20), **kw)


def test_chunk_limits_copied_or_referenced_scores_and_dtypes_give_the_reference_numbers():
    images = _quantised_images(np.random.default_rng(6), 40, "sgdet")
    for i, (_, p) in enumerate(images):  # float64 images between float32 ones: separate chunks, native products
        if i % 7 == 3:
            p["rel_scores"], p["scores"] = p["rel_scores"].astype(np.float64), p["scores"].astype(np.float64)
    gts, preds = [g for g, _ in images], [p for _, p in images]
    ref = _load_benchmark().reference_evaluate(gts, preds, num_predicates=7, ks=(5, 20))
    for chunk, copy in ((1 << 21, 1 << 16), (600, 300), (50, 0), (7, 1 << 16)):
        acc = _acc()
        acc._CHUNK_SCORES, acc._COPY_SCORES = chunk, copy  # many chunks; scores copied, referenced or mixed
        for i, (g, p) in enumerate(images):
            acc.add(g, p, key=i)
        assert acc.summarize() == ref, (chunk, copy)


def test_queued_inputs_are_copies():
    images = _quantised_images(np.random.default_rng(7), 10, "sgdet")
    expected = evaluate_scene_graphs([g for g, _ in images], [p for _, p in images], num_predicates=7, ks=(5, 20))
    acc = _acc()
    for i, (g, p) in enumerate(images):
        g, p = {k: v.copy() for k, v in g.items()}, {k: v.copy() for k, v in p.items()}
        acc.add(g, p, key=i)
        for d in (g, p):  # the caller reuses its buffers before the chunk is processed
            for v in d.values():
                v[...] = 0
    assert acc.summarize() == expected


def test_value_errors_of_a_queued_image_name_it():
    g = gt([[0, 1, 0]])
    p = pred([[0, 1]], [[1, 0, 0]])
    bad = pred([[0, 1]], [[np.nan, 0, 0]])
    with pytest.raises(ValueError, match=r"^image 3: 'rel_scores' contains NaN or inf"):
        ev([g] * 6, [p, p, p, bad, p, bad])
    with pytest.raises(ValueError, match=r"^image 2: 'rel_pairs' holds object indices in \[0, 5\]"):
        ev([g] * 4, [p, p, pred([[0, 5]], [[1, 0, 0]]), bad])
    with pytest.raises(ValueError, match=r"^image 1: 'relations' holds object indices"):
        ev([g, gt([[0, 4, 0]]), g], [p, p, bad])
    with pytest.raises(ValueError, match=r"^image 4: object 'scores' must be probabilities"):
        ev([g] * 5, [p] * 4 + [pred([[0, 1]], [[1, 0, 0]], scores=[1, -1, 1])])


def test_kept_ranked_records_equal_rank_scene_graph_prediction():
    images = _quantised_images(np.random.default_rng(8), 25, "sgcls")
    acc = _acc(mode="sgcls", gc_length=0, ng_length=30, keep_ranked=True)
    acc._CHUNK_SCORES, acc._COPY_SCORES = 400, 200
    for i, (g, p) in enumerate(images):
        acc.add(g, p, key=i)
    for i, (g, p) in enumerate(images):
        one = rank_scene_graph_prediction(p, num_predicates=7, max_k=0, ng_k=30, mode="sgcls", groundtruth=g)
        kept = acc.ranked_records[i]
        assert set(one) == set(kept)
        for k in one:
            assert np.array_equal(one[k], kept[k]) and np.asarray(one[k]).dtype == np.asarray(kept[k]).dtype, k
        assert len(one["rel_pairs"]) == len(p["rel_pairs"])  # gc_length 0: every pair
