"""Multi-process CPU training over gloo: --num-gpus 2 on a machine without CUDA, and launch() directly."""

import torch

from sgg.engine import launch
from tests.engine import toy
from tests.engine.helpers import TOY_CFG, read_metrics, run_cli_subprocess


def test_launch_two_gloo_workers_end_with_identical_weights(tmp_path):
    opts = ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "12", "TEST.EVAL_PERIOD", "6"]
    launch(toy.train_and_dump_weights, 2, dist_url="auto", args=({"config_file": TOY_CFG, "opts": opts},))
    w0 = torch.load(tmp_path / "weights_rank0.pth", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pth", weights_only=True)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    init = toy.ToyRegressor()  # same architecture, untrained: the run must have changed the weights
    assert not torch.equal(init.head.weight, w0["head.weight"])
    rows = read_metrics(tmp_path)
    evals = [r for r in rows if "toy/mse" in r]
    assert [r["iteration"] for r in evals] == [5, 12]
    assert evals[-1]["toy/n"] == 24  # gathered from both ranks: every test sample evaluated exactly once


def test_train_net_num_gpus_2_on_cpu(tmp_path):
    r = run_cli_subprocess("--config-file", TOY_CFG, "--num-gpus", "2", "OUTPUT_DIR", str(tmp_path),
                           "SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "model_final.pth").is_file()
    assert "World size: 2" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "log.txt.rank1").is_file()


def test_joins_an_existing_torchrun_group(tmp_path):
    import os
    import subprocess
    import sys

    from sgg.engine.launch import find_free_port
    from tests.engine.helpers import REPO

    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(find_free_port()), os.path.join(REPO, "tools", "train_net.py"), "--config-file", TOY_CFG,
                        "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "0"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "World size: 2" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "model_final.pth").is_file()

