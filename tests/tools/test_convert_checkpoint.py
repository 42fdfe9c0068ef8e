"""tools/convert_checkpoint.py: exit codes, printed unmapped keys, wrong kind, refusing to overwrite, refusing a
pickle with a forbidden global — each failure one ``error:`` line."""

import os

import pytest
import torch

from sgg.checkpoint import CHECKPOINT_CONVERTERS
from tests.checkpoint.test_convert import _Evil, _toy_converter
from tests.engine.helpers import assert_one_error_line
from tests.tools.tool_loader import load_tool


class _Result:
    def __init__(self, code, captured):
        self.returncode, self.stdout, self.stderr = code, captured.out, captured.err


@pytest.fixture
def tool(monkeypatch):
    monkeypatch.setitem(CHECKPOINT_CONVERTERS._obj_map, "toy", _toy_converter)
    return load_tool("convert_checkpoint")


def _run(tool, capsys, *argv):
    code = tool.main(list(map(str, argv)))
    return _Result(code, capsys.readouterr())


def test_choices_are_the_registered_converters(tool):
    action = next(a for a in tool.build_parser()._actions if a.dest == "kind")
    assert action.choices == CHECKPOINT_CONVERTERS.names() and "toy" in action.choices


def test_converts_prints_unmapped_and_refuses_overwrite(tool, tmp_path, capsys):
    src, dst = tmp_path / "up.pth", tmp_path / "out.pth"
    torch.save({"model": {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2), "aux.w": torch.ones(1)}}, src)
    result = _run(tool, capsys, "--from", "toy", src, dst)
    assert result.returncode == 0, result.stderr
    assert "unmapped: aux.w" in result.stdout
    assert "converted 2 tensors" in result.stdout and "1 source key(s) unmapped" in result.stdout
    assert set(torch.load(dst, weights_only=True)["model"]) == {"head.weight", "head.bias"}
    mtime = os.stat(dst).st_mtime_ns
    again = _run(tool, capsys, "--from", "toy", src, dst)
    assert again.returncode == 2
    assert_one_error_line(again, "out.pth", "--overwrite")
    assert os.stat(dst).st_mtime_ns == mtime
    assert _run(tool, capsys, "--from", "toy", src, dst, "--overwrite").returncode == 0


def test_wrong_kind_unreadable_and_forbidden_global(tool, tmp_path, capfd):
    capsys = capfd  # fd-level capture: also sees what a (refused) os.system would print
    dst = tmp_path / "out.pth"
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"backbone.w": torch.ones(1)}}, other)
    result = _run(tool, capsys, "--from", "toy", other, dst)
    assert result.returncode == 2
    assert_one_error_line(result, "other.pth", "this is not a toy checkpoint", "did you mean --from other?")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(300))
    assert_one_error_line(_run(tool, capsys, "--from", "toy", garbage, dst), "garbage.pth", "not a readable")
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"fc.weight": torch.ones(1)}, "payload": _Evil()}, evil)
    result = _run(tool, capsys, "--from", "toy", evil, dst)
    assert result.returncode == 2
    assert_one_error_line(result, "Refusing to load", "evil.pth", "system")
    assert "should-never-run" not in result.stdout + result.stderr
    assert_one_error_line(_run(tool, capsys, "--from", "toy", tmp_path / "nope.pth", dst), "not found")
    assert not dst.exists()
