"""tools/convert_checkpoint.py: exit codes, printed unmapped keys, wrong kind, refusing to overwrite, refusing a
pickle with a forbidden global — each failure one ``error:`` line."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sgg.checkpoint import CHECKPOINT_CONVERTERS
from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from tests.checkpoint.speaq_upstream import upstream_state_dict
from tests.checkpoint.test_convert import _Evil, _toy_converter
from tests.engine.helpers import REPO, assert_one_error_line, run_cli
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


@pytest.mark.parametrize("kind,config,multiply,opts", [
    ("speaq", "speaq_released.yaml", 2, ["MODEL.DETR.NUM_GROUPS", "2"]),  # 4 predicates: 2 frequency groups
    ("iterative_sg", "iterative_sg_released.yaml", 1, [])])
def test_converted_release_evaluates_through_train_net_eval_only(tmp_path, capsys, kind, config, multiply, opts):
    """An upstream-shaped (random) release -> tools/convert_checkpoint.py -> tools/train_net.py --eval-only with the
    released config and the layout the converter printed, on a registered 2-image dataset: the strict load passes and
    the scene-graph evaluator writes its results."""
    name = f"ckpt_released_{kind}"
    dicts = []
    for i, (h, w) in enumerate([(60, 80), (72, 64)]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        dicts.append({"file_name": str(path), "image_id": i, "height": h, "width": w, "dataset_name": name,
                      "boxes": np.array([[4, 4, 30, 30], [20, 10, 60, 50]], np.float32), "labels": np.array([1, 3]),
                      "relations": np.array([[0, 1, 2]]), "attributes": np.zeros((2, 10), np.int64)})
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=[f"c{i}" for i in range(5)],
                                  predicate_classes=[f"p{i}" for i in range(4)], predicate_frequencies=[9, 5, 3, 1],
                                  evaluator_type="scene_graph", mapper="SceneGraphMapper")
    src, dst = tmp_path / "model_final.pth", tmp_path / "converted.pth"
    torch.save({"model": upstream_state_dict(multiply=multiply, d=32, ffn=64, enc=1, dec=2, queries=4, classes=5,
                                             predicates=4), "iteration": 3}, src)
    tool = load_tool("convert_checkpoint")
    assert tool.main(["--from", kind, str(src), str(dst)]) == 0
    layout = next(line for line in capsys.readouterr().out.splitlines() if "the checkpoint's layout" in line)
    out = tmp_path / "eval"
    r = run_cli("--config-file", os.path.join(REPO, "configs", config), "--eval-only", "MODEL.WEIGHTS", str(dst),
                "OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu", "MODEL.DETR.NHEADS", "4", *opts,
                *layout.split(": ", 2)[2].split(), "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
                "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "inference" / name / "results.json").read_text())
    assert "R@50" in json.dumps(results)
