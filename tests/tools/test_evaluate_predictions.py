"""tools/evaluate_predictions.py and tools/compute_zeroshot_triplets.py on a tiny registered dataset."""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.evaluation.scene_graph import SceneGraphEvaluator, evaluate_scene_graphs
from tests.seeit_models import shared_datasets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(relpath, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _load("tools/benchmarks/eval.py", "sgg_bench_eval_tools")
TOOL = _load("tools/evaluate_predictions.py", "sgg_tool_evaluate_predictions")
ZS_TOOL = _load("tools/compute_zeroshot_triplets.py", "sgg_tool_compute_zeroshot")


def _register(name, images, first_id=0):
    dicts = [dict(g, image_id=first_id + i, file_name=f"{i}.jpg", height=800, width=800, dataset_name=name)
             for i, (g, _) in enumerate(images)]
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(predicate_classes=[f"p{i}" for i in range(6)], evaluator_type="scene_graph")
    return dicts


def _images(seed, n=12):
    rng = np.random.default_rng(seed)
    return [BENCH.random_image(rng, num_pairs=int(rng.integers(20, 400)), num_predicates=6,
                                 max_gt_objects=8, num_classes=12)
            for _ in range(n)]


@pytest.fixture
def saved(tmp_path):
    """A dataset, its raw predictions and the predictions.pth the evaluator wrote (TOPK 30)."""
    images = _images(0)
    _register("sgg_reeval_tiny", images)
    evaluator = SceneGraphEvaluator(dataset_name="sgg_reeval_tiny", output_dir=str(tmp_path), mode="sgdet",
                                    ks=(20,), topk=30, save_predictions=True)
    evaluator.process([{"image_id": i} for i in range(len(images))], [p for _, p in images])
    first = evaluator.evaluate()
    return images, tmp_path / "predictions.pth", first


def test_reevaluation_matches_direct_evaluation_with_other_options(saved, tmp_path, capsys):
    images, path, first = saved
    zs_file = tmp_path / "zs.txt"
    np.savetxt(zs_file, np.array([[a, b, p] for a in range(12) for b in range(12) for p in range(6)
                                  if (a + b + p) % 4 == 0]), fmt="%d")
    out_dir = tmp_path / "reeval"
    assert TOOL.main(["--predictions", str(path), "--ks", "5", "10", "30", "--iou-threshold", "0.6",
                      "--zeroshot-file", str(zs_file), "--output-dir", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "copypaste: Task: sgg" in printed and "copypaste: R@5,R@10,R@30,ngR@5" in printed
    results = json.loads((out_dir / "results.json").read_text())
    direct = evaluate_scene_graphs([g for g, _ in images], [p for _, p in images], num_predicates=6,
                                   ks=(5, 10, 30), iou_threshold=0.6, zeroshot_triplets=np.loadtxt(zs_file))
    assert results["sgg"] == {k: (v if np.isfinite(v) else None) for k, v in direct.items()}
    assert 0 < results["sgg"]["R@30"] < 1
    assert set(results["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert (out_dir / "per_predicate_recall.png").stat().st_size > 0
    # the defaults reproduce the first evaluation (R@20 at IoU 0.5), written to <predictions dir>/reeval
    assert TOOL.main(["--predictions", str(path)]) == 0
    again = json.loads((tmp_path / "reeval" / "results.json").read_text())
    assert again["sgg"]["R@20"] == first["sgg"]["R@20"] and again["sgg"]["mR@20"] == first["sgg"]["mR@20"]


def test_raw_prediction_files_are_accepted(tmp_path, capsys):
    images = _images(1, n=5)
    _register("sgg_reeval_raw", images, first_id=50)
    raw = [dict({k: torch.as_tensor(v) for k, v in p.items()}, image_id=50 + i) for i, (_, p) in enumerate(images)]
    torch.save(raw, tmp_path / "raw.pth")
    assert TOOL.main(["--predictions", str(tmp_path / "raw.pth"), "--dataset", "sgg_reeval_raw", "--mode", "sgdet",
                      "--no-box-ap", "--ks", "10", "--output-dir", str(tmp_path / "o")]) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    direct = evaluate_scene_graphs([g for g, _ in images], [p for _, p in images], num_predicates=6, ks=(10,))
    assert results == {"sgg": {k: (v if np.isfinite(v) else None) for k, v in direct.items()}}


def test_errors_are_reported_with_the_reason(saved, tmp_path, capsys):
    _, path, _ = saved
    assert TOOL.main(["--predictions", str(tmp_path / "missing.pth")]) == 2
    assert "missing.pth' does not exist" in capsys.readouterr().err
    assert TOOL.main(["--predictions", str(path), "--ks", "50"]) == 2
    assert "truncated at 30 triplets" in capsys.readouterr().err
    assert TOOL.main(["--predictions", str(path), "--mode", "predcls"]) == 2
    assert "saved in sgdet mode; it cannot be evaluated as predcls" in capsys.readouterr().err
    (tmp_path / "corrupt.pth").write_bytes(b"garbage")
    assert TOOL.main(["--predictions", str(tmp_path / "corrupt.pth")]) == 2
    assert "Cannot read predictions file" in capsys.readouterr().err
    torch.save([{"boxes": torch.zeros(1, 4)}], tmp_path / "raw_no_id.pth")
    assert TOOL.main(["--predictions", str(tmp_path / "raw_no_id.pth"), "--dataset", "x", "--mode", "sgdet"]) == 2
    assert "entry 0 is not a dict with 'image_id'" in capsys.readouterr().err


def test_compute_zeroshot_triplets_tool(tmp_path, capsys):
    def g(labels, rels):
        return {"boxes": np.zeros((len(labels), 4), np.float32), "labels": np.array(labels),
                "relations": np.array(rels).reshape(-1, 3)}

    _register("sgg_zs_train", [(g([0, 1, 2], [[0, 1, 0], [1, 2, 1]]), None)])
    _register("sgg_zs_test", [(g([0, 1, 2], [[0, 1, 0], [2, 1, 1]]), None), (g([3, 0], [[0, 1, 2]]), None)])
    out = tmp_path / "zs.npy"
    assert ZS_TOOL.main(["--train", "sgg_zs_train", "--test", "sgg_zs_test", "--output", str(out)]) == 0
    assert np.load(out).tolist() == [[2, 1, 1], [3, 0, 2]]
    assert "2 zero-shot triplet types out of 3 test relations" in capsys.readouterr().out
    # Scene-Graph-Benchmark's 1-based file converts to 0-based
    torch.save(torch.tensor([[3, 2, 2], [4, 1, 3]]), tmp_path / "sgb.pytorch")
    assert ZS_TOOL.main(["--from-sgb", str(tmp_path / "sgb.pytorch"), "--output", str(tmp_path / "c.txt")]) == 0
    assert np.loadtxt(tmp_path / "c.txt", dtype=np.int64).tolist() == [[2, 1, 1], [3, 0, 2]]
    assert ZS_TOOL.main(["--train", "sgg_zs_train", "--output", str(out)]) == 2
    assert "Pass --train NAME [NAME ...] and --test NAME" in capsys.readouterr().err
    assert ZS_TOOL.main(["--train", "sgg_zs_nope", "--test", "sgg_zs_test", "--output", str(out)]) == 2
    assert "Dataset 'sgg_zs_nope' is not registered" in capsys.readouterr().err


def test_gt_is_read_with_the_dataset_options_of_the_run(tmp_path, capsys):
    """A predictions file records the dataset options in effect; re-evaluation restores them (or --config-file's)."""
    images = _images(3, n=6)
    group = "sgg_test_reeval_options"
    # The option caps the GT relations per image, so it changes the recall of the same predictions.
    DatasetCatalog.register_options(group, defaults={"max_rels": 1000},
                                    from_config=lambda cfg: {"max_rels": int(cfg.DATASETS.VG.NUM_VAL_IMAGES)})
    dicts = [dict(g, image_id=i, file_name=f"{i}.jpg", height=800, width=800) for i, (g, _) in enumerate(images)]
    name = "sgg_reeval_with_options"
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)

    def load():
        cap = DatasetCatalog.options(group)["max_rels"]
        return [dict(d, relations=d["relations"][:cap]) for d in dicts]

    DatasetCatalog.register(name, load, option_group=group)
    MetadataCatalog.get(name).set(predicate_classes=[f"p{i}" for i in range(6)], evaluator_type="scene_graph")
    DatasetCatalog.set_options(group, max_rels=2)  # the run read at most 2 relations per image
    evaluator = SceneGraphEvaluator(dataset_name=name, output_dir=str(tmp_path), mode="sgdet", ks=(20,), topk=30,
                                    save_predictions=True, box_ap=False)
    evaluator.process([{"image_id": i} for i in range(len(images))], [p for _, p in images])
    first = evaluator.evaluate()
    DatasetCatalog.set_options(group)  # a fresh process: the defaults (every relation)
    path = str(tmp_path / "predictions.pth")
    assert torch.load(path, weights_only=False)["dataset_options"] == {group: {"max_rels": 2}}
    assert TOOL.main(["--predictions", path, "--no-box-ap", "--output-dir", str(tmp_path / "a")]) == 0
    again = json.loads((tmp_path / "a" / "results.json").read_text())
    assert again["sgg"]["R@20"] == first["sgg"]["R@20"]
    # --config-file wins over the record: another cap, another recall of the same predictions
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("DATASETS:\n  VG:\n    NUM_VAL_IMAGES: 1000\n")
    assert TOOL.main(["--predictions", path, "--no-box-ap", "--output-dir", str(tmp_path / "b"),
                      "--config-file", str(cfg_file)]) == 0
    other = json.loads((tmp_path / "b" / "results.json").read_text())
    assert other["sgg"]["R@20"] != first["sgg"]["R@20"]
    assert TOOL.main(["--predictions", path, "DATASETS.VG.NUM_VAL_IMAGES", "6"]) == 2
    assert "need --config-file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- video SGG files
def _noisy_video_prediction(frame, rng):
    """A PredCls-style prediction for an AG GT frame: every person-object pair, random probabilities."""
    n = len(frame["boxes"])
    pairs = np.stack([np.zeros(n - 1, np.int64), np.arange(1, n)], 1)
    probs = rng.random((n - 1, 26)).astype(np.float32)
    for sub, obj, pred in frame["relations"]:
        probs[max(sub, obj) - 1, pred] += 0.5  # better than chance, not perfect
    attention = probs[:, :3] / probs[:, :3].sum(1, keepdims=True)
    boxes = frame["boxes"] + rng.normal(0, 3, frame["boxes"].shape).astype(np.float32)
    return {"boxes": boxes, "labels": frame["labels"], "scores": np.ones(n, np.float32), "pairs": pairs,
            "attention": attention, "spatial": probs[:, 3:9], "contacting": probs[:, 9:]}


@pytest.fixture
def saved_videos(tmp_path, tmp_path_factory, monkeypatch):
    """demo_ag_test, noisy predictions, and the predictions.pth the registered evaluator wrote."""
    from sgg.config import get_cfg
    from sgg.evaluation import build_evaluator

    monkeypatch.setenv("SGG_DATASETS", shared_datasets(tmp_path_factory))  # the demo is generated once per session
    cfg = get_cfg()
    cfg.TEST.RELATION.MODE = "predcls"
    cfg.TEST.VIDEO_RELATION.CONSTRAINTS = ("with", "no")
    evaluator = build_evaluator(cfg, "demo_ag_test", str(tmp_path / "run"))
    rng = np.random.default_rng(0)
    videos = DatasetCatalog.get("demo_ag_test")
    predictions = {v["video_id"]: [_noisy_video_prediction(f, rng) for f in v["frames"]] for v in videos}
    evaluator.reset()
    for video in videos:
        evaluator.process([video], [{"frames": predictions[video["video_id"]]}])
    return predictions, tmp_path / "run" / "predictions.pth", evaluator.evaluate()["video_sgg"]


def test_video_predictions_are_saved_and_reevaluated(saved_videos, tmp_path, capsys):
    from sgg.evaluation.video_scene_graph import VideoSceneGraphEvaluator

    predictions, path, first = saved_videos
    assert path.is_file()
    # the defaults re-evaluate with the options the run used: the same numbers, float for float
    assert TOOL.main(["--predictions", str(path)]) == 0
    again = json.loads((path.parent / "reeval" / "results.json").read_text())["video_sgg"]
    assert again == first and set(k.split("/")[0] for k in again) == {"with", "no"}
    assert 0 < first["with/R@20"] < 100
    # other options: equal to evaluating the in-memory predictions directly with them
    out = tmp_path / "semi"
    assert TOOL.main(["--predictions", str(path), "--constraints", "semi", "--iou-threshold", "0.7",
                      "--mr-variant", "stket", "--ks", "5", "--output-dir", str(out)]) == 0
    assert "copypaste: Task: video_sgg" in capsys.readouterr().out
    direct = VideoSceneGraphEvaluator(dataset_name="demo_ag_test", constraints=("semi",), ks=(5,),
                                      iou_threshold=0.7, mr_variant="stket", distributed=False)
    for video_id, frames in predictions.items():
        direct.add_video_predictions(video_id, frames)
    assert json.loads((out / "results.json").read_text())["video_sgg"] == direct.evaluate()["video_sgg"]
    # image-only flags on a video file, and a different mode, are refused with the reason
    assert TOOL.main(["--predictions", str(path), "--zeroshot-file", "zs.npy"]) == 2
    assert "apply to image SGG files only" in capsys.readouterr().err
    assert TOOL.main(["--predictions", str(path), "--mode", "sgdet"]) == 2
    assert "saved in predcls mode; it cannot be evaluated as sgdet" in capsys.readouterr().err


def test_video_only_flags_on_an_image_file_are_refused(saved, capsys):
    _, path, _ = saved
    assert TOOL.main(["--predictions", str(path), "--constraints", "with"]) == 2
    assert "apply to video SGG files only" in capsys.readouterr().err
