"""Non-finite losses: skipped and counted; K in a row abort cleanly and leave the last checkpoint intact."""

import hashlib

import torch

from sgg.config import get_cfg
from sgg.data.samplers import TrainingSampler
from tests.engine.helpers import TOY_CFG, load_model_state, read_metrics, run_cli


def _expected_nan_batches(max_iter, seed=7, batch=8, size=64):
    sampler = TrainingSampler(size=size, batch_size=batch, seed=seed)
    it = iter(sampler)
    return sum(0 in next(it) for _ in range(max_iter))


def test_nan_batches_are_skipped_and_counted(tmp_path):
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path), "DATASETS.TRAIN", '("toy_nan_train",)',
                "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    expected = _expected_nan_batches(20)
    assert expected >= 2
    rows = [m for m in read_metrics(tmp_path) if "nonfinite_steps" in m]
    assert rows[-1]["nonfinite_steps"] == expected
    state = load_model_state(tmp_path / "model_final.pth")
    assert all(torch.isfinite(v).all() for v in state.values())
    assert "non-finite loss" in (tmp_path / "log.txt").read_text()


def test_consecutive_nan_aborts_and_keeps_last_good_checkpoint(tmp_path):
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path), "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 0
    # Pretend the run was interrupted after the first checkpoint, then resumed on broken data.
    (tmp_path / "model_final.pth").unlink()
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    digest = hashlib.sha256((tmp_path / "model_0000009.pth").read_bytes()).hexdigest()
    r = run_cli("--config-file", TOY_CFG, "--resume", "OUTPUT_DIR", str(tmp_path), "DATASETS.TRAIN",
                '("toy_allnan_train",)', "SOLVER.MAX_NONFINITE_STEPS", "3", "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Loss was non-finite for 3 consecutive iterations"), last
    assert hashlib.sha256((tmp_path / "model_0000009.pth").read_bytes()).hexdigest() == digest
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert not (tmp_path / "model_final.pth").exists()


def test_default_limit_is_configurable():
    assert get_cfg().SOLVER.MAX_NONFINITE_STEPS == 10
