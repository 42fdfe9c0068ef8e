"""tools/demo.py end to end on tiny models: drawings, triplets.json / triplets.csv, keyframes, and one ``error:``
line with exit code 2 for bad inputs."""

import csv
import json
import os
import runpy

import pytest
from PIL import Image

from sgg.data import DatasetCatalog
from tests.seeit_models import REPO, opts_of, save_tiny_model, shared_datasets, synthetic_video

IMAGE_CFG, SGDET_CFG = "configs/quick/speaq_demo.yaml", "configs/quick/sttran_sgdet_demo.yaml"
KEYFRAME_CFG = "configs/quick/keyframe_demo.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGG_DATASETS", shared_datasets(tmp_path_factory))
        env = {"image": save_tiny_model(IMAGE_CFG, root / "speaq"), "sgdet": save_tiny_model(SGDET_CFG, root / "sgdet"),
               "video": synthetic_video(str(root / "clip.mp4")), "root": root,
               "cli": runpy.run_path(os.path.join(REPO, "tools", "demo.py"))["cli"]}
        images = root / "images"
        images.mkdir()
        for i, name in enumerate(DatasetCatalog.get("demo_vg_test")[:2]):
            Image.open(name["file_name"]).save(images / f"photo{i}.png")
        (images / "notes.txt").write_text("ignored: not an image extension")
        env["images"] = images
        yield env
        DatasetCatalog.reset_options()


def _run(env, config_file, weights, inputs, out, *extra):
    argv = ["--config-file", os.path.join(REPO, config_file), "--input", str(inputs), "--output", str(out), *extra,
            "MODEL.WEIGHTS", weights, *opts_of(config_file)]
    return env["cli"](argv)


def test_image_folder(env, tmp_path):
    out = tmp_path / "out"
    assert _run(env, IMAGE_CFG, env["image"], env["images"], out, "--threshold", "0", "--topk", "4") == 0
    for i in range(2):
        drawing = Image.open(out / f"photo{i}.png")
        source = Image.open(env["images"] / f"photo{i}.png")
        assert drawing.height == 540 and drawing.width > source.width * 540 / source.height  # picture + panel
    doc = json.load(open(out / "triplets.json"))
    assert doc["model"] == "SpeaQ" and [os.path.basename(e["input"]) for e in doc["inputs"]] == ["photo0.png",
                                                                                                   "photo1.png"]
    assert all(1 <= len(e["triplets"]) <= 4 and e["kind"] == "image" for e in doc["inputs"])
    rows = list(csv.DictReader(open(out / "triplets.csv")))
    assert len(rows) == sum(len(e["triplets"]) for e in doc["inputs"])
    first = doc["inputs"][0]
    assert rows[0]["predicate"] == first["triplets"][0]["predicate"]
    assert float(rows[0]["score"]) == pytest.approx(first["triplets"][0]["score"])
    assert (out / "config.yaml").exists()


def test_video_sgdet(env, tmp_path):
    out = tmp_path / "out"
    assert _run(env, SGDET_CFG, env["sgdet"], env["video"], out, "--threshold", "0", "--topk", "3") == 0
    assert {"clip.mp4", "clip_timeline.png", "clip_frame.png", "triplets.json", "triplets.csv"} <= set(os.listdir(out))
    assert os.path.getsize(out / "clip.mp4") > 1000
    doc = json.load(open(out / "triplets.json"))
    frames = doc["inputs"][0]["frames"]
    assert [f["frame"] for f in frames] == [0, 2, 4, 6] and all(len(f["triplets"]) == 3 for f in frames)
    assert len(list(csv.DictReader(open(out / "triplets.csv")))) == 12


def test_keyframes(env, tmp_path):
    weights = save_tiny_model(KEYFRAME_CFG, env["root"] / "keyframe")
    out = tmp_path / "out"
    assert _run(env, KEYFRAME_CFG, weights, env["video"], out) == 0
    assert Image.open(out / "clip_keyframes.png").width > 500
    doc = json.load(open(out / "keyframes.json"))
    assert len(doc["inputs"][0]["steps"]) == 4 and len(doc["inputs"][0]["keyframes"]) == 1
    assert [r["keyframe"] for r in csv.DictReader(open(out / "keyframes.csv"))].count("1") == 1


def test_bad_inputs_print_one_error_line(env, tmp_path, capsys):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 3000)
    cases = [(IMAGE_CFG, env["image"], fake, "is not an image"),
             (SGDET_CFG, env["sgdet"], broken, "Cannot read video"),
             (SGDET_CFG, env["image"], env["video"], "not a checkpoint of the STTran model"),
             (IMAGE_CFG, env["image"], tmp_path / "missing.png", "does not exist")]
    for config_file, weights, inputs, message in cases:
        capsys.readouterr()
        assert _run(env, config_file, weights, inputs, tmp_path / "out") == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
