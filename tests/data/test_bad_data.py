"""Issue #28 on data: malformed or damaged dataset files stop a run with one ``error:`` line naming the file (and the
frame / object / key), exit code 2, no traceback — also when the file is read in a DataLoader worker — and the
dataset files are never modified."""

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from sgg.data.datasets.action_genome import ActionGenomeFormatError, load_action_genome
from sgg.data.datasets.ssv2 import load_ssv2_json
from sgg.utils.errors import DataFormatError
from sgg.utils.video_io import VideoError, read_video, write_video
from tests.data.test_action_genome import _obj, _person, _write_ag
from tests.data.test_tvsum import _tiny_tvsum
from tests.data.test_visual_genome import IMAGES, write_tiny_vg
from tests.engine.helpers import REPO, assert_kept, assert_one_error_line, run_cli, run_cli_subprocess, snapshot

CONFIGS = os.path.join(REPO, "configs")


def _no_checkpoint(out):
    return not out.exists() or not [p for p in os.listdir(out) if p.endswith(".pth") or p == "last_checkpoint"]


# ------------------------------------------------------------------------------------ Visual Genome images
def _vg_with_damaged_image(tmp_path, damage):
    root = write_tiny_vg(tmp_path / "vg")
    os.makedirs(os.path.join(root, "VG_100K"))
    for image_id, *_ in IMAGES:
        Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(os.path.join(root, "VG_100K", f"{image_id}.jpg"))
    bad = os.path.join(root, "VG_100K", "2.jpg")  # a training image (the train split is images 1 and 2)
    if damage == "missing":
        os.remove(bad)
    else:
        data = open(bad, "rb").read()
        open(bad, "wb").write(data[: len(data) // 2])
    return root, bad


def _vg_train_argv(root, out, workers):
    # The frequency baseline trains nothing but runs the real loader + SceneGraphMapper (cheap to build).
    return ["--config-file", os.path.join(CONFIGS, "quick", "speaq_demo_frequency_baseline.yaml"), "OUTPUT_DIR",
            str(out), "DATASETS.TRAIN", '("vg_train",)', "DATASETS.TEST", "()", "DATASETS.TYPE", "",
            "DATASETS.MULTI_DATASET.ENABLED", "False", "DATASETS.VG.ROOT", root, "DATASETS.VG.NUM_VAL_IMAGES", "0",
            "DATALOADER.NUM_WORKERS", str(workers), "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
            "TEST.RELATION.MODE", "predcls"]


@pytest.mark.parametrize("damage, workers", [("missing", 0), ("missing", 2), ("truncated", 2)])
def test_missing_or_truncated_vg_image_at_training_time(tmp_path, damage, workers):
    root, bad = _vg_with_damaged_image(tmp_path, damage)
    before = snapshot(root)
    out = tmp_path / "out"
    r = run_cli(*_vg_train_argv(root, out, workers))
    assert r.returncode == 2
    expected = "does not exist" if damage == "missing" else "cannot be decoded"
    assert_one_error_line(r, f"Image '{bad}' {expected}", "prepare_vg.py --check")
    assert _no_checkpoint(out)
    assert_kept(before, snapshot(root))  # (the loader may add its image-list cache beside the files)


def test_missing_image_in_the_dataloader_workers_of_two_gloo_workers(tmp_path):
    """--num-gpus 2 on CPU: 2 spawned workers, each with a DataLoader worker; the one that hits the missing image
    fails, and the parent prints its message as the one line (the error crossed two process boundaries)."""
    root, bad = _vg_with_damaged_image(tmp_path, "missing")
    out = tmp_path / "out"
    argv = _vg_train_argv(root, out, 1)
    r = run_cli_subprocess(argv[0], argv[1], "--num-gpus", "2", *argv[2:])
    assert r.returncode == 2, r.stderr[-3000:]
    assert_one_error_line(r, f"Image '{bad}' does not exist", last=False)
    assert _no_checkpoint(out)


# ------------------------------------------------------------------------------------ Action Genome
def _ag(root, change=None):
    person, objects = {}, {}
    for video in ("V1", "V2"):
        for n in range(1, 5):
            key = f"{video}.mp4/{n:06d}.png"
            person[key] = _person()
            objects[key] = [_obj("cup/glass/bottle", (30, 40, 12.5, 20)), _obj("table", (0, 50, 30, 40))]
    if change is not None:
        change(person, objects)
    _write_ag(root, person, objects)
    return root


def _set_object_box(box):
    def change(person, objects):
        objects["V2.mp4/000003.png"][1]["bbox"] = box
    return change


def _set_person_box(box):
    def change(person, objects):
        person["V1.mp4/000002.png"]["bbox"] = np.array([box], np.float32)
    return change


@pytest.mark.parametrize("change, fragments", [
    (_set_object_box((0, float("nan"), 30, 40)),
     ["object_bbox_and_relationship.pkl', frame 'V2.mp4/000003.png', object 1 ('table'): 'bbox' [0.0, nan, 30.0, "
      "40.0] holds NaN/Inf"]),
    (_set_object_box((0, 50, float("inf"), 40)), ["frame 'V2.mp4/000003.png', object 1 ('table')", "holds NaN/Inf"]),
    (_set_person_box((10, 10, float("nan"), 90)),
     ["person_bbox.pkl', frame 'V1.mp4/000002.png': the person box [10.0, 10.0, nan, 90.0] holds NaN/Inf"]),
    (_set_object_box((0, 50, 30)),
     ["object_bbox_and_relationship.pkl', frame 'V2.mp4/000003.png', object 1 ('table'): 'bbox' must be 4 numbers "
      "(x, y, w, h), got shape (3,)"]),
])
def test_action_genome_boxes_must_be_four_finite_numbers(tmp_path, change, fragments):
    root = _ag(tmp_path / "ag", change)
    with pytest.raises(ActionGenomeFormatError) as info:
        load_action_genome(str(root), "train")
    for fragment in fragments:
        assert fragment in str(info.value)


def _sttran_run(root, out):
    return run_cli("--config-file", os.path.join(CONFIGS, "quick", "sttran_demo.yaml"), "OUTPUT_DIR", str(out),
                   "DATASETS.TRAIN", '("ag_train",)', "DATASETS.TEST", "()", "DATASETS.AG.ROOT", str(root),
                   "TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", "2")


class _Payload:
    """Unpickling this would create a file (what a malicious pickle does with os.system & co)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_nan_box_and_malicious_pickle_stop_training_with_one_line(tmp_path):
    root = _ag(tmp_path / "ag", _set_object_box((0, float("nan"), 30, 40)))
    before = snapshot(root)
    r = _sttran_run(root, tmp_path / "out1")  # used to end in a segmentation fault (exit 139) at training time
    assert r.returncode == 2
    assert_one_error_line(r, f"'{root / 'annotations' / 'object_bbox_and_relationship.pkl'}', frame "
                             "'V2.mp4/000003.png', object 1 ('table')", "NaN/Inf")
    assert snapshot(root) == before and _no_checkpoint(tmp_path / "out1")

    root = _ag(tmp_path / "ag2")
    marker = tmp_path / "pwned"
    with open(root / "annotations" / "person_bbox.pkl", "wb") as f:
        pickle.dump({"V1.mp4/000001.png": _Payload(str(marker))}, f)
    r = _sttran_run(root, tmp_path / "out2")
    assert r.returncode == 2
    assert_one_error_line(r, f"Refusing to load '{root / 'annotations' / 'person_bbox.pkl'}'", "io.open")
    assert not marker.exists() and _no_checkpoint(tmp_path / "out2")


@pytest.mark.parametrize("loss", ["bce", "margin"])
def test_sttran_with_a_huge_learning_rate_aborts_cleanly_and_keeps_finite_checkpoints(tmp_path, loss):
    """SOLVER.BASE_LR 1e30: the BCE loss used to die in "all elements of input should be between 0 and 1" and the
    margin loss to leave a checkpoint of non-finite weights on disk."""
    import torch

    from sgg.checkpoint.checkpointer import nonfinite_tensors

    root = _ag(tmp_path / "ag")
    out = tmp_path / "out"
    r = run_cli("--config-file", os.path.join(CONFIGS, "quick", "sttran_demo.yaml"), "OUTPUT_DIR", str(out),
                "DATASETS.TRAIN", '("ag_train",)', "DATASETS.TEST", "()", "DATASETS.AG.ROOT", str(root),
                "TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", "12", "SOLVER.BASE_LR", "1e30", "SOLVER.WARMUP_ITERS", "0",
                "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.CLIP_GRADIENTS.ENABLED", "False",
                "MODEL.STTRAN.MULTI_LABEL_LOSS", loss)
    assert r.returncode == 2
    last = (out / "last_checkpoint").read_text()
    assert_one_error_line(r, "weights became non-finite", f"last_checkpoint -> {last}")
    for path in out.glob("*.pth"):
        assert not nonfinite_tensors(torch.load(path, weights_only=True)["model"]), path


# ------------------------------------------------------------------------------------ TVSum, SSv2
def test_truncated_tvsum_h5_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "datasets" / "tvsum"
    folder.mkdir(parents=True)
    h5_file, _ = _tiny_tvsum(folder)
    data = open(h5_file, "rb").read()
    os.remove(h5_file)
    truncated = folder / "eccv16_dataset_tvsum_google_pool5.h5"
    truncated.write_bytes(data[: len(data) // 2])
    before = snapshot(folder)
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path / "datasets"))
    r = run_cli("--config-file", os.path.join(CONFIGS, "tvsum", "keyframe_features.yaml"), "OUTPUT_DIR",
                str(tmp_path / "out"), "DATASETS.TRAIN", '("tvsum",)', "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
                "SOLVER.MAX_ITER", "2", "DATALOADER.NUM_WORKERS", "0")
    assert r.returncode == 2
    assert_one_error_line(r, f"Cannot open h5 '{truncated}'", "truncated file", "re-download or regenerate it")
    assert snapshot(folder) == before and _no_checkpoint(tmp_path / "out")


def _ssv2(root, labels):
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.json").write_text(json.dumps(labels))
    (root / "train.json").write_text(json.dumps([{"id": "7", "label": "pushing a ball from left to right",
                                                  "template": "Pushing [something] from left to right",
                                                  "placeholders": ["a ball"]}]))
    return root


@pytest.mark.parametrize("bad_id", ["twelve", 1.5, None, [3]])
def test_ssv2_labels_with_a_non_integer_id_name_the_file(tmp_path, bad_id):
    root = _ssv2(tmp_path / "ssv2", {"Pushing something from left to right": bad_id})
    with pytest.raises(DataFormatError, match=rf"SSv2 labels file '.*labels\.json': template 'Pushing something from "
                                              rf"left to right' has class id {repr(bad_id).replace('[', '.')}"):
        load_ssv2_json(str(root), "train")
    good = _ssv2(tmp_path / "ok", {"Pushing something from left to right": "12"})
    assert load_ssv2_json(str(good), "train")[0]["label_id"] == 12


def test_ssv2_bad_labels_stop_a_text_to_video_run_with_one_line(tmp_path, monkeypatch):
    root = _ssv2(tmp_path / "datasets" / "ssv2", {"Pushing something from left to right": "twelve"})
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path / "datasets"))
    r = run_cli("--config-file", os.path.join(CONFIGS, "quick", "t2v_demo.yaml"), "OUTPUT_DIR", str(tmp_path / "out"),
                "DATASETS.TRAIN", '("ssv2_train",)', "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
                "SOLVER.MAX_ITER", "2", "DATALOADER.NUM_WORKERS", "0", "MODEL.T2V.PRETRAINED_DIR", "")
    assert r.returncode == 2
    assert_one_error_line(r, f"SSv2 labels file '{root / 'labels.json'}'", "has class id 'twelve'")


# ------------------------------------------------------------------------------------ short clips
def test_a_truncated_clip_is_refused_not_padded(tmp_path):
    from sgg.config import get_cfg
    from sgg.data.t2v_mapper import TextToVideoMapper

    frames = np.random.RandomState(0).randint(0, 255, (8, 32, 48, 3)).astype(np.uint8)
    clip = write_video(str(tmp_path / "clip.webm"), frames, fps=4)
    assert len(read_video(clip)[0]) == 8
    data = open(clip, "rb").read()
    short = tmp_path / "short.webm"
    short.write_bytes(data[: int(len(data) * 0.4)])  # the header still promises 8 frames (2 s at 4 fps)
    with pytest.raises(VideoError, match=rf"Video '{short}' decoded [1-3] of the 8 frames its header declares; the "
                                         "file is truncated"):
        read_video(str(short))
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "quick", "t2v_demo.yaml"))
    mapper = TextToVideoMapper(cfg, is_train=True)
    entry = {"file_name": str(short), "video_id": "7", "caption": "pushing a ball", "label": "x", "label_id": 0}
    with pytest.raises(VideoError, match="short.webm' decoded"):
        mapper(entry)
    assert mapper(dict(entry, file_name=clip))["video"].shape[0] == cfg.INPUT.T2V.NUM_FRAMES
