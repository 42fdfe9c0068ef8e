"""TVSum/SumMe loaders on hand-built tiny files (eccv16 h5, anno tsv, mp4) and the demo, read through the catalog."""

import json

import h5py
import numpy as np
import pytest
import torch

from sgg.config import get_cfg
from sgg.data import DatasetCatalog, MetadataCatalog
from sgg.data.datasets.tvsum import load_eccv16_h5, load_tvsum_videos, read_splits, read_tvsum_annotations
from sgg.data.demo import tvsum_demo
from sgg.data.keyframe_mapper import KeyframeMapper, user_summaries_from_scores
from sgg.utils.video_io import VideoError, write_video


def _write_group(h5, key, n_frames=20, n_steps=4, name=None, drop=None, **overrides):
    data = {"features": np.arange(n_steps * 8, dtype=np.float32).reshape(n_steps, 8),
            "gtscore": np.linspace(0.1, 0.9, n_steps).astype(np.float32),
            "user_summary": np.zeros((3, n_frames), np.float32),
            "change_points": np.array([[0, 9], [10, n_frames - 1]], np.int32),
            "n_frame_per_seg": np.array([10, n_frames - 10], np.int32),
            "n_frames": np.int64(n_frames), "picks": np.arange(0, n_frames, n_frames // n_steps, dtype=np.int32)}
    data.update(overrides)
    g = h5.create_group(key)
    for k, v in data.items():
        if k != drop:
            g[k] = v
    if name:
        g["video_name"] = np.bytes_(name)


def _tiny_tvsum(tmp_path, **group_kwargs):
    h5_file = tmp_path / "tiny.h5"
    with h5py.File(h5_file, "w") as h5:
        _write_group(h5, "video_1", name="vidA")
        _write_group(h5, "video_2", n_frames=24, n_steps=6, **group_kwargs)
    anno = tmp_path / "ydata-tvsum50-anno.tsv"
    lines = [f"vidA\tVT\t{','.join(['1'] * 10 + ['5'] * 10)}\n", f"vidA\tVT\t{','.join(['2'] * 20)}\n",
             f"vidB\tGA\t{','.join(['3'] * 24)}\n"]
    anno.write_text("".join(lines))
    return str(h5_file), str(anno)


def test_load_eccv16_h5_and_annotations(tmp_path):
    h5_file, anno = _tiny_tvsum(tmp_path)
    dicts = load_eccv16_h5(h5_file, anno_file=anno)
    assert [d["video_id"] for d in dicts] == ["video_1", "video_2"]
    assert dicts[0]["n_frames"] == 20 and dicts[0]["n_steps"] == 4 and dicts[0]["video_name"] == "vidA"
    assert dicts[0]["user_scores"].shape == (2, 20)  # matched by video_name
    assert dicts[1]["video_name"] == "vidB" and dicts[1]["user_scores"].shape == (1, 24)  # by tsv position
    assert [d["video_id"] for d in load_eccv16_h5(h5_file, keys=["video_2"])] == ["video_2"]
    with pytest.raises(KeyError, match="not videos of"):
        load_eccv16_h5(h5_file, keys=["video_9"])


def test_missing_h5_key_names_file_group_and_key(tmp_path):
    h5_file, _ = _tiny_tvsum(tmp_path, drop="change_points")
    with pytest.raises(KeyError, match=r"tiny.h5' group 'video_2' lacks key\(s\) \['change_points'\]"):
        load_eccv16_h5(h5_file)


def test_wrong_h5_shape_is_explained(tmp_path):
    h5_file, _ = _tiny_tvsum(tmp_path, gtscore=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"group 'video_2' key 'gtscore' has shape \(5,\), expected \(6,\)"):
        load_eccv16_h5(h5_file)
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        load_eccv16_h5(str(tmp_path / "nothere.h5"))
    (tmp_path / "bad.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(OSError, match="bad.h5.*corrupt or not HDF5"):
        load_eccv16_h5(str(tmp_path / "bad.h5"))


def test_anno_and_splits_parsing_errors(tmp_path):
    bad = tmp_path / "anno.tsv"
    bad.write_text("vidA\tVT\t1,2,3\nvidA\tVT\t1,2\n")
    with pytest.raises(ValueError, match=r"anno.tsv:2: video 'vidA' has 2 frame scores"):
        read_tvsum_annotations(str(bad))
    bad.write_text("vidA\t1,2,3\n")
    with pytest.raises(ValueError, match="anno.tsv:1: expected 3 tab-separated fields"):
        read_tvsum_annotations(str(bad))
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps([{"train_keys": ["x.h5/video_1"], "test_keys": ["video_2"]}]))
    assert read_splits(str(splits)) == [{"train": ["video_1"], "test": ["video_2"]}]
    # DSNet's YAML splits beside the expected JSON name are found and read too.
    (tmp_path / "tvsum.yml").write_text("- train_keys: [../data/x.h5/video_3]\n  test_keys: [video_4]\n")
    assert read_splits(str(tmp_path / "tvsum_splits.json")) == [{"train": ["video_3"], "test": ["video_4"]}]
    splits.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match="must be a list"):
        read_splits(str(splits))


def test_h5_mapper_train_window_and_eval_gt(tmp_path):
    h5_file, anno = _tiny_tvsum(tmp_path)
    d = load_eccv16_h5(h5_file, anno_file=anno)[1]
    cfg = get_cfg()
    cfg.INPUT.KEYFRAME.TRAIN_CLIP_STEPS = 4
    out = KeyframeMapper(cfg, is_train=True)(d)
    assert out["features"].shape == (4, 8) and out["target"].shape == (4,)
    first = int(out["picks"][0]) // 4  # picks are every 4th frame: recover the window start
    # The target is gtscore normalised over the whole video, then windowed.
    np.testing.assert_allclose(out["target"].numpy(), np.linspace(0, 1, 6)[first:first + 4], atol=1e-6)
    out = KeyframeMapper(cfg, is_train=False)(d)
    assert out["features"].shape == (6, 8) and set(out["gt"]) >= {"picks", "change_points", "user_summary"}


def _tiny_raw(tmp_path, n_frames=40):
    (tmp_path / "videos").mkdir()
    frames = np.zeros((n_frames, 32, 32, 3), np.uint8)
    frames[n_frames // 2:] = 200  # two visually distinct halves -> one KTS change point
    write_video(str(tmp_path / "videos" / "vidA.mp4"), frames, fps=10)
    scores = [1] * (n_frames // 2) + [5] * (n_frames // 2)
    (tmp_path / "ydata-tvsum50-anno.tsv").write_text(
        "".join(f"vidA\tVT\t{','.join(map(str, scores))}\n" for _ in range(3)))


def test_raw_video_loader_and_mapper(tmp_path):
    _tiny_raw(tmp_path)
    dicts = load_tvsum_videos(str(tmp_path))
    assert len(dicts) == 1 and dicts[0]["h5_key"] == "video_1" and dicts[0]["n_frames"] == 40
    assert load_tvsum_videos(str(tmp_path), keys=["video_1"])[0]["video_id"] == "vidA"
    cfg = get_cfg()
    cfg.INPUT.KEYFRAME.SIZE = 16
    out = KeyframeMapper(cfg, is_train=False)(dicts[0])
    assert out["frames"].dtype == torch.uint8 and out["frames"].shape == (8, 3, 16, 16)  # 4 s at 2 fps
    assert out["picks"].tolist() == [0, 5, 10, 15, 20, 25, 30, 35]
    np.testing.assert_allclose(out["target"].numpy(), [0] * 4 + [1] * 4)
    gt = out["gt"]
    np.testing.assert_array_equal(gt["change_points"], [[0, 19], [20, 39]])  # KTS finds the cut
    # 15 % of 40 frames = 6: no 20-frame shot fits, so every annotator's summary is empty.
    assert gt["user_summary"].shape == (3, 40) and gt["user_summary"].sum() == 0


def test_corrupt_and_missing_raw_video_errors(tmp_path):
    _tiny_raw(tmp_path)
    d = load_tvsum_videos(str(tmp_path))[0]
    (tmp_path / "videos" / "vidA.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(VideoError, match=r"Cannot open video '.*vidA.mp4'"):
        KeyframeMapper(get_cfg(), is_train=False)(d)
    (tmp_path / "videos" / "vidA.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=r"Video 'vidA' .* not found as vidA.mp4"):
        load_tvsum_videos(str(tmp_path))


def test_user_summaries_from_scores_hand_case():
    scores = np.array([[1, 1, 5, 5, 1, 1, 1, 1, 1, 1], [5, 5, 1, 1, 1, 1, 1, 1, 1, 1]])
    segments = np.array([[0, 1], [2, 3], [4, 9]])
    summaries = user_summaries_from_scores(scores, segments, ratio=0.2)  # capacity 2 frames
    np.testing.assert_array_equal(summaries[0], [0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(summaries[1], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])


def test_demo_generated_on_first_use_in_real_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    # A smaller demo keeps the test fast; the files and the code path are the full demo's.
    monkeypatch.setitem(tvsum_demo.DEMO_CONFIG, "num_videos", 5)
    monkeypatch.setitem(tvsum_demo.DEMO_CONFIG, "duration_s", (6, 8))
    test_dicts = DatasetCatalog.get("demo_tvsum_split0_test")
    root = tmp_path / "demo" / "tvsum"
    assert (root / "eccv16_dataset_tvsum_google_pool5.h5").is_file() and (root / "ydata-tvsum50-anno.tsv").is_file()
    assert len(list((root / "videos").glob("*.mp4"))) == 5
    train_dicts = DatasetCatalog.get("demo_tvsum_split0_train")
    assert len(test_dicts) == 1 and len(train_dicts) == 4
    assert {d["video_id"] for d in test_dicts}.isdisjoint({d["video_id"] for d in train_dicts})
    assert all(d["user_scores"].shape == (20, d["n_frames"]) for d in test_dicts + train_dicts)
    meta = MetadataCatalog.get("demo_tvsum_raw_split0_test")
    assert meta.evaluator_type == "keyframe" and meta.mapper == "KeyframeMapper" and meta.f1_reduction == "avg"
    raw = DatasetCatalog.get("demo_tvsum_raw_split0_test")
    assert raw[0]["video_name"] == test_dicts[0]["video_name"]  # same video through both paths
    with h5py.File(root / "eccv16_dataset_tvsum_google_pool5.h5") as h5:
        g = h5[test_dicts[0]["h5_key"]]
        assert g["features"].shape == (g["picks"].shape[0], 1024)
        # Annotators score interesting (disc) shots higher: their scores correlate with the drawn importance.
        assert g["user_summary"].shape == (20, int(g["n_frames"][()]))


def test_summe_h5_layout_through_the_catalog_uses_max_over_users(tmp_path, monkeypatch):
    from sgg.evaluation import EVALUATOR_REGISTRY

    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    (tmp_path / "summe").mkdir()
    with h5py.File(tmp_path / "summe" / "eccv16_dataset_summe_google_pool5.h5", "w") as h5:
        for k in (1, 2):
            _write_group(h5, f"video_{k}", user_summary=np.eye(3, 20, k, dtype=np.float32))
    (tmp_path / "summe" / "summe_splits.json").write_text(
        json.dumps([{"train_keys": ["video_1"], "test_keys": ["video_2"]}] * 5))
    dicts = DatasetCatalog.get("summe_split0_test")
    assert [d["video_id"] for d in dicts] == ["video_2"] and dicts[0]["user_scores"] is None
    cfg = get_cfg()
    evaluator = EVALUATOR_REGISTRY.get("keyframe")(cfg, "summe_split0_test", None)
    assert evaluator.protocol["f1_reduction"] == "max"
    inputs = [KeyframeMapper(cfg, is_train=False)(dicts[0])]
    evaluator.reset()
    evaluator.process(inputs, [{"scores": torch.tensor([0.9, 0.1, 0.1, 0.1])}])
    assert evaluator.evaluate()["keyframe"]["num_videos"] == 1
