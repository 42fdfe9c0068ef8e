""".ci/run: installs the detectron2 wheel from ../shared/wheels (beside the clone) before the README's test command."""

import os
import shutil
import stat
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README_COMMAND = 'pip install -e ".[all,dev]" -c constraints.txt && python -m pytest -q'


def _fake(path, log):
    """A stand-in for pip / python that records its arguments and succeeds."""
    path.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_ci(tmp_path, with_wheel):
    clone = tmp_path / "clone"
    (clone / ".ci").mkdir(parents=True)
    shutil.copy(os.path.join(REPO, ".ci", "run"), clone / ".ci" / "run")
    if with_wheel:
        (tmp_path / "shared" / "wheels").mkdir(parents=True)
        (tmp_path / "shared" / "wheels" / "detectron2-0.6-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    for tool in ("pip", "python"):
        _fake(bin_dir / tool, log)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(clone / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    return proc, log.read_text().splitlines()


def test_ci_installs_the_shared_wheel_first_then_runs_the_readme_command(tmp_path):
    proc, calls = _run_ci(tmp_path, with_wheel=True)
    assert proc.returncode == 0, proc.stderr
    wheel = tmp_path / "shared" / "wheels" / "detectron2-0.6-cp311-cp311-linux_x86_64.whl"
    assert calls == [f"pip install {wheel}", "pip install -e .[all,dev] -c constraints.txt", "python -m pytest -q"]


def test_ci_without_the_shared_folder_runs_only_the_readme_command(tmp_path):
    proc, calls = _run_ci(tmp_path, with_wheel=False)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["pip install -e .[all,dev] -c constraints.txt", "python -m pytest -q"]


def test_the_readme_test_command_is_verbatim_in_ci():
    assert README_COMMAND in open(os.path.join(REPO, "README.md")).read()
    assert README_COMMAND in open(os.path.join(REPO, ".ci", "run")).read()
