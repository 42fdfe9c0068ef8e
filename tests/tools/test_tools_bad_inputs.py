"""Issue #28 on the other tools: a missing / corrupt / truncated video or a missing / malicious / random-bytes /
mismatched checkpoint is one ``error:`` line and exit code 2 for tools/keyframes.py, without a traceback and without
writing the contact sheet; the same one-line path in evaluate_predictions.py, prepare_vg.py and train.py."""

import os
import pickle

import numpy as np
import pytest
import torch

from sgg.checkpoint import DetectionCheckpointer
from sgg.modeling import build_model
from sgg.utils.video_io import write_video
from tests.engine.helpers import assert_one_error_line
from tests.tools.test_keyframe_tools import _load_tool, _tiny_cfg


class _Result:
    def __init__(self, code, captured):
        self.returncode, self.stdout, self.stderr = code, captured.out, captured.err


@pytest.fixture(scope="module")
def keyframe_run(tmp_path_factory):
    """A tiny trained-looking keyframe detector (checkpoint + config.yaml) and a 4 s clip."""
    root = tmp_path_factory.mktemp("keyframes")
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    DetectionCheckpointer(build_model(cfg), str(root)).save("model_final")
    (root / "config.yaml").write_text(cfg.dump())
    frames = np.zeros((40, 48, 64, 3), np.uint8)
    frames[20:] = 180
    video = write_video(str(root / "clip.mp4"), frames, fps=10)
    return {"root": root, "weights": str(root / "model_final.pth"), "video": video, "tool": _load_tool("keyframes")}


def _run_keyframes(run, capsys, video, weights, tmp_path):
    sheet = tmp_path / "sheet.png"
    code = run["tool"].main([video, "--weights", weights, "--output", str(sheet)])
    result = _Result(code, capsys.readouterr())
    assert not sheet.exists()
    return result


def test_keyframes_on_a_missing_corrupt_or_truncated_video(keyframe_run, capsys, tmp_path):
    data = open(keyframe_run["video"], "rb").read()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.RandomState(1).bytes(4000))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 3 // 4])  # the index (moov) sits at the end of an mp4
    noise = np.random.RandomState(4).randint(0, 255, (16, 32, 32, 3)).astype(np.uint8)
    webm = write_video(str(tmp_path / "clip.webm"), noise, fps=4)
    short = tmp_path / "short.webm"
    short.write_bytes(open(webm, "rb").read()[: os.path.getsize(webm) // 2])  # header: 16 frames; data: about 8
    for video, fragment in ((tmp_path / "nope.mp4", f"Video file not found: '{tmp_path / 'nope.mp4'}'"),
                            (corrupt, f"Cannot open video '{corrupt}'"),
                            (truncated, f"'{truncated}'"),
                            (short, f"Video '{short}' decoded")):
        r = _run_keyframes(keyframe_run, capsys, str(video), keyframe_run["weights"], tmp_path)
        assert r.returncode == 2
        assert_one_error_line(r, fragment)


def test_keyframes_with_missing_malicious_random_or_mismatched_weights(keyframe_run, capsys, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "x": Payload()}, evil)  # torch's format, a pickled callable inside
    evil_pickle = tmp_path / "evil_pickle.pth"
    with open(evil_pickle, "wb") as f:
        pickle.dump({"model": {}, "x": Payload()}, f)  # a plain pickle doing the same
    rand = tmp_path / "random.pth"
    rand.write_bytes(np.random.RandomState(2).bytes(5000))
    other = tmp_path / "other.pth"
    torch.save({"model": {"temporal.weight": torch.zeros(2)}}, other)
    for weights, fragments in ((tmp_path / "nope.pth", [f"Checkpoint not found: '{tmp_path / 'nope.pth'}'"]),
                               (evil, [f"Checkpoint '{evil}' contains Python objects that cannot be loaded safely"]),
                               (evil_pickle, [f"Checkpoint '{evil_pickle}' is corrupt or truncated",
                                              "nothing in it was run"]),
                               (rand, [f"Checkpoint '{rand}' is corrupt or truncated", "--weights"]),
                               (other, [f"Checkpoint '{other}' (--weights) is not a checkpoint of the",
                                        "KeyframeDetector"])):
        r = _run_keyframes(keyframe_run, capsys, keyframe_run["video"], str(weights), tmp_path)
        assert r.returncode == 2
        assert_one_error_line(r, *fragments)
    assert not marker.exists()


def test_evaluate_predictions_and_prepare_vg_give_one_line(tmp_path, capsys):
    rand = tmp_path / "predictions.pth"
    rand.write_bytes(np.random.RandomState(3).bytes(3000))
    assert _load_tool("evaluate_predictions").main(["--predictions", str(rand)]) == 2
    assert_one_error_line(_Result(2, capsys.readouterr()), f"Cannot read predictions file '{rand}'")
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_vg", os.path.join(os.path.dirname(__file__), "..", "..",
                                                                             "datasets", "prepare_vg.py"))
    prepare_vg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare_vg)
    (tmp_path / "demo_root").write_text("a file, not a folder")
    code = prepare_vg.main(["--demo", str(tmp_path / "demo_root")])
    result = _Result(code, capsys.readouterr())
    assert code == 2
    assert_one_error_line(result, str(tmp_path / "demo_root"))
    assert (tmp_path / "demo_root").read_text() == "a file, not a folder"


def test_train_seed_cli_errors_are_one_line(tmp_path, capsys):
    train = _load_tool("train")
    bad = tmp_path / "bad.yaml"
    bad.write_text("_BASE_: bad.yaml\n")
    code = train.cli(["-config", str(bad), "-save_path", str(tmp_path / "out")])
    assert code == 2
    assert_one_error_line(_Result(code, capsys.readouterr()), f"'{bad}' inherits from itself through _BASE_")
