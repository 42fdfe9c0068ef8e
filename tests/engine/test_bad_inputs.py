"""Bad inputs give one-line errors (exit code 2) and never overwrite anything."""

import os

import pytest
import torch

from tests.engine.helpers import TOY_CFG, run_cli


def _last_line(r):
    lines = r.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize("argv, expected", [
    (["SOLVER.BASE_LRR", "0.1"],
     "Unknown config key 'SOLVER.BASE_LRR' (from command line). Did you mean 'SOLVER.BASE_LR'?"),
    (["SOLVER.MAX_ITER", "abc"], "Config key 'SOLVER.MAX_ITER' expects type int (current value 20), got 'abc' (str)."),
    (["MODEL.META_ARCHITECTURE", "ToyRegresor"], "No object named 'ToyRegresor' in the META_ARCH registry. Did you "
                                                  "mean 'ToyRegressor'?"),
])
def test_config_and_registry_errors(tmp_path, argv, expected):
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path / "out"), *argv)
    assert r.returncode == 2
    assert _last_line(r).startswith("error: " + expected), _last_line(r)
    assert "Traceback" not in r.stderr


def test_missing_config_file(tmp_path):
    r = run_cli("--config-file", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert _last_line(r).startswith(f"error: Config file not found: '{tmp_path / 'nope.yaml'}'. Check the path "
                                    "passed to --config-file (a name of a config sgg ships")


def test_missing_and_corrupt_checkpoints(tmp_path):
    out = tmp_path / "out"
    r = run_cli("--config-file", TOY_CFG, "--eval-only", "OUTPUT_DIR", str(out), "MODEL.WEIGHTS",
                str(tmp_path / "missing.pth"))
    assert r.returncode == 2
    assert _last_line(r).startswith(f"error: Checkpoint not found: '{tmp_path / 'missing.pth'}'")

    good = tmp_path / "good.pth"
    torch.save({"model": {"head.weight": torch.zeros(1, 16)}}, good)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    size = corrupt.stat().st_size
    r = run_cli("--config-file", TOY_CFG, "--eval-only", "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", str(corrupt))
    assert r.returncode == 2
    assert _last_line(r).startswith(f"error: Checkpoint '{corrupt}' is corrupt or truncated"), _last_line(r)
    assert corrupt.stat().st_size == size


def test_unsafe_pickle_checkpoint_is_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": os.system}, evil)  # loading would need to import a callable
    r = run_cli("--config-file", TOY_CFG, "--eval-only", "OUTPUT_DIR", str(tmp_path / "o"), "MODEL.WEIGHTS", str(evil))
    assert r.returncode == 2
    assert "cannot be loaded safely" in _last_line(r)


def test_eval_only_expected_results(tmp_path):
    out = tmp_path / "out"
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 0
    weights = str(out / "model_final.pth")
    ok = run_cli("--config-file", TOY_CFG, "--eval-only", "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", weights,
                 "TEST.EXPECTED_RESULTS", '[["toy", "n", 24, 0.0]]')
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "copypaste: mse,neg_mse,r2,n,finite" in ok.stdout
    assert (out / "inference" / "toy_test" / "results.json").is_file()
    bad = run_cli("--config-file", TOY_CFG, "--eval-only", "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", weights,
                  "TEST.EXPECTED_RESULTS", '[["toy", "mse", -1.0, 0.001]]')
    assert bad.returncode == 1
    assert "TEST.EXPECTED_RESULTS" in _last_line(bad)
