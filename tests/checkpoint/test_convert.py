"""sgg.checkpoint.convert: safe reading of upstream files, unwrapping, the converter registry, saving the result
in a form the strict ``MODEL.WEIGHTS`` load accepts."""

import argparse
import os
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from sgg.checkpoint import CheckpointError, DetectionCheckpointer
from sgg.checkpoint.convert import (
    CHECKPOINT_CONVERTERS,
    ConversionResult,
    WrongCheckpointKindError,
    convert_checkpoint,
    load_upstream_file,
    rename_keys,
    require_prefix,
    save_converted,
    unwrap_state_dict,
)
from sgg.utils.errors import SGGError


class _Evil:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)


def _upstream_toy_state(toy):
    """The toy's state dict as an imagined upstream names it (``fc.*`` / ``bn.*``)."""
    return {k.replace("head.", "fc.").replace("norm.", "bn."): v.clone() for k, v in toy.state_dict().items()}


def _toy_converter(state, *, source):
    require_prefix(state, "fc.", source=source, expected="a toy checkpoint", hint="did you mean --from other?")
    return rename_keys(state, lambda k: k.replace("fc.", "head.").replace("bn.", "norm.")
                       if k.startswith(("fc.", "bn.")) else None)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(CHECKPOINT_CONVERTERS._obj_map, "toy", _toy_converter)
    return "toy"


def test_weights_only_file_and_containers(tmp_path):
    state = {"a.weight": torch.ones(2), "a.bias": torch.zeros(2)}
    for wrapped in ({"model": state, "iteration": 5}, {"state_dict": state}, {"model": {"state_dict": state}},
                    state, {"model": {f"module.{k}": v for k, v in state.items()}}):
        path = tmp_path / "f.pth"
        torch.save(wrapped, path)
        got = unwrap_state_dict(load_upstream_file(str(path)), source=str(path))
        assert sorted(got) == sorted(state)


def test_argparse_options_and_numpy_are_allowed(tmp_path):
    path = tmp_path / "with_args.pth"
    torch.save({"model": {"w": np.arange(4, dtype=np.float32)}, "args": argparse.Namespace(lr=0.1, layers=[1, 2]),
                "best": np.float64(0.5)}, path)
    with pytest.raises(Exception):  # plain weights_only refuses it: the fallback is what reads it
        torch.load(path, weights_only=True)
    data = load_upstream_file(str(path))
    assert data["args"].layers == [1, 2] and float(data["best"]) == 0.5
    state = unwrap_state_dict(data, source=str(path))
    assert torch.equal(state["w"], torch.arange(4, dtype=torch.float32))


def test_numpy_1_pickles_load_under_numpy_2(tmp_path):
    """Upstream files were written with numpy 1.x, which pickles ``numpy.core.multiarray.*``; numpy 2 renamed the
    module ``numpy._core``. The file is rewritten to the old names (protocol-2 text GLOBALs) and must still load."""
    new = tmp_path / "new.pth"
    torch.save({"model": {"w": torch.ones(1)}, "best": np.float64(0.25), "arr": np.arange(3)}, new)
    old = tmp_path / "old.pth"
    with zipfile.ZipFile(new) as zin, zipfile.ZipFile(old, "w", compression=zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(item, data)
    data = load_upstream_file(str(old))
    assert float(data["best"]) == 0.25 and data["arr"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("zip_format", [True, False])  # torch >= 1.6 files and the older format
def test_a_pickled_callable_is_refused_and_not_run(tmp_path, capfd, zip_format):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "x": _Evil()}, path, _use_new_zipfile_serialization=zip_format)
    refused = rf"Refusing to load .*evil\.pth': it references {os.system.__module__}\.system;"
    with pytest.raises(CheckpointError, match=refused):
        load_upstream_file(str(path))
    assert "should-never-run" not in capfd.readouterr().out
    legacy = tmp_path / "options.tar"
    torch.save({"state_dict": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)}, legacy,
               _use_new_zipfile_serialization=zip_format)
    assert load_upstream_file(str(legacy))["args"].lr == 0.1


@pytest.mark.parametrize("content", [b"", os.urandom(512), b"PK\x03\x04truncated"])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_upstream_file(str(path))
    with pytest.raises(CheckpointError, match="not found"):
        load_upstream_file(str(tmp_path / "absent.pth"))


def test_no_state_dict_inside():
    with pytest.raises(CheckpointError, match=r"holds no model state dict.*epoch"):
        unwrap_state_dict({"epoch": 3, "optimizer": {"state": {}}}, source="x.pth")


def test_require_prefix_says_what_was_expected():
    with pytest.raises(WrongCheckpointKindError) as info:
        require_prefix({"x.w": torch.ones(1)}, "RCNN_base.", source="f.tar",
                       expected="a faster-rcnn.pytorch Action Genome detector", hint="did you mean --from sttran?")
    assert isinstance(info.value, SGGError)
    assert str(info.value) == ("'f.tar': no 'RCNN_base.*' keys: this is not a faster-rcnn.pytorch Action Genome "
                               "detector (its keys: x.w ...); did you mean --from sttran?.")
    require_prefix({"RCNN_base.0.weight": torch.ones(1)}, ("RCNN_top.", "RCNN_base."), source="f", expected="x")


def test_rename_keys_reports_unmapped_and_refuses_collisions():
    result = rename_keys({"a": torch.ones(1), "b": torch.ones(1), "c": torch.ones(1)},
                         lambda k: None if k == "c" else k.upper())
    assert sorted(result.state_dict) == ["A", "B"] and result.unmapped == ["c"]
    with pytest.raises(ValueError, match="two source keys"):
        rename_keys({"a": torch.ones(1), "b": torch.ones(1)}, lambda k: "same")


def test_converted_file_loads_strictly_and_refuses_overwrite(tmp_path, toy_registered):
    torch.manual_seed(0)
    upstream = _Toy()
    src = tmp_path / "upstream.pth"
    torch.save({"model": {**_upstream_toy_state(upstream), "extra.w": torch.ones(1)}, "iteration": 9}, src)
    result = convert_checkpoint(toy_registered, str(src))
    assert isinstance(result, ConversionResult) and result.unmapped == ["extra.w"]
    dst = tmp_path / "converted.pth"
    save_converted(result, str(dst), converter="toy", source=str(src))
    saved = torch.load(dst, weights_only=True)
    assert saved["converted_from"]["converter"] == "toy" and saved["converted_from"]["unmapped"] == ["extra.w"]
    model = _Toy()
    DetectionCheckpointer(model, save_to_disk=False).load(str(dst), checkpointables=[], strict=True)
    for key, value in upstream.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    before = dst.read_bytes()
    with pytest.raises(CheckpointError, match="exists; not overwriting"):
        save_converted(result, str(dst), converter="toy", source=str(src))
    assert dst.read_bytes() == before
    save_converted(ConversionResult({"head.weight": torch.zeros(2, 3)}), str(dst), converter="toy",
                   source=str(src), overwrite=True)
    assert torch.load(dst, weights_only=True)["model"].keys() == {"head.weight"}
    with pytest.raises(CheckpointError, match="replace its source"):
        save_converted(result, str(src), converter="toy", source=str(src), overwrite=True)


def test_wrong_kind_from_the_converter(tmp_path, toy_registered):
    src = tmp_path / "other.pth"
    torch.save({"model": {"backbone.w": torch.ones(1)}}, src)
    with pytest.raises(WrongCheckpointKindError, match=r"no 'fc\.\*' keys: this is not a toy checkpoint"):
        convert_checkpoint(toy_registered, str(src))
