"""tools/export_model.py: quantized and pruned checkpoints are ordinary sgg checkpoints that ``--eval-only``
evaluates; an export writes a checked graph and export.json; bad command lines are one ``error:`` line."""

import contextlib
import io
import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch

import tests.engine.toy  # noqa: F401,E402  (registers ToyRegressor and toy_test)
from sgg.checkpoint import DetectionCheckpointer
from sgg.config import get_cfg
from sgg.modeling import build_model
from tests.engine.helpers import TOY_CFG, assert_one_error_line, load_model_state, run_cli
from tests.tools.tool_loader import load_tool


def _export(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = load_tool("export_model").main(list(argv))
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def toy_weights(tmp_path_factory):
    """A ToyRegressor checkpoint (seeded initial weights; quantizing / pruning does not care about training)."""
    folder = tmp_path_factory.mktemp("toy_weights")
    cfg = get_cfg()
    cfg.merge_from_file(TOY_CFG)
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, str(folder)).save("model_final")
    return str(folder / "model_final.pth")


def _eval_only(folder):
    result = run_cli("--config-file", os.path.join(folder, "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                     os.path.join(folder, "model_final.pth"))
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(folder, "inference", "toy_test", "results.json")) as f:
        return json.load(f)["toy"]


def test_quantized_checkpoint_evaluates_through_eval_only(toy_weights, tmp_path):
    out = str(tmp_path / "q")
    result = _export("--config-file", TOY_CFG, "--quantize", "dynamic", "--output", out, "MODEL.WEIGHTS", toy_weights)
    assert result.returncode == 0, result.stderr
    state = load_model_state(os.path.join(out, "model_final.pth"))
    assert state["head._packed_params.weight"].dtype == torch.qint8  # int8 on disk, tensors only
    with open(os.path.join(out, "config.yaml")) as f:
        assert 'QUANTIZATION: dynamic' in f.read()
    quantized = _eval_only(out)
    float_dir = str(tmp_path / "float")
    result = run_cli("--config-file", TOY_CFG, "--eval-only", "MODEL.WEIGHTS", toy_weights, "OUTPUT_DIR", float_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(float_dir, "inference", "toy_test", "results.json")) as f:
        reference = json.load(f)["toy"]
    assert quantized["finite"] == 1.0
    assert quantized["mse"] != reference["mse"]  # int8 weights really are used ...
    assert abs(quantized["mse"] - reference["mse"]) < 0.05 * reference["mse"]  # ... and stay close


def test_pruned_and_finetuned_checkpoints_evaluate_with_their_zeros(toy_weights, tmp_path):
    for name, extra in (("p", []), ("pf", ["--finetune-iters", "2"])):
        out = str(tmp_path / name)
        result = _export("--config-file", TOY_CFG, "--prune", "l1", "--amount", "0.5", *extra, "--output", out,
                         "MODEL.WEIGHTS", toy_weights)
        assert result.returncode == 0, result.stderr
        state = load_model_state(os.path.join(out, "model_final.pth"))
        weights = [state["backbone.0.weight"], state["head.weight"]]
        assert not any(k.endswith(("_orig", "_mask")) for k in state)  # permanent: plain weights
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        assert zeros == pytest.approx(0.5, abs=0.02)
        assert _eval_only(out)["finite"] == 1.0
    tuned = load_model_state(os.path.join(tmp_path, "pf", "model_final.pth"))["backbone.0.weight"]
    pruned = load_model_state(os.path.join(tmp_path, "p", "model_final.pth"))["backbone.0.weight"]
    assert torch.equal(tuned == 0, pruned == 0) and not torch.equal(tuned, pruned)  # trained, zeros kept


def test_bad_command_lines_are_one_error_line(toy_weights, tmp_path, monkeypatch):
    out = str(tmp_path / "x")
    assert_one_error_line(_export("--config-file", TOY_CFG, "--format", "tflite", "--output", out, "MODEL.WEIGHTS",
                                  toy_weights), "--format 'tflite'", "torchscript, onnx")
    assert_one_error_line(_export("--config-file", TOY_CFG, "--format", "torchscript", "--output", out),
                          "MODEL.WEIGHTS is required")
    assert_one_error_line(_export("--config-file", TOY_CFG, "--format", "torchscript", "--output", out,
                                  "MODEL.WEIGHTS", str(tmp_path / "missing.pth")), "missing.pth", "does not exist")
    assert_one_error_line(_export("--config-file", TOY_CFG, "--prune", "l1", "--output", out, "MODEL.WEIGHTS",
                                  toy_weights), "--amount")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the deploy extra were not installed
    assert_one_error_line(_export("--config-file", TOY_CFG, "--format", "onnx", "--output", out, "MODEL.WEIGHTS",
                                  toy_weights), "'deploy' extra", 'pip install -e ".[deploy]"')
    assert_one_error_line(_export("--config-file", TOY_CFG, "--format", "torchscript", "--output", out,
                                  "MODEL.WEIGHTS", toy_weights), "ToyRegressor has no export core")
