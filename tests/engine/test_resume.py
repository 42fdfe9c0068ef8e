"""Exact resume: 20 iterations straight == 10 iterations + --resume 10 (weights bit-identical, same metrics)."""

import os
import shutil

import torch

from tests.engine.helpers import TOY_CFG, load_model_state, read_metrics, run_cli


def test_resume_is_bit_identical(tmp_path):
    straight = tmp_path / "straight"
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(straight))
    assert r.returncode == 0, r.stderr[-2000:]

    # An interrupted run leaves model_0000009.pth, last_checkpoint and the metrics written so far.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / "model_0000009.pth", resumed / "model_0000009.pth")
    (resumed / "last_checkpoint").write_text("model_0000009.pth")
    with open(straight / "metrics.json") as src, open(resumed / "metrics.json", "w") as dst:
        for line in src:
            if '"iteration": ' in line and int(line.split('"iteration": ')[1].split(",")[0].split("}")[0]) <= 9:
                dst.write(line)
    r = run_cli("--config-file", TOY_CFG, "--resume", "OUTPUT_DIR", str(resumed))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Resumed from" in (resumed / "log.txt").read_text()

    a = load_model_state(straight / "model_final.pth")
    b = load_model_state(resumed / "model_final.pth")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the weights did change during the second half (the comparison is not vacuous)
    mid = load_model_state(straight / "model_0000009.pth")
    assert not torch.equal(mid["head.weight"], a["head.weight"])

    ma, mb = read_metrics(straight), read_metrics(resumed)
    assert ma == mb
    assert ma[-1]["iteration"] == 20 and "toy/mse" in ma[-1]


def test_fresh_run_refuses_to_overwrite_existing_checkpoints(tmp_path):
    out = tmp_path / "run"
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "10", "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    before = {p: os.path.getmtime(out / p) for p in ("model_final.pth", "last_checkpoint")}
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "10")
    assert r.returncode == 2
    msg = r.stderr.strip().splitlines()[-1]
    assert "already holds checkpoints" in msg and "--resume" in msg
    assert {p: os.path.getmtime(out / p) for p in before} == before
