"""A tiny test-only model, datasets and evaluator that exercise the engine end to end.

Imported through the config key ``IMPORTS: ["tests.engine.toy"]`` so that spawned workers register them too.
Datasets: ``toy_train`` / ``toy_test`` (y = w·x + noise, 4-d x), ``toy_nan_train`` (sample 0 has y = NaN, so every batch
holding it produces a NaN loss), ``toy_allnan_train`` (every y is NaN).
"""

import math

import numpy as np
import torch
from torch import nn

from sgg.config import configurable
from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.evaluation import EVALUATOR_REGISTRY, DatasetEvaluator
from sgg.modeling import META_ARCH_REGISTRY
from sgg.utils import comm

DIM = 4
_W = np.array([1.5, -2.0, 0.5, 3.0], dtype=np.float32)


def _make(n: int, seed: int, nan_indices=()):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, DIM).astype(np.float32)
    y = x @ _W + 0.05 * rng.randn(n).astype(np.float32)
    y[list(nan_indices)] = np.nan
    return [{"image_id": i, "x": x[i].tolist(), "y": float(y[i])} for i in range(n)]


def _register(name, fn):
    if name not in DatasetCatalog:
        DatasetCatalog.register(name, fn)
        MetadataCatalog.get(name).set(evaluator_type="toy_mse")


_register("toy_train", lambda: _make(64, 0))
_register("toy_test", lambda: _make(24, 1))
_register("toy_nan_train", lambda: _make(64, 0, nan_indices=[0]))
_register("toy_allnan_train", lambda: _make(64, 0, nan_indices=range(64)))


if "ToyRegressor" not in META_ARCH_REGISTRY:
    @META_ARCH_REGISTRY.register()
    class ToyRegressor(nn.Module):
        """MLP regressor with dropout (so resume must restore RNG state to be bit-identical)."""

        @configurable
        def __init__(self, *, hidden: int = 16, dropout: float = 0.1, freeze_backbone: bool = False):
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(DIM, hidden), nn.ReLU(), nn.Dropout(dropout))
            self.head = nn.Linear(hidden, 1)
            if freeze_backbone:
                self.backbone.requires_grad_(False)

        @classmethod
        def from_config(cls, cfg):
            return {"hidden": 16, "dropout": 0.1, "freeze_backbone": cfg.MODEL.BACKBONE.FREEZE_AT > 0}

        def forward(self, batched_inputs):
            x = torch.tensor([b["x"] for b in batched_inputs], dtype=torch.float32)
            pred = self.head(self.backbone(x)).squeeze(1)
            if self.training:
                y = torch.tensor([b["y"] for b in batched_inputs], dtype=torch.float32)
                return {"loss_mse": ((pred - y) ** 2).mean()}
            return [{"pred": float(p)} for p in pred]


if "toy_mse" not in EVALUATOR_REGISTRY:
    @EVALUATOR_REGISTRY.register("toy_mse")
    class ToyMSEEvaluator(DatasetEvaluator):
        """Mean squared error and R² over the dataset, gathered across ranks."""

        def __init__(self, cfg, dataset_name, output_dir):
            self._targets = {d["image_id"]: d["y"] for d in DatasetCatalog.get(dataset_name)}
            self.reset()

        def reset(self):
            self._pairs = []

        def process(self, inputs, outputs):
            self._pairs.extend((i["image_id"], o["pred"]) for i, o in zip(inputs, outputs))

        def evaluate(self):
            pairs = [p for part in comm.gather(self._pairs) for p in part]
            if not comm.is_main_process():
                return {}
            pairs = sorted(pairs)
            err = np.array([pred - self._targets[i] for i, pred in pairs])
            y = np.array([self._targets[i] for i, _ in pairs])
            mse = float((err ** 2).mean())
            return {"toy": {"mse": mse, "neg_mse": -mse, "r2": 1 - mse / float(y.var()), "n": len(pairs),
                            "finite": float(math.isfinite(mse))}}


def train_and_dump_weights(args):
    """Worker entry for the distributed test: standard setup + DefaultTrainer, then every rank saves its weights."""
    import os

    from sgg.config import get_cfg, import_user_modules
    from sgg.engine import DefaultTrainer, default_setup

    cfg = get_cfg()
    cfg.merge_from_file(args["config_file"])
    cfg.merge_from_list(args["opts"])
    cfg.freeze()
    import_user_modules(cfg)
    default_setup(cfg, args)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    torch.save(model.state_dict(), os.path.join(cfg.OUTPUT_DIR, f"weights_rank{comm.get_rank()}.pth"))
