"""SSv2 loader + demo twin: generated in the real layout, read back through the catalog, clear errors."""

import json
import os

import numpy as np
import pytest

from sgg.data import DatasetCatalog, MetadataCatalog
from sgg.data.datasets.ssv2 import fill_template, load_ssv2_json
from sgg.data.demo.ssv2_demo import DEMO_TEMPLATES, generate_ssv2_demo
from sgg.utils.video_io import read_video, video_info


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """One small demo set (1 clip per template/object) shared by the tests of this module."""
    return generate_ssv2_demo(str(tmp_path_factory.mktemp("ssv2") / "ssv2"), train_variants=1)


def test_fill_template():
    assert fill_template("Holding [something] next to [something]", ["potato", "vicks vaporub bottle"]) == \
        "Holding potato next to vicks vaporub bottle"
    assert fill_template("[Something] falling like a rock", ["red ball"]) == "Red ball falling like a rock"
    assert fill_template("Putting [something] on [something]", ["cup"]) is None  # slot / placeholder mismatch


def test_demo_layout_is_the_real_one(demo_root):
    with open(os.path.join(demo_root, "labels.json")) as f:
        labels = json.load(f)
    # Real labels.json: template text without brackets -> id as a string.
    assert labels["Pushing something from left to right"] == "0" and len(labels) == len(DEMO_TEMPLATES)
    with open(os.path.join(demo_root, "train.json")) as f:
        train = json.load(f)
    assert set(train[0]) == {"id", "label", "template", "placeholders"}
    assert train[0]["label"] == "pushing red ball from left to right"
    info = video_info(os.path.join(demo_root, "videos", f"{train[0]['id']}.webm"))
    assert info["codec"] == "vp9" and info["fps"] == pytest.approx(12.0) and (info["height"], info["width"]) == (48, 64)


def test_demo_motion_matches_caption(demo_root):
    """The object of a 'left to right' clip really moves right; of 'falling' really moves down."""
    dicts = {d["caption"]: d for d in load_ssv2_json(demo_root, "train")}

    def centroid_track(caption):
        frames, _ = read_video(dicts[caption]["file_name"], fps=8)
        red = (frames[..., 0].astype(int) - frames[..., 2].astype(int)) > 80  # the red ball's pixels
        ys, xs = [], []
        for mask in red:
            yy, xx = np.nonzero(mask)
            ys.append(yy.mean())
            xs.append(xx.mean())
        return np.array(xs), np.array(ys)

    xs, _ = centroid_track("Pushing red ball from left to right")
    assert xs[-1] - xs[0] > 25
    xs, _ = centroid_track("Pushing red ball from right to left")
    assert xs[0] - xs[-1] > 25
    _, ys = centroid_track("Red ball falling like a rock")
    assert ys[-1] - ys[0] > 20 and np.all(np.diff(ys) >= -1)


def test_catalog_generates_demo_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    dicts = DatasetCatalog.get("demo_ssv2_validation")
    assert os.path.isfile(tmp_path / "demo" / "ssv2" / "train.json")
    assert len(dicts) == 8
    d = dicts[0]
    assert set(d) >= {"file_name", "video_id", "caption", "label_id", "template", "placeholders"}
    assert os.path.isfile(d["file_name"]) and d["file_name"].endswith(f"{d['video_id']}.webm")
    assert MetadataCatalog.get("demo_ssv2_train").mapper == "TextToVideoMapper"
    assert MetadataCatalog.get("demo_ssv2_train").evaluator_type == "video_generation"
    train_ids = {d["video_id"] for d in DatasetCatalog.get("demo_ssv2_train")}
    assert len(train_ids) == 32 and not train_ids & {d["video_id"] for d in dicts}


def test_real_names_read_sgg_datasets_ssv2(tmp_path, monkeypatch, demo_root):
    os.symlink(demo_root, tmp_path / "ssv2")
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    dicts = DatasetCatalog.get("ssv2_train")
    assert dicts[0]["file_name"].startswith(str(tmp_path / "ssv2"))


def _write_split(root, entries, labels=None):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "labels.json"), "w") as f:
        json.dump(labels or {"Pushing something from left to right": "0"}, f)
    with open(os.path.join(root, "train.json"), "w") as f:
        json.dump(entries, f)
    return root


def test_missing_key_is_named(tmp_path):
    entry = {"id": "7", "label": "x", "template": "Pushing [something] from left to right"}
    root = _write_split(str(tmp_path), [entry])
    with pytest.raises(KeyError, match=r"train\.json' entry 0 \(id '7'\) lacks key\(s\) \['placeholders'\]"):
        load_ssv2_json(root, "train")


def test_unknown_template_is_named(tmp_path):
    root = _write_split(str(tmp_path), [{"id": "7", "label": "x", "template": "Spinning [something]",
                                         "placeholders": ["x"]}])
    with pytest.raises(KeyError, match=r"template 'Spinning \[something\]' is not in .*labels\.json"):
        load_ssv2_json(root, "train")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"labels file '.*labels\.json' not found.*README_ssv2"):
        load_ssv2_json(str(tmp_path), "train")
    with pytest.raises(ValueError, match="Unknown SSv2 split 'test'"):
        load_ssv2_json(str(tmp_path), "test")
