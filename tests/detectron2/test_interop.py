"""sgg -> detectron2: sgg's multi-dataset sampler in detectron2's train loader, sgg's evaluators under detectron2's
``inference_on_dataset`` / ``DatasetEvaluators`` / ``DefaultTrainer`` (the example project), with sgg's numbers."""

import itertools
import json
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

from sgg.config import get_cfg
from sgg.data import DatasetCatalog
from sgg.data.samplers import MultiDatasetDynamicSampler
from sgg.data.samplers.multi_dataset import real_count
from sgg.engine import DefaultTrainer as SggTrainer
from sgg.evaluation import inference_on_dataset
from sgg.evaluation.video_scene_graph import VideoSceneGraphEvaluator

from .common import requires_detectron2

pytestmark = requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROJECT = os.path.join(REPO, "projects", "detectron2_trainer")


def _same(a, b):
    """Identical results, float for float (NaN = NaN: pycocotools reports NaN for absent size ranges)."""
    return json.dumps(a, sort_keys=True, default=float) == json.dumps(b, sort_keys=True, default=float)


def _tag(d):
    """The mapper of the loader tests: a copy of the dataset dict (picklable, for loader workers)."""
    return dict(d)


def _types(n_real=13, n_synthetic=29, seed=0):
    types = np.array(["real"] * n_real + ["synthetic"] * n_synthetic, dtype=object)
    np.random.default_rng(seed).shuffle(types)
    return types.tolist()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_sampler_gives_detectron2_loaders_the_exact_composition_of_every_batch(num_workers):
    from detectron2.data import build_detection_train_loader

    types = _types()
    dicts = [{"index": i, "dataset_type": t} for i, t in enumerate(types)]
    kwargs = dict(dataset_types=types, batch_size=10, real_ratio=0.7, synthetic_ratio=0.3, seed=3)
    sampler = MultiDatasetDynamicSampler(**kwargs, flatten=True)
    loader = build_detection_train_loader(dicts, mapper=_tag, sampler=sampler, total_batch_size=10,
                                          aspect_ratio_grouping=False, num_workers=num_workers)
    batches = [[x["index"] for x in b] for b in itertools.islice(loader, 9)]
    assert all(sum(types[i] == "real" for i in b) == 7 for b in batches)
    # ... and they are exactly sgg's own batches, in order (detectron2's worker sharding keeps whole batches).
    assert batches == list(itertools.islice(iter(MultiDatasetDynamicSampler(**kwargs)), 9))


def test_sampler_per_rank_in_detectron2_loaders_composes_the_global_batch():
    """Two ranks of a global batch of 10 at 0.5: 5 real in every global batch, per-rank counts 3/2 rotating."""
    from detectron2.data import build_detection_train_loader

    types = _types()
    dicts = [{"index": i, "dataset_type": t} for i, t in enumerate(types)]
    per_rank = []
    for rank in range(2):
        sampler = MultiDatasetDynamicSampler(dataset_types=types, batch_size=5, real_ratio=0.5, synthetic_ratio=0.5,
                                             seed=1, rank=rank, world_size=2, flatten=True)
        loader = build_detection_train_loader(dicts, mapper=_tag, sampler=sampler, total_batch_size=None,
                                              single_gpu_batch_size=5, aspect_ratio_grouping=False)
        per_rank.append([sum(x["dataset_type"] == "real" for x in b) for b in itertools.islice(loader, 6)])
    assert [a + b for a, b in zip(*per_rank)] == [real_count(10, 0.5)] * 6
    assert per_rank[0] == [3, 2, 3, 2, 3, 2] and per_rank[1] == [2, 3, 2, 3, 2, 3]


class NoisyOracle(nn.Module):
    """A deterministic stand-in model for evaluation: per image, the GT boxes jittered, one label in four wrong,
    every ordered pair with predicate scores that favour the GT predicate on most GT pairs."""

    def __init__(self, dicts, num_predicates, seed=0):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # detectron2's inference_context puts it in eval mode
        self.outputs = {}
        rng = np.random.default_rng(seed)
        for d in dicts:
            boxes = np.asarray(d["boxes"], np.float32)
            n = len(boxes)
            labels = np.asarray(d["labels"]).copy()
            labels[rng.random(n) < 0.25] = 0
            pairs = np.array([(i, j) for i in range(n) for j in range(n) if i != j], np.int64).reshape(-1, 2)
            scores = rng.random((len(pairs), num_predicates)).astype(np.float32)
            for s, o, p in np.asarray(d["relations"]).reshape(-1, 3):
                if rng.random() < 0.7:
                    scores[(pairs[:, 0] == s) & (pairs[:, 1] == o), p] += 1.0
            self.outputs[d["image_id"]] = {
                "boxes": torch.from_numpy(boxes + rng.normal(0, 1.5, boxes.shape).astype(np.float32)),
                "labels": torch.from_numpy(labels), "scores": torch.from_numpy(rng.random(n).astype(np.float32)),
                "rel_pairs": torch.from_numpy(pairs), "rel_scores": torch.from_numpy(scores)}

    def forward(self, batched_inputs):
        assert not self.training
        return [self.outputs[x["image_id"]] for x in batched_inputs]


@pytest.fixture
def demo_root(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "shared_sgg_datasets"  # the demo is generated once per session
    monkeypatch.setenv("SGG_DATASETS", str(root))
    return root


def _sgg_cfg(out):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "quick", "speaq_demo.yaml"))
    cfg.merge_from_list(["OUTPUT_DIR", str(out), "DATALOADER.NUM_WORKERS", 0])
    DatasetCatalog.configure(cfg)
    return cfg


def _project():
    sys.path.insert(0, PROJECT)
    try:
        import sgg_trainer
    finally:
        sys.path.remove(PROJECT)
    return sgg_trainer


def _d2_cfg(out, *opts):
    from detectron2.config import get_cfg as d2_get_cfg

    cfg = d2_get_cfg()
    _project().add_sgg_config(cfg)
    cfg.merge_from_file(os.path.join(PROJECT, "speaq_demo.yaml"))
    cfg.merge_from_list(["OUTPUT_DIR", str(out), "DATALOADER.NUM_WORKERS", 0,
                         "SGG.CONFIG_FILE", os.path.join(REPO, "configs", "quick", "speaq_demo.yaml"), *opts])
    return cfg


def test_scene_graph_evaluator_gives_sggs_numbers_under_detectron2(demo_root, tmp_path):
    from detectron2.evaluation import DatasetEvaluators as D2Evaluators
    from detectron2.evaluation import inference_on_dataset as d2_inference_on_dataset

    cfg = _sgg_cfg(tmp_path / "sgg")
    model = NoisyOracle(DatasetCatalog.get("demo_vg_test"), num_predicates=10)
    ours = SggTrainer.test(cfg, model)  # sgg's own evaluation loop
    assert set(ours) == {"sgg", "bbox"} and 0.2 < ours["sgg"]["R@50"] < 0.95 and ours["sgg"]["mR@50"] > 0.1

    loader = SggTrainer.build_test_loader(cfg, "demo_vg_test")
    evaluator = SggTrainer.build_evaluator(cfg, "demo_vg_test", str(tmp_path / "d2"))
    assert _same(d2_inference_on_dataset(model, loader, D2Evaluators([evaluator])), ours)

    # detectron2's DefaultTrainer.test through the example project (detectron2's test loader, sgg's evaluator).
    trainer = _project().SceneGraphTrainer
    assert _same(trainer.test(_d2_cfg(tmp_path / "project"), model), ours)


def _video_prediction(frame, rng):
    n = len(frame["boxes"])
    pairs = np.stack([np.zeros(n - 1, np.int64), np.arange(1, n)], 1)
    probs = rng.random((n - 1, 26)).astype(np.float32) * 0.6
    for s, o, p in frame["relations"]:
        if rng.random() < 0.8:
            probs[max(s, o) - 1, p] += 0.5
    return {"boxes": np.asarray(frame["boxes"], np.float32), "labels": np.asarray(frame["labels"]),
            "scores": np.ones(n, np.float32), "pairs": pairs,
            "attention": probs[:, :3], "spatial": probs[:, 3:9], "contacting": probs[:, 9:]}


class VideoOracle(nn.Module):
    def __init__(self, videos, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.outputs = {v["video_id"]: {"frames": [_video_prediction(f, rng) for f in v["frames"]]} for v in videos}

    def forward(self, batched_inputs):
        return [self.outputs[x["video_id"]] for x in batched_inputs]


def test_video_scene_graph_evaluator_gives_sggs_numbers_under_detectron2(demo_root):
    from detectron2.evaluation import DatasetEvaluators as D2Evaluators
    from detectron2.evaluation import inference_on_dataset as d2_inference_on_dataset

    videos = DatasetCatalog.get("demo_ag_test")
    model, batches = VideoOracle(videos), [[v] for v in videos]
    ours = inference_on_dataset(model, batches, VideoSceneGraphEvaluator(dataset_name="demo_ag_test", mode="predcls"))
    assert 20 < ours["video_sgg"]["with/R@20"] < 100
    evaluators = D2Evaluators([VideoSceneGraphEvaluator(dataset_name="demo_ag_test", mode="predcls")])
    assert _same(d2_inference_on_dataset(model, batches, evaluators), ours)


def test_example_project_trains_an_sgg_model_with_detectron2s_default_trainer(demo_root, tmp_path):
    """detectron2's DefaultTrainer with the example project's SceneGraphTrainer: SpeaQ (demo config) trained for
    3 iterations on batches composed by sgg's sampler, then evaluated by sgg's evaluator."""
    project = _project()
    cfg = _d2_cfg(tmp_path / "out", "SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 4, "SOLVER.WARMUP_ITERS", 0,
                  "SOLVER.STEPS", (), "TEST.EVAL_PERIOD", 3)
    batch = next(iter(project.SceneGraphTrainer.build_train_loader(cfg)))
    assert [x["dataset_type"] for x in batch] == ["real", "real", "synthetic", "synthetic"]
    trainer = project.SceneGraphTrainer(cfg)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)  # sgg's optimizer for SpeaQ ...
    assert type(trainer.optimizer).__name__ == "AdamWWithGradientClip"  # ... with detectron2's clipping
    trainer.train()
    assert trainer.iter == 3
    results = trainer._last_eval_results  # what detectron2's EvalHook got from SceneGraphTrainer.test
    assert set(results["sgg"]) >= {"R@20", "R@50", "mR@50"} and "AP50" in results["bbox"]
    assert os.path.isfile(tmp_path / "out" / "model_final.pth")
