"""Two-stage training, best checkpoint, early stopping and TensorBoard output, through the real trainer."""

import glob
import os
import shutil

import torch

from sgg.engine.hooks import BestCheckpointer
from tests.engine.helpers import REPO, TOY_CFG, load_model_state, read_metrics, run_cli

STAGE2 = ["MODEL.BACKBONE.FREEZE_AT", "1", "SOLVER.STAGE2.ENABLED", "True", "SOLVER.STAGE2.START_ITER", "10",
          "SOLVER.STAGE2.UNFREEZE", '["backbone"]', "SOLVER.STAGE2.LR_FACTOR", "0.1", "SOLVER.CHECKPOINT_PERIOD", "5",
          "SOLVER.STEPS", "(100,)", "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "0"]


def test_two_stage_training_freezes_then_unfreezes_with_lower_lr(tmp_path):
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path), *STAGE2)
    assert r.returncode == 0, r.stderr
    s4, s9 = load_model_state(tmp_path / "model_0000004.pth"), load_model_state(tmp_path / "model_0000009.pth")
    final = load_model_state(tmp_path / "model_final.pth")
    assert torch.equal(s4["backbone.0.weight"], s9["backbone.0.weight"])  # frozen in stage 1
    assert not torch.equal(s4["head.weight"], s9["head.weight"])  # the head trains in stage 1
    assert not torch.equal(s9["backbone.0.weight"], final["backbone.0.weight"])  # unfrozen in stage 2
    lrs = {m["iteration"]: m["lr"] for m in read_metrics(tmp_path) if "lr" in m}
    assert lrs[9] == 0.01 and abs(lrs[10] - 0.001) < 1e-12

    # Resuming inside stage 2 re-applies it and continues bit-identically.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(tmp_path / "model_0000014.pth", resumed)
    (resumed / "last_checkpoint").write_text("model_0000014.pth")
    r = run_cli("--config-file", TOY_CFG, "--resume", "OUTPUT_DIR", str(resumed), *STAGE2)
    assert r.returncode == 0, r.stderr
    again = load_model_state(resumed / "model_final.pth")
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_best_checkpoint_and_early_stopping(tmp_path):
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path), "TEST.EVAL_PERIOD", "2", "SOLVER.MAX_ITER", "30",
                "SOLVER.BEST_CHECKPOINT.METRIC", "toy/neg_mse", "SOLVER.EARLY_STOPPING.ENABLED", "True",
                "SOLVER.EARLY_STOPPING.METRIC", "toy/neg_mse", "SOLVER.EARLY_STOPPING.PATIENCE", "2",
                "SOLVER.BASE_LR", "0.0", "SOLVER.WARMUP_ITERS", "0")
    assert r.returncode == 0, r.stderr
    evals = [m for m in read_metrics(tmp_path) if "toy/neg_mse" in m]
    # LR 0: the metric never improves, so training stops after 1 + patience evaluations.
    assert len(evals) == 3 and evals[-1]["iteration"] < 29
    best = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert best["best_value"] == max(e["toy/neg_mse"] for e in evals) and best["iteration"] == evals[0]["iteration"]
    assert (tmp_path / "model_final.pth").is_file()
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))


def test_grad_norm_is_logged_before_clipping_and_the_epoch_when_given(tmp_path):
    """metrics.json / TensorBoard get "grad_norm" (the L2 norm before SOLVER.CLIP_GRADIENTS); log lines show the epoch
    when SOLVER.ITERS_PER_EPOCH is set (tools/train.py -epochs sets it)."""
    out = tmp_path / "run"
    run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "0",
            "LOG_PERIOD", "1", "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1e-6")
    norms = [m["grad_norm"] for m in read_metrics(str(out)) if "grad_norm" in m]
    assert len(norms) >= 3 and all(n > 1e-6 for n in norms)  # the unclipped norm, far above the clip value
    log = (out / "log.txt").read_text()
    assert "epoch: 0.50  iter: 0" in log and "epoch: 1.50  iter: 2" in log and "grad_norm:" in log


def test_best_checkpoints_by_several_metrics(tmp_path):
    """SOLVER.BEST_CHECKPOINT.EXTRA_METRICS: each metric keeps its own model_best_<metric>.pth (TEMPURA: mR@20 and
    R@20), and the hook's state holds every record (what --resume restores)."""
    out = str(tmp_path)
    args = ["--config-file", TOY_CFG, "OUTPUT_DIR", out, "TEST.EVAL_PERIOD", "2", "SOLVER.MAX_ITER", "10",
            "SOLVER.BEST_CHECKPOINT.METRIC", "toy/neg_mse", "SOLVER.BEST_CHECKPOINT.EXTRA_METRICS", '("toy/r2",)']
    assert run_cli(*args).returncode == 0
    evals = [m for m in read_metrics(out) if "toy/r2" in m]
    by_r2 = torch.load(f"{out}/model_best_toy-r2.pth", weights_only=True)
    assert by_r2["best_metric"] == "toy/r2" and by_r2["best_value"] == max(e["toy/r2"] for e in evals)
    assert torch.load(f"{out}/model_best.pth", weights_only=True)["best_metric"] == "toy/neg_mse"


def test_best_checkpointer_state_round_trip():
    hook = BestCheckpointer(None, "a/x", extra_metrics=("a/y", "a/x"))
    assert list(hook.extra) == ["a/y"] and hook.extra["a/y"][2] == "model_best_a-y"
    hook.best_value, hook.best_iter, hook.extra["a/y"][:2] = 0.5, 3, [0.7, 5]
    other = BestCheckpointer(None, "a/x", extra_metrics=("a/y",))
    other.load_state_dict(hook.state_dict())
    assert (other.best_value, other.best_iter, other.extra["a/y"][:2]) == (0.5, 3, [0.7, 5])
    other.load_state_dict({"best_value": 0.1, "best_iter": 1})  # a checkpoint from before EXTRA_METRICS existed
    assert other.best_value == 0.1 and other.extra["a/y"][:2] == [0.7, 5]


# ------------------------------------------------------------------------------------------------- VIS_PERIOD
VIS_TINY = ["MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.STTRAN.OBJ_FEATURE_DIM", "16", "MODEL.STTRAN.UNION_DIM", "8",
            "MODEL.STTRAN.VISUAL_DIM", "8", "MODEL.STTRAN.EMBED_DIM", "4", "MODEL.STTRAN.DIM_FEEDFORWARD", "16",
            "MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN", "8", "MODEL.STTRAN.POS_DIM", "4", "INPUT.MIN_SIZE_TEST", "64",
            "INPUT.MAX_SIZE_TEST", "96", "LOG_PERIOD", "1", "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "0",
            "TEST.EVAL_PERIOD", "0", "SOLVER.BEST_CHECKPOINT.METRIC", "", "SOLVER.PLATEAU.METRIC", "",
            "SOLVER.CHECKPOINT_PERIOD", "100"]


def _tensorboard_images(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0})
    acc.Reload()
    return {tag: [(e.step, e.width, e.height) for e in acc.Images(tag)] for tag in acc.Tags()["images"]}


def test_vis_period_draws_predictions_into_tensorboard_without_changing_training(tmp_path):
    cfg = os.path.join(REPO, "configs", "quick", "sttran_demo.yaml")
    drawn, plain = tmp_path / "vis", tmp_path / "plain"
    r = run_cli("--config-file", cfg, "OUTPUT_DIR", str(drawn), *VIS_TINY, "VIS_PERIOD", "2", "VIS_SAMPLES", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    images = _tensorboard_images(drawn)
    assert set(images) == {"vis/demo_ag_test/0", "vis/demo_ag_test/1"}
    assert [step for step, _, _ in images["vis/demo_ag_test/0"]] == [1, 3]  # after iterations 2 and 4
    assert all(w > h >= 240 for _, w, h in images["vis/demo_ag_test/0"])  # picture + graph panel beside it
    r = run_cli("--config-file", cfg, "OUTPUT_DIR", str(plain), *VIS_TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _tensorboard_images(plain) == {}
    losses = lambda folder: [{k: v for k, v in row.items() if k.startswith("loss")}  # noqa: E731
                             for row in read_metrics(folder)]
    assert losses(drawn) == losses(plain)  # the drawing restores the RNG states and the train mode


def test_vis_period_refuses_models_it_cannot_draw(tmp_path):
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path), "VIS_PERIOD", "1", "SOLVER.MAX_ITER", "2")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "VIS_PERIOD draws scene graphs and cannot draw this model (The predictor handles" in r.stderr
    assert not (tmp_path / "model_final.pth").exists()  # refused before the first step
