"""Helpers for engine tests: run tools/train_net.py in-process (fast) or in a subprocess, read outputs."""

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CFG = os.path.join(REPO, "tests", "engine", "toy.yaml")
TIMING = ("time", "data_time", "eta_seconds")


def _train_net():
    spec = importlib.util.spec_from_file_location("sgg_tools_train_net", os.path.join(REPO, "tools", "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*argv):
    """Run ``tools/train_net.py`` in this process; returns an object with returncode, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _train_net().cli(list(argv))
        except SystemExit as e:  # argparse errors
            code = e.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_cli_subprocess(*argv, timeout=300):
    """Run tools/train_net.py in a fresh interpreter (exactly as a user does); returns CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_metrics(output_dir, drop_timing=True):
    """metrics.json lines as dicts (timing keys removed)."""
    rows = []
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            row = json.loads(line)
            if drop_timing:
                row = {k: v for k, v in row.items() if k not in TIMING}
            rows.append(row)
    return rows


def load_model_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def snapshot(folder):
    """``{relative path: (size, mtime_ns, sha256)}`` of every file under ``folder`` (to prove nothing changed)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            st = os.stat(path)
            out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def assert_kept(before, after):
    """Every file of the ``before`` snapshot is still there, byte-identical (caches may have been added)."""
    changed = [name for name, (_, _, digest) in before.items() if name not in after or after[name][2] != digest]
    assert changed == [], changed


def assert_one_error_line(result, *fragments, last=True):
    """``result`` (returncode/stdout/stderr) failed the user-error way: one ``error:`` line (the last of stderr unless
    ``last`` is False: multiprocessing's resource tracker may still warn at exit), holding every fragment, and no
    traceback anywhere. Returns that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and (lines[-1] == errors[0] or not last), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in result.stderr and "Traceback" not in (result.stdout or ""), result.stderr[-3000:]
    return errors[0]
