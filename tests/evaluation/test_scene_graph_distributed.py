"""Gathering across 2 gloo processes gives exactly the 1-process scene-graph numbers and predictions file."""

import importlib.util
import os
import pickle

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.engine.launch import find_free_port
from sgg.evaluation.scene_graph import SceneGraphEvaluator, load_predictions_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET = "sgg_eval_test_distributed"
NUM_IMAGES = 24
NO_PAIRS = (5, 14)  # images without candidate pairs (they count 0 where they have GT relations), one per process


def _benchmark():
    spec = importlib.util.spec_from_file_location("sgg_bench_eval", os.path.join(ROOT, "tools/benchmarks/eval.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _images():
    """Deterministic SGCls-style images (predictions hold the GT boxes) with tied scores."""
    bench = _benchmark()
    rng = np.random.default_rng(7)
    out = []
    for i in range(NUM_IMAGES):
        g, p = bench.random_image(rng, num_pairs=int(rng.integers(5, 120)), num_predicates=5, max_gt_objects=8,
                                 num_classes=12)
        n = len(g["boxes"])
        keep = (p["rel_pairs"] < n).all(1) & (i not in NO_PAIRS)
        p = dict(p, boxes=p["boxes"][:n], labels=p["labels"][:n], scores=np.round(p["scores"][:n] * 4) / 4 + 0.25,
                 rel_pairs=p["rel_pairs"][keep], rel_scores=np.round(p["rel_scores"][keep] * 10) / 10)
        out.append((g, p))
    return out


def _register():
    images = _images()
    dicts = [dict(g, image_id=1000 + i, file_name=f"{i}.jpg", height=800, width=800, dataset_name=DATASET)
             for i, (g, _) in enumerate(images)]
    if DATASET not in DatasetCatalog:
        DatasetCatalog.register(DATASET, lambda: dicts)
        MetadataCatalog.get(DATASET).set(predicate_classes=[f"p{i}" for i in range(5)],
                                         thing_classes=[f"c{i}" for i in range(150)], evaluator_type="scene_graph")
    return images


def _evaluate(rank, world, output_dir, zeroshot_file):
    images = _register()
    evaluator = SceneGraphEvaluator(dataset_name=DATASET, output_dir=output_dir, mode="sgcls", ks=(1, 5, 20),
                                    zeroshot_file=zeroshot_file, save_predictions=True)
    evaluator.reset()
    # an uneven, interleaved split with batches of 2, like a sampler would give
    mine = [i for i in range(NUM_IMAGES) if i % world == rank] if world > 1 else list(range(NUM_IMAGES))
    for start in range(0, len(mine), 2):
        batch = mine[start:start + 2]
        evaluator.process([{"image_id": 1000 + i} for i in batch],
                          [{k: torch.as_tensor(v) for k, v in images[i][1].items()} for i in batch])
    return evaluator.evaluate()


def _worker(rank, world, port, output_dir, zeroshot_file):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = _evaluate(rank, world, output_dir, zeroshot_file)
        with open(os.path.join(output_dir, f"results_rank{rank}.pkl"), "wb") as f:
            pickle.dump(results, f)
        dist.barrier()  # rank 1 must not destroy the group while rank 0 still evaluates (gloo aborts otherwise)
    finally:
        dist.destroy_process_group()


def _same(a: dict, b: dict) -> bool:
    """Exact equality of nested metric dicts, where NaN equals NaN (pycocotools' empty size ranges)."""
    if set(a) != set(b):
        return False
    return all(_same(a[k], b[k]) if isinstance(a[k], dict) else
               (a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k]))) for k in a)


def test_two_gloo_processes_equal_one_process(tmp_path):
    zeroshot_file = str(tmp_path / "zs.npy")
    np.save(zeroshot_file, np.array([[a, b, p] for a in range(12) for b in range(12) for p in range(5)
                                     if (a + 2 * b + p) % 3 == 0]))
    single_dir, dist_dir = tmp_path / "single", tmp_path / "dist"
    single_dir.mkdir()
    dist_dir.mkdir()
    single = _evaluate(0, 1, str(single_dir), zeroshot_file)
    mp.spawn(_worker, args=(2, find_free_port(), str(dist_dir), zeroshot_file), nprocs=2, join=True)
    with open(dist_dir / "results_rank0.pkl", "rb") as f:
        gathered = pickle.load(f)
    with open(dist_dir / "results_rank1.pkl", "rb") as f:
        assert pickle.load(f) == {}  # only the main process reports
    assert _same(gathered, single)  # exact equality of every float, "sgg" and "bbox"
    assert set(single) == {"sgg", "bbox"} and 0 < single["sgg"]["R@20"] < 1 and "A@20" in single["sgg"]
    assert "zR@20" in single["sgg"]
    # the per-image reference, with the images without pairs counted as 0
    images = _images()
    assert all(len(images[i][0]["relations"]) and not len(images[i][1]["rel_pairs"]) for i in NO_PAIRS)
    ref = _benchmark().reference_evaluate([g for g, _ in images], [p for _, p in images], num_predicates=5,
                                          ks=(1, 5, 20), zeroshot_triplets=np.load(zeroshot_file), mode="sgcls")
    assert dict(single["sgg"]) == ref
    a = load_predictions_file(str(single_dir / "predictions.pth"))["predictions"]
    b = load_predictions_file(str(dist_dir / "predictions.pth"))["predictions"]
    assert [r["image_id"] for r in b] == [1000 + i for i in range(NUM_IMAGES)]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb) and all(np.array_equal(ra[k], rb[k]) for k in ra)
    assert (dist_dir / "per_predicate_recall.csv").read_text() == (single_dir / "per_predicate_recall.csv").read_text()
