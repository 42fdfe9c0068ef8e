"""The seed's progressive training (predcls -> sgcls -> sgdet with -resume_from) for every video model on the demo
twin, and its early-stopping flags (-patience / -min_delta / -monitor)."""

import os

import pytest
import torch

from tests.tools.test_train_seed_cli import TINY, overrides, train

VIDEO_MODELS = ["sttran", "tempura", "stket", "dsg-detr"]


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize("model", VIDEO_MODELS)
def test_progressive_chain_predcls_sgcls_sgdet(model, tmp_path):
    """Each stage starts from the previous stage's model_final.pth (weights only, partial: the new mode's modules
    start fresh). With lr 0 in the later stages, every tensor they share with the previous stage is the loaded one."""
    common = ["-model", model, "-data_path", "demo", "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()", *TINY]
    if model == "dsg-detr":  # its object vector (features + embedding + box code) must split over 8 heads
        common += ["MODEL.STTRAN.OBJ_FEATURE_DIM", "28"]
    previous = None
    for mode in ("predcls", "sgcls", "sgdet"):
        out = str(tmp_path / mode)
        argv = ["-mode", mode, "-save_path", out, *common]
        if previous is not None:
            argv = ["-resume_from", previous, *argv, "SOLVER.BASE_LR", "0.0", "SOLVER.WARMUP_ITERS", "0"]
        assert train.cli(argv) == 0, (model, mode)
        final = os.path.join(out, "model_final.pth")
        if previous is not None:
            before, after = _state(previous), _state(final)
            shared = [k for k in before if k in after and before[k].shape == after[k].shape]
            assert len(shared) > 10
            # parameters are the loaded ones; only running statistics / memories updated by the forward may move
            moved = [k for k in shared if not torch.equal(before[k], after[k])]
            assert all(("running_" in k or "num_batches" in k or "memory" in k) for k in moved), moved[:5]
            assert set(after) - set(before), f"{mode} of {model} adds no module of its own"
        previous = final


def test_early_stopping_flags_map_onto_config_keys():
    o = overrides(["-model", "sttran", "-patience", "10", "-min_delta", "0.1", "-monitor", "val_recall@20"])
    assert o["SOLVER.EARLY_STOPPING.ENABLED"] is True and o["SOLVER.EARLY_STOPPING.PATIENCE"] == 10
    assert o["SOLVER.EARLY_STOPPING.MIN_DELTA"] == 0.1 and o["SOLVER.EARLY_STOPPING.METRIC"] == "video_sgg/with/R@20"
    assert overrides(["-patience", "3"])["SOLVER.EARLY_STOPPING.METRIC"] == "video_sgg/with/R@20"
    assert overrides(["-monitor", "val_mean_recall@50"])["SOLVER.EARLY_STOPPING.METRIC"] == "video_sgg/with/mR@50"
    assert overrides(["-monitor", "video_sgg/no/R@50"])["SOLVER.EARLY_STOPPING.METRIC"] == "video_sgg/no/R@50"
    assert "SOLVER.EARLY_STOPPING.ENABLED" not in overrides(["-model", "sttran"])
    with pytest.raises(train.SeedFlagError, match="-monitor val_loss: give val_recall@K"):
        overrides(["-monitor", "val_loss"])
