"""Every launch route of the README and the seeds, on CPU with 2 gloo processes: tools/train_net.py under
``python -m torch.distributed.launch`` (which passes ``--local-rank``), ``tools/train.py -num_gpus 2``, and
``tools/train.py`` under a launcher (``-batch_size`` stays per process). ``--num-gpus 2`` and ``torchrun`` are in
tests/engine/test_distributed.py."""

import importlib.util
import os
import subprocess
import sys

import pytest

from sgg.engine import default_argument_parser
from sgg.engine.launch import find_free_port
from tests.engine.helpers import REPO, TOY_CFG
from tests.tools.test_train_seed_cli import TINY


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def _train_tool():
    spec = importlib.util.spec_from_file_location("sgg_tools_train_launch", os.path.join(REPO, "tools", "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_distributed_launch_passes_local_rank_and_trains(tmp_path):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2",
                        f"--master_port={find_free_port()}", os.path.join(REPO, "tools", "train_net.py"),
                        "--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "4",
                        "TEST.EVAL_PERIOD", "0"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "World size: 2" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "model_final.pth").is_file()


def test_seed_cli_with_num_gpus_2_spawns_two_workers(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"), "-model", "sttran", "-mode",
                        "predcls", "-data_path", "demo", "-num_gpus", "2", "-batch_size", "1", "-save_path", str(out),
                        "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", *TINY],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log and (out / "model_final.pth").is_file()
    assert "SOLVER.IMS_PER_BATCH 2" in r.stdout  # 1 video per process x 2 processes


def test_batch_size_is_per_process_under_a_launcher(monkeypatch):
    train = _train_tool()
    base = ["-model", "sttran", "-data_path", "demo", "-batch_size", "3"]
    assert dict(train.translate(base)["overrides"])["SOLVER.IMS_PER_BATCH"] == 3
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    assert dict(train.translate(base)["overrides"])["SOLVER.IMS_PER_BATCH"] == 12  # 3 per process x 4 processes
    with pytest.raises(train.SeedFlagError, match="drop -num_gpus"):
        train.translate(base + ["-num_gpus", "2"])
    # --local-rank as torch.distributed.launch passes it is accepted by both CLIs
    assert train.build_parser().parse_args(["--local-rank=1", "-model", "sttran"]).local_rank == 1
    assert default_argument_parser().parse_args(["--local_rank", "0", "--config-file", "x.yaml"]).local_rank == 0
