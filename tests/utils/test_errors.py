"""sgg.utils.errors: every project error is an SGGError, and run_cli turns one into a single ``error:`` line — also
when it was raised in a DataLoader worker or in a ``--num-gpus`` worker (both hand back only traceback text)."""

import os
import traceback

import pytest
from torch.utils.data import DataLoader, Dataset

from sgg.checkpoint import CheckpointError
from sgg.config import ConfigError
from sgg.data.datasets.action_genome import ActionGenomeFormatError, RefusedPickleError
from sgg.data.datasets.visual_genome import VGFormatError
from sgg.engine import NonFiniteLossError, OutputDirInUseError
from sgg.utils.errors import (
    DEBUG_ENV,
    EXIT_INTERRUPTED,
    MissingFileError,
    SGGError,
    run_cli,
    user_error_message,
)
from sgg.utils.registry import RegistryError
from sgg.utils.video_io import VideoError


@pytest.mark.parametrize("cls, base", [
    (ConfigError, ValueError), (CheckpointError, RuntimeError), (VGFormatError, ValueError),
    (ActionGenomeFormatError, ValueError), (RefusedPickleError, Exception), (VideoError, OSError),
    (RegistryError, KeyError), (OutputDirInUseError, RuntimeError), (NonFiniteLossError, FloatingPointError),
    (MissingFileError, FileNotFoundError),
])
def test_project_errors_derive_from_sgg_error_and_keep_their_old_base(cls, base):
    assert issubclass(cls, SGGError) and issubclass(cls, base)
    assert str(cls("'x.yaml': bad")) == "'x.yaml': bad"  # KeyError-based ones do not quote their message


class _MissingImages(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise MissingFileError(f"Image '/data/VG_100K/{i}.jpg' does not exist. Check the dataset's image folder.")


def test_an_error_from_a_dataloader_worker_is_one_line(capsys):
    def iterate():
        for _ in DataLoader(_MissingImages(), num_workers=1, collate_fn=lambda b: b):
            pass

    assert run_cli(iterate) == 2
    err = capsys.readouterr().err
    assert err == "error: Image '/data/VG_100K/0.jpg' does not exist. Check the dataset's image folder.\n"


def _worker_traceback(exc):
    try:
        raise exc
    except BaseException:  # noqa: B036 - KeyboardInterrupt too: it is what a worker hit by Ctrl-C reports
        return traceback.format_exc()


def test_an_error_from_a_spawned_worker_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    from torch.multiprocessing.spawn import ProcessRaisedException

    def fails(exc):
        text = "\n\n-- Process 1 terminated with the following error:\n" + _worker_traceback(exc)
        raise ProcessRaisedException(text, 1, 4242)

    assert run_cli(fails, ConfigError("Unknown config key 'SOLVER.BASE_LRR' (from command line).")) == 2
    assert capsys.readouterr().err == "error: Unknown config key 'SOLVER.BASE_LRR' (from command line).\n"
    with pytest.raises(ProcessRaisedException):  # not a user error: the traceback is not hidden
        run_cli(fails, ZeroDivisionError("division by zero"))
    assert user_error_message(ProcessRaisedException("-- Process 0 terminated with the following error:\n"
                                                     + _worker_traceback(KeyboardInterrupt()), 0, 1)) \
        == ("interrupted (Ctrl-C).", EXIT_INTERRUPTED)


def test_multi_line_messages_are_folded_and_sgg_debug_adds_the_traceback(capsys, monkeypatch):
    def bad():
        raise VGFormatError("'VG-SGG.h5': key 'boxes_1024'\n  is missing")

    assert run_cli(bad) == 2
    assert capsys.readouterr().err == "error: 'VG-SGG.h5': key 'boxes_1024' is missing\n"
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert run_cli(bad) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.endswith("error: 'VG-SGG.h5': key 'boxes_1024' is missing\n")


def test_ctrl_c_is_exit_130_and_system_exit_passes_through(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert run_cli(interrupted) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted (Ctrl-C).\n"
    with pytest.raises(SystemExit):
        run_cli(lambda: (_ for _ in ()).throw(SystemExit(3)))
    assert run_cli(lambda: None) == 0 and run_cli(lambda: 1) == 1


def test_every_user_error_class_in_sgg_derives_from_sgg_error():
    """No module defines a user-facing *Error outside the hierarchy (the one error path)."""
    import ast

    root = os.path.join(os.path.dirname(__file__), "..", "..", "sgg")
    outside = []
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and node.name != "SGGError":
                    bases = [getattr(b, "id", getattr(b, "attr", "")) for b in node.bases]
                    if not any(b in SGGError._by_name or b == "SGGError" for b in bases):
                        outside.append(f"{os.path.relpath(path, root)}: {node.name}({', '.join(bases)})")
    assert outside == []
