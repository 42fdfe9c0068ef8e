"""Issue #28 on tools/train_net.py: every failure a user can fix is one ``error:`` line and exit code 2 (130 for
Ctrl-C), with no traceback, and nothing on disk is lost: strict weight loading, OUTPUT_DIR checks before any write, the
run lock, atomic checkpoints on a full disk, the non-finite guard, bad configs, CUDA without CUDA, Ctrl-C."""

import errno
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from sgg.checkpoint.checkpointer import nonfinite_tensors
from sgg.engine.output_dir import LOCK_FILE
from tests.engine.helpers import REPO, TOY_CFG, assert_one_error_line, run_cli, snapshot

FAST = ["TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", "10", "SOLVER.CHECKPOINT_PERIOD", "5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished toy run: config.yaml, model_0000004.pth, model_final.pth, last_checkpoint (never modified)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _copy_run(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _unchanged_except_log(before, after):
    """Every file of ``before`` is byte-identical in ``after``, except log.txt, which may only have grown."""
    for name, (size, _, digest) in before.items():
        assert name in after, name
        if name == "log.txt":
            assert after[name][0] >= size
        else:
            assert after[name][2] == digest, name


# ------------------------------------------------------------------------------------ strict weight loading
def test_a_checkpoint_of_another_model_is_refused_for_eval_and_training(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"model": {"encoder.layer.weight": torch.zeros(3, 3)}}, other)
    for mode in (["--eval-only"], []):
        out = tmp_path / ("eval" if mode else "train")
        r = run_cli("--config-file", TOY_CFG, *mode, "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", str(other), *FAST)
        assert r.returncode == 2
        assert_one_error_line(r, f"Checkpoint '{other}' (MODEL.WEIGHTS) is not a checkpoint of the "
                                 "ToyRegressor model this config builds: it matches none of the model's 4 tensors",
                              "encoder.layer.weight")
        assert not (out / "inference").exists() and not list(out.glob("model_*.pth"))  # no metrics, no training


def test_missing_or_misshaped_tensors_are_refused_unless_partial_loading_is_allowed(trained, tmp_path):
    state = torch.load(trained / "model_final.pth", weights_only=True)["model"]
    shaped = dict(state, **{"head.weight": torch.zeros(2, 16)})
    torch.save({"model": shaped}, tmp_path / "shape.pth")
    missing = {k: v for k, v in state.items() if k != "head.bias"}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    r = run_cli("--config-file", TOY_CFG, "--eval-only", "OUTPUT_DIR", str(tmp_path / "e1"), "MODEL.WEIGHTS",
                str(tmp_path / "shape.pth"))
    assert r.returncode == 2
    assert_one_error_line(r, "is not a checkpoint of the ToyRegressor model",
                          "head.weight (2, 16) in the checkpoint vs (1, 16) in the model",
                          "MODEL.ALLOW_PARTIAL_WEIGHTS True")
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path / "t1"), "MODEL.WEIGHTS",
                str(tmp_path / "missing.pth"), *FAST)
    assert r.returncode == 2
    assert_one_error_line(r, "1 model tensor(s) missing from it (head.bias)")
    assert not list((tmp_path / "t1").glob("model_*.pth"))
    # The explicit key loads what fits and says so in the log.
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path / "t2"), "MODEL.WEIGHTS",
                str(tmp_path / "missing.pth"), "MODEL.ALLOW_PARTIAL_WEIGHTS", "True", *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (tmp_path / "t2" / "log.txt").read_text()
    assert "MODEL.ALLOW_PARTIAL_WEIGHTS is set" in log and "Partial load of" in log and "3 of 4 model tensors" in log


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_as_weights_is_one_line(tmp_path, seed):
    path = tmp_path / "random.pth"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(seed),
                                   dtype=torch.uint8).numpy().tobytes())
    r = run_cli("--config-file", TOY_CFG, "--eval-only", "OUTPUT_DIR", str(tmp_path / "o"), "MODEL.WEIGHTS", str(path))
    assert r.returncode == 2
    assert_one_error_line(r, f"Checkpoint '{path}' is corrupt or truncated", "Point MODEL.WEIGHTS at an intact file")


def test_resume_with_an_incompatible_config_or_model_is_refused(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    before = snapshot(run)
    r = run_cli("--config-file", TOY_CFG, "--resume", "OUTPUT_DIR", str(run), "SOLVER.OPTIMIZER", "SGD",
                "SOLVER.MAX_ITER", "12", "TEST.EVAL_PERIOD", "0")
    assert r.returncode == 2
    assert_one_error_line(r, f"Cannot restore the trainer state from '{run / 'model_final.pth'}'",
                          "SOLVER.OPTIMIZER differs", "OUTPUT_DIR/config.yaml")
    _unchanged_except_log(before, snapshot(run))  # config.yaml of the run is not replaced by the refused one
    # A last checkpoint of another architecture (tensor size mismatch).
    state = torch.load(run / "model_final.pth", weights_only=True)
    state["model"]["head.weight"] = torch.zeros(3, 16)
    torch.save(state, run / "model_0000099.pth")
    (run / "last_checkpoint").write_text("model_0000099.pth")
    before = snapshot(run)
    r = run_cli("--config-file", TOY_CFG, "--resume", "OUTPUT_DIR", str(run), "SOLVER.MAX_ITER", "120")
    assert r.returncode == 2
    assert_one_error_line(r, f"'{run / 'model_0000099.pth'}' (--resume) is not a checkpoint of the ToyRegressor model",
                          "head.weight (3, 16) in the checkpoint vs (1, 16)")
    _unchanged_except_log(before, snapshot(run))


# ------------------------------------------------------------------------------------ OUTPUT_DIR
def test_fresh_run_into_a_folder_with_checkpoints_refuses_before_writing_anything(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    before = snapshot(run)
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(run), "SOLVER.BASE_LR", "0.5", *FAST)
    assert r.returncode == 2
    assert_one_error_line(r, f"OUTPUT_DIR '{run}' already holds checkpoints (last_checkpoint -> model_final.pth)",
                          "--resume", "nothing was overwritten")
    assert snapshot(run) == before  # config.yaml, log.txt, checkpoints: not a byte, not an mtime changed
    # Checkpoints without last_checkpoint are protected too (also from a --resume that would start over).
    (run / "last_checkpoint").unlink()
    before = snapshot(run)
    for resume in ([], ["--resume"]):
        r = run_cli("--config-file", TOY_CFG, *resume, "OUTPUT_DIR", str(run), *FAST)
        assert r.returncode == 2
        assert_one_error_line(r, "already holds checkpoints (model_0000004.pth, model_final.pth)", "Move those files")
        assert snapshot(run) == before


def test_output_dir_that_is_a_file_or_lies_under_one(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(afile), *FAST)
    assert r.returncode == 2
    assert_one_error_line(r, f"OUTPUT_DIR '{afile}' is a file, not a folder")
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(afile / "run"), *FAST)
    assert r.returncode == 2
    assert_one_error_line(r, f"'{afile}' is a file, not a folder")
    assert afile.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_read_only_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("x")
    before = snapshot(ro)
    ro.chmod(0o555)
    try:
        if os.geteuid() != 0:
            r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(ro), *FAST)
        else:  # root writes anywhere: drop the capability that lets it (setpriv), in a small subprocess
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot make a folder read-only for this process")
            script = textwrap.dedent(f"""
                import importlib.util, sys
                sys.path.insert(0, {REPO!r})
                spec = importlib.util.spec_from_file_location("output_dir", {REPO!r} + "/sgg/engine/output_dir.py")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)  # the module train_net uses, without importing torch (fast)
                from sgg.utils.errors import run_cli
                sys.exit(run_cli(module.check_output_dir, sys.argv[1]))
            """)
            r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", sys.executable,
                                "-c", script, str(ro)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2
        assert_one_error_line(r, f"Cannot write to OUTPUT_DIR '{ro}' (permission denied / read-only)")
    finally:
        ro.chmod(0o755)
    assert snapshot(ro) == before


HOLD_LOCK = textwrap.dedent("""
    import importlib.util, sys, time
    sys.path.insert(0, sys.argv[1])
    spec = importlib.util.spec_from_file_location("output_dir", sys.argv[1] + "/sgg/engine/output_dir.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.OutputDirLock(sys.argv[2]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_second_run_into_a_locked_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, REPO, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), *FAST)
        assert r.returncode == 2
        assert_one_error_line(r, f"OUTPUT_DIR '{out}' is in use by another run (pid {holder.pid}",
                              f"lock file '{out / LOCK_FILE}'", "nothing was written")
        assert snapshot(out) == before  # only the holder's lock file, untouched
    finally:
        holder.kill()  # SIGKILL: the holder cannot clean up, its lock file stays behind
        holder.wait()
    assert (out / LOCK_FILE).read_text().startswith(f"pid={holder.pid} ")
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Took over the stale lock file '{out / LOCK_FILE}' of pid {holder.pid}" in (out / "log.txt").read_text()
    assert (out / "model_final.pth").is_file() and not (out / LOCK_FILE).exists()  # released at the end


# ------------------------------------------------------------------------------------ atomic checkpoints
def test_a_failing_checkpoint_write_keeps_the_previous_checkpoint_and_last_checkpoint(tmp_path, monkeypatch):
    import sgg.checkpoint.checkpointer as ckpt_module

    real_save = torch.save
    calls = []

    def disk_full_on_second_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # model_final.pth: half written, then the disk is full
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", disk_full_on_second_save)
    out = tmp_path / "run"
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), *FAST)
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)
    assert r.returncode == 2
    assert_one_error_line(r, f"Could not write checkpoint '{out / 'model_final.pth'}' (No space left on device)",
                          "last_checkpoint -> model_0000004.pth", "--resume")
    assert (out / "last_checkpoint").read_text() == "model_0000004.pth"
    assert sorted(p.name for p in out.glob("*.pth")) == ["model_0000004.pth"]
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]  # the half-written temp file is gone
    assert torch.load(out / "model_0000004.pth", weights_only=True)["iteration"] == 4
    r = run_cli("--config-file", TOY_CFG, "--resume", "OUTPUT_DIR", str(out), *FAST)  # the advice works
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_final.pth"


# ------------------------------------------------------------------------------------ non-finite guard
def test_an_update_that_makes_weights_non_finite_aborts_and_keeps_the_last_finite_checkpoint(tmp_path):
    out = tmp_path / "run"
    # Stage 2 at iteration 7 multiplies the LR by 3e40 (LR 3e38, just below float32's max): its first step overflows.
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(out), *FAST, "SOLVER.OPTIMIZER", "SGD",
                "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "3", "MODEL.BACKBONE.FREEZE_AT", "1",
                "SOLVER.STAGE2.ENABLED", "True", "SOLVER.STAGE2.START_ITER", "7", "SOLVER.STAGE2.UNFREEZE",
                '("backbone",)', "SOLVER.STAGE2.LR_FACTOR", "3e40")
    assert r.returncode == 2
    assert_one_error_line(r, "Iteration 7: the model's weights became non-finite",
                          "before any checkpoint is written from them", "last_checkpoint -> model_0000005.pth")
    assert (out / "last_checkpoint").read_text() == "model_0000005.pth"
    for path in out.glob("*.pth"):
        assert not nonfinite_tensors(torch.load(path, weights_only=True)["model"]), path


# ------------------------------------------------------------------------------------ config and device
@pytest.mark.parametrize("case", ["cycle", "number", "binary"])
def test_bad_config_files_name_the_file(tmp_path, case):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    if case == "cycle":
        a.write_text("_BASE_: b.yaml\n")
        b.write_text("_BASE_: a.yaml\nSOLVER:\n  MAX_ITER: 3\n")
        expected = [f"'{a}' inherits from itself through _BASE_ ({a} -> {b} -> {a})"]
    elif case == "number":
        a.write_text("_BASE_: 3\n")
        expected = [f"'_BASE_' in config file '{a}' must be the path of another YAML config", "got 3 (int)"]
    else:
        a.write_bytes(bytes(range(128, 256)) * 4)
        expected = [f"Config file '{a}' is not a YAML text file"]
    r = run_cli("--config-file", str(a), "OUTPUT_DIR", str(tmp_path / "out"))
    assert r.returncode == 2
    assert_one_error_line(r, *expected)
    assert not (tmp_path / "out").exists()


def test_model_device_cuda_without_cuda_is_refused_and_auto_runs_on_cpu(tmp_path, monkeypatch):
    from sgg.modeling import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = run_cli("--config-file", TOY_CFG, "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.DEVICE", "cuda", *FAST)
    assert r.returncode == 2
    assert_one_error_line(r, "MODEL.DEVICE is 'cuda' but CUDA is not available on this machine", "MODEL.DEVICE cpu")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_stops_cleanly_and_says_where_the_last_checkpoint_is(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", TOY_CFG,
                             "OUTPUT_DIR", str(out), "TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", "100000000",
                             "SOLVER.CHECKPOINT_PERIOD", "50", "LOG_PERIOD", "1000"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell without job control starts background jobs with SIGINT ignored: undo that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while not (out / "last_checkpoint").exists():
            assert proc.poll() is None and time.time() < deadline, "the run did not write a checkpoint"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    result = type("R", (), {"stderr": stderr, "stdout": stdout})
    line = assert_one_error_line(result, "Training interrupted (Ctrl-C) at iteration", "Continue with --resume")
    last = (out / "last_checkpoint").read_text()
    assert f"'{out / last}' (last_checkpoint -> {last})" in line
    assert torch.load(out / last, weights_only=True)["iteration"] >= 49
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")] and not (out / LOCK_FILE).exists()


def test_run_lock_module_needs_only_the_standard_library_and_the_errors_module():
    # The lock holder above loads output_dir.py on its own; keep it that light (no torch import).
    spec = importlib.util.find_spec("sgg.engine.output_dir")
    text = open(spec.origin).read()
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert all(not line.startswith(("import torch", "from torch", "from sgg.engine")) for line in imports), imports


# ------------------------------------------------------------------------------------ the guard, step by step
class _BCEOrSqrt(torch.nn.Module):
    """loss = BCE(sigmoid(w * x), y) (NaN x -> torch refuses the input), or sqrt(w * 0) (finite loss, NaN gradient)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch):
        x = torch.tensor([batch["x"]])
        if batch["kind"] == "bce":
            return {"loss_bce": torch.nn.functional.binary_cross_entropy(torch.sigmoid(self.w * x), torch.ones(1))}
        return {"loss_sqrt": torch.sqrt(self.w * 0.0).sum()}


@pytest.mark.parametrize("kind, x, message", [
    ("bce", float("nan"), "Loss was non-finite for 3 consecutive iterations"),  # BCE's "between 0 and 1" RuntimeError
    ("sqrt", 1.0, "Gradients were non-finite for 3 consecutive iterations"),
])
def test_non_finite_outputs_and_gradients_skip_the_step_then_abort(kind, x, message):
    from sgg.engine import NonFiniteLossError, SimpleTrainer
    from sgg.utils.events import EventStorage

    model = _BCEOrSqrt()
    trainer = SimpleTrainer(model, iter([{"kind": kind, "x": x}] * 10), torch.optim.SGD(model.parameters(), lr=0.1),
                            max_nonfinite_steps=3)
    with EventStorage(0):
        for it in range(2):
            trainer.iter = it
            trainer.run_step()
        assert trainer.nonfinite_total == 2 and torch.equal(model.w.detach(), torch.ones(1))  # no update applied
        trainer.iter = 2
        with pytest.raises(NonFiniteLossError, match=message):
            trainer.run_step()
    assert torch.equal(model.w.detach(), torch.ones(1))


def test_checkpointer_refuses_to_write_non_finite_weights(tmp_path):
    from sgg.checkpoint import DetectionCheckpointer, NonFiniteWeightsError

    model = torch.nn.Linear(3, 2)
    ckpt = DetectionCheckpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000004", iteration=4)
    before = snapshot(tmp_path)
    with torch.no_grad():
        model.weight[0, 1] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=r"Refusing to write checkpoint .*model_final.pth.*weight.*"
                                                    r"last_checkpoint -> model_0000004.pth"):
        ckpt.save("model_final", iteration=9)
    assert snapshot(tmp_path) == before
