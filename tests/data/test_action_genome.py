"""Action Genome loader (hand-built pickles in the real layout), restricted unpickler, demo data and mapper."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from sgg.config import get_cfg
from sgg.data import DatasetCatalog, MetadataCatalog, build_mapper
from sgg.data.catalog import DatasetOptionsError
from sgg.data.datasets.action_genome import (
    AG_OBJECT_CLASSES,
    AG_OBJECT_CLASSES_TXT,
    AG_PREDICATES,
    AG_PREDICATES_TXT,
    ActionGenomeFormatError,
    load_action_genome,
    load_restricted_pickle,
)
from sgg.data.demo.action_genome_demo import DEMO_OBJECT_KINDS, ensure_demo_action_genome
from sgg.data.video_mapper import ActionGenomeMapper

P = {name: i for i, name in enumerate(AG_PREDICATES)}
C = {name: i for i, name in enumerate(AG_OBJECT_CLASSES)}


def _obj(cls, xywh, att=("looking_at",), spa=("in_front_of",), con=("holding",), split="train", visible=True):
    return {"class": cls, "bbox": xywh if visible else None, "visible": visible,
            "attention_relationship": list(att) if visible else None,
            "spatial_relationship": list(spa) if visible else None,
            "contacting_relationship": list(con) if visible else None,
            "metadata": {"tag": "x", "set": split}}


def _person(box=(10, 10, 50, 90), size=(64, 96)):
    bbox = np.zeros((0, 4), np.float32) if box is None else np.array([box], np.float32)
    return {"bbox": bbox, "bbox_score": np.ones(len(bbox), np.float32), "bbox_size": size, "bbox_mode": "xyxy",
            "keypoints": np.zeros((len(bbox), 17, 3), np.float32)}


def _write_ag(root, person, objects, write_frames=True):
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    (root / "frames").mkdir(exist_ok=True)
    with open(ann / "person_bbox.pkl", "wb") as f:
        pickle.dump(person, f)
    with open(ann / "object_bbox_and_relationship.pkl", "wb") as f:
        pickle.dump(objects, f)
    (ann / "object_classes.txt").write_text("\n".join(AG_OBJECT_CLASSES_TXT) + "\n")
    (ann / "relationship_classes.txt").write_text("\n".join(AG_PREDICATES_TXT) + "\n")
    (ann / "frame_list.txt").write_text("\n".join(person) + "\n")
    if write_frames:
        for key, entry in person.items():
            (root / "frames" / key).parent.mkdir(parents=True, exist_ok=True)
            w, h = entry["bbox_size"]
            Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / "frames" / key)


@pytest.fixture
def tiny_ag(tmp_path):
    """V1: 4 train frames, stored out of order, one with an invisible second object. V2: 3 train frames, one without a
    person box -> 2 left -> dropped. V3: 4 train frames, one whose only object is 10x10 px. V4: 3 test frames.
    V5: train frames with no visible object only -> dropped."""
    person, objects = {}, {}

    def add(key, obj_list, box=(10, 10, 50, 90)):
        person[key] = _person(box)
        objects[key] = obj_list

    for n in (4, 1, 3, 2):  # out of order on purpose
        extra = [_obj("table", None, visible=False)] if n == 3 else []
        add(f"V1.mp4/{n:06d}.png",
            [_obj("cup/glass/bottle", (30, 40, 12.5, 20), spa=("in_front_of", "beneath"), con=("holding", "touching")),
             *extra])
    for n in (1, 2, 3):
        add(f"V2.mp4/{n:06d}.png", [_obj("chair", (0, 50, 30, 40))], box=None if n == 2 else (10, 10, 50, 90))
    for n in (1, 2, 3, 4):
        add(f"V3.mp4/{n:06d}.png", [_obj("book", (5, 5, 10, 10) if n == 4 else (5, 5, 20, 20))])
    for n in (10, 20, 30):
        add(f"V4.mp4/{n:06d}.png", [_obj("sofa/couch", (0, 60, 60, 30), att=("not_looking_at",),
                                         spa=("behind",), con=("sitting_on",), split="test")])
    for n in (1, 2, 3):
        add(f"V5.mp4/{n:06d}.png", [_obj("laptop", None, visible=False)])
    root = tmp_path / "action_genome"
    _write_ag(root, person, objects)
    return root, person, objects


def test_loader_applies_sttran_filters_and_encodes_relations(tiny_ag):
    root, _, _ = tiny_ag
    videos = load_action_genome(str(root), "train")
    assert [v["video_id"] for v in videos] == ["V1", "V3"]
    v1 = videos[0]
    assert v1["dataset_name"] == "ag_train"
    assert [f["frame_key"] for f in v1["frames"]] == [f"V1.mp4/{n:06d}.png" for n in (1, 2, 3, 4)]
    frame = v1["frames"][2]  # frame 3: the invisible table is skipped
    assert frame["file_name"] == os.path.join(str(root), "frames", "V1.mp4/000003.png")
    assert (frame["height"], frame["width"]) == (96, 64)
    assert frame["boxes"].dtype == np.float32 and frame["labels"].dtype == np.int64
    np.testing.assert_allclose(frame["boxes"], [[10, 10, 50, 90], [30, 40, 42.5, 60]])  # xywh -> xyxy
    assert frame["labels"].tolist() == [0, C["cup/glass/bottle"]] == [0, 10]
    assert frame["relations"].tolist() == [
        [0, 1, P["looking_at"]],  # attention: person -> object
        [1, 0, P["in_front_of"]], [1, 0, P["beneath"]],  # spatial: object -> person
        [0, 1, P["holding"]], [0, 1, P["touching"]],  # contacting: person -> object
    ]
    assert [P["looking_at"], P["in_front_of"], P["holding"]] == [0, 5, 14]
    test = load_action_genome(str(root), "test", dataset_name="x")
    assert [v["video_id"] for v in test] == ["V4"] and test[0]["dataset_name"] == "x"
    assert test[0]["frames"][0]["relations"].tolist() == [[0, 1, 1], [1, 0, 6], [0, 1, 19]]


def test_small_box_filter_and_mini_datasize(tiny_ag):
    root, _, _ = tiny_ag
    v3 = {v["video_id"]: v for v in load_action_genome(str(root), "train")}["V3"]
    assert len(v3["frames"]) == 4
    v3 = {v["video_id"]: v for v in load_action_genome(str(root), "train", filter_small_box=True)}["V3"]
    assert [f["frame_key"] for f in v3["frames"]] == [f"V3.mp4/{n:06d}.png" for n in (1, 2, 3)]
    # mini = the first N keys of person_bbox.pkl (STTran): 4 of V1 + 3 of V2 + 3 of V3 -> V3 has 3 frames left.
    mini = load_action_genome(str(root), "train", datasize="mini", mini_num_frames=10)
    assert {v["video_id"]: len(v["frames"]) for v in mini} == {"V1": 4, "V3": 3}


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "person_bbox.pkl"
    with open(path, "wb") as f:
        pickle.dump({"V.mp4/000001.png": Exploit()}, f)
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to load '.*person_bbox.pkl'.*'(posix|nt)\.system'"):
        load_restricted_pickle(str(path))
    assert not marker.exists()
    # What AG pickles do contain loads fine: dicts, tuples, strings, numpy arrays and scalars.
    good = {"k": {"bbox": np.ones((1, 4), np.float32), "s": np.float32(0.5), "size": (3, 4), "l": ["a", None]}}
    for protocol in (2, 4, 5):
        with open(path, "wb") as f:
            pickle.dump(good, f, protocol=protocol)
        loaded = load_restricted_pickle(str(path))
        np.testing.assert_array_equal(loaded["k"]["bbox"], good["k"]["bbox"])
        assert loaded["k"]["size"] == (3, 4) and loaded["k"]["l"] == ["a", None]


def test_malicious_annotation_file_is_refused_by_the_loader(tiny_ag):
    root, person, _ = tiny_ag

    class Exploit:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    with open(root / "annotations" / "object_bbox_and_relationship.pkl", "wb") as f:
        pickle.dump({k: Exploit() for k in person}, f)
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_action_genome(str(root), "train")


def test_missing_and_malformed_files_give_clear_errors(tiny_ag):
    root, person, objects = tiny_ag
    with pytest.raises(ActionGenomeFormatError, match="annotations not found: '.*nowhere/annotations'"):
        load_action_genome(str(root / "nowhere"), "train")
    (root / "annotations" / "relationship_classes.txt").write_text("lookingat\nnotlookingat\nunsure\nabove\n")
    with pytest.raises(ActionGenomeFormatError, match=r"relationship_classes.txt' must list .* 26 classes.*line 5"):
        load_action_genome(str(root), "train")
    (root / "annotations" / "relationship_classes.txt").write_text("\n".join(AG_PREDICATES_TXT))
    os.remove(root / "annotations" / "person_bbox.pkl")
    with pytest.raises(ActionGenomeFormatError, match="file not found: '.*person_bbox.pkl'"):
        load_action_genome(str(root), "train")
    (root / "annotations" / "person_bbox.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ActionGenomeFormatError, match="Could not unpickle '.*person_bbox.pkl'"):
        load_action_genome(str(root), "train")


@pytest.mark.parametrize("change, message", [
    (lambda o: o["V1.mp4/000001.png"][0].update(spatial_relationship=["next_to"]),
     r"frame 'V1.mp4/000001.png', object 0: unknown spatial predicate 'next_to'. Valid: above, beneath"),
    (lambda o: o["V1.mp4/000001.png"][0].update(attention_relationship=["holding"]),
     "unknown attention predicate 'holding'"),
    (lambda o: o["V1.mp4/000002.png"][0].update(bbox=None),
     r"frame 'V1.mp4/000002.png', object 0 \('cup/glass/bottle'\): visible object without 'bbox'"),
    (lambda o: o["V3.mp4/000001.png"][0].update({"class": "spaceship"}), "unknown object class 'spaceship'"),
    (lambda o: o["V1.mp4/000001.png"][0].update(contacting_relationship=None),
     "'contacting_relationship' must be a list of predicate names, got None"),
    (lambda o: o.pop("V3.mp4/000002.png"),
     "Frame 'V3.mp4/000002.png' of '.*person_bbox.pkl' has no entry in '.*object_bbox_and_relationship.pkl'"),
])
def test_bad_annotation_entries_name_file_frame_and_field(tiny_ag, change, message):
    root, person, objects = tiny_ag
    change(objects)
    _write_ag(root, person, objects, write_frames=False)
    with pytest.raises(ActionGenomeFormatError, match=message):
        load_action_genome(str(root), "train")


def test_registered_names_follow_the_config(tiny_ag, monkeypatch):
    root, _, _ = tiny_ag
    cfg = get_cfg()
    cfg.DATASETS.AG.ROOT = str(root)
    cfg.TEST.RELATION.MODE = "predcls"
    DatasetCatalog.configure(cfg)
    assert len({v["video_id"]: v for v in DatasetCatalog.get("ag_train")}["V3"]["frames"]) == 4
    cfg.TEST.RELATION.MODE = "sgdet"  # "auto": STTran filters small boxes for SGCls / SGDet
    with pytest.raises(DatasetOptionsError, match=r"DATASETS.AG.\*, TEST.RELATION.MODE.*filter_small_box: False in "
                       r"effect, True in the config"):
        DatasetCatalog.check_configured(cfg)  # what the loaders and the evaluator check
    DatasetCatalog.configure(cfg)
    DatasetCatalog.check_configured(cfg)
    assert len({v["video_id"]: v for v in DatasetCatalog.get("ag_train")}["V3"]["frames"]) == 3
    cfg.DATASETS.AG.FILTER_SMALL_BOX = "maybe"
    with pytest.raises(ValueError, match="FILTER_SMALL_BOX must be 'auto', 'on' or 'off'"):
        DatasetCatalog.configure(cfg)
    cfg.DATASETS.AG.FILTER_SMALL_BOX = "auto"
    cfg.DATASETS.AG.DATASIZE = "huge"
    with pytest.raises(ValueError, match="DATASIZE must be 'large' or 'mini'"):
        DatasetCatalog.configure(cfg)
    DatasetCatalog.reset_options()
    meta = MetadataCatalog.get("ag_train")
    assert len(meta.thing_classes) == 36 and meta.thing_classes[0] == "person" and "sofa/couch" in meta.thing_classes
    assert len(meta.predicate_classes) == 26 and meta.predicate_classes[P["sitting_on"]] == "sitting_on"
    assert (meta.attention_predicates, meta.spatial_predicates) == (list(range(3)), list(range(3, 9)))
    assert meta.contacting_predicates == list(range(9, 26))
    assert (meta.evaluator_type, meta.mapper) == ("video_scene_graph", "ActionGenomeMapper")
    monkeypatch.setenv("SGG_DATASETS", str(root.parent / "empty"))
    with pytest.raises(ActionGenomeFormatError, match="empty/action_genome/annotations"):
        DatasetCatalog.get("ag_test")


# ---------------------------------------------------------------------------------------------------- demo data
@pytest.fixture(scope="module")
def demo_datasets(tmp_path_factory):
    """A temporary $SGG_DATASETS shared by this module's demo tests (the demo is generated once)."""
    return tmp_path_factory.mktemp("sgg_datasets")


@pytest.fixture
def demo_root(demo_datasets, monkeypatch):
    monkeypatch.setenv("SGG_DATASETS", str(demo_datasets))
    yield ensure_demo_action_genome()


def test_demo_is_written_in_the_ag_layout_and_read_by_the_real_loader(demo_root, demo_datasets):
    tmp_path = demo_datasets
    assert demo_root == str(tmp_path / "demo" / "action_genome")
    ann = os.path.join(demo_root, "annotations")
    assert sorted(os.listdir(ann)) == ["frame_list.txt", "object_bbox_and_relationship.pkl", "object_classes.txt",
                                       "person_bbox.pkl", "relationship_classes.txt"]
    assert not [d for d in os.listdir(tmp_path / "demo") if d.startswith(".")]  # the temporary directory is gone
    keys = open(os.path.join(ann, "frame_list.txt")).read().split()
    assert all(os.path.isfile(os.path.join(demo_root, "frames", k)) for k in keys)
    person = load_restricted_pickle(os.path.join(ann, "person_bbox.pkl"))
    assert person[keys[0]]["bbox"].shape == (1, 4) and person[keys[0]]["bbox_mode"] == "xyxy"
    train, test = DatasetCatalog.get("demo_ag_train"), DatasetCatalog.get("demo_ag_test")
    assert len(train) == 40 and len(test) == 12
    # 6-10 frames per video; the 2-frame videos are dropped, and so is one frame per split without a person box.
    assert sorted(len(v["frames"]) for v in train + test)[:2] == [5, 6] and max(len(v["frames"]) for v in train) <= 10
    used = {int(c) for v in train for f in v["frames"] for c in f["labels"][1:]}
    assert used <= {C[name] for name in DEMO_OBJECT_KINDS} and len(used) >= 6
    with Image.open(train[0]["frames"][0]["file_name"]) as im:
        assert im.size == (train[0]["frames"][0]["width"], train[0]["frames"][0]["height"])


def test_demo_relations_follow_the_drawn_geometry(demo_root):
    """The labels are a function of the boxes: what a model has to learn is in the pixels."""
    checked = 0
    for video in DatasetCatalog.get("demo_ag_train"):
        for frame in video["frames"]:
            person = frame["boxes"][0]
            for sub, obj, pred in frame["relations"]:
                box = frame["boxes"][max(sub, obj)]
                overlap = min(box[2], person[2]) > max(box[0], person[0]) and \
                    min(box[3], person[3]) > max(box[1], person[1])
                name = AG_PREDICATES[pred]
                if name in ("holding", "touching", "sitting_on", "in_front_of", "behind"):
                    assert overlap, (frame["frame_key"], name)
                if name in ("not_contacting", "above", "on_the_side_of"):
                    assert not overlap, (frame["frame_key"], name)
                if name == "above":
                    assert box[3] < person[1] + 0.25 * (person[3] - person[1])
                checked += 1
    assert checked > 500


def test_demo_generation_is_deterministic_and_not_repeated(demo_root, tmp_path, monkeypatch):
    other = ensure_demo_action_genome(str(tmp_path / "copy"))
    for name in ("person_bbox.pkl", "object_bbox_and_relationship.pkl"):
        a = open(os.path.join(demo_root, "annotations", name), "rb").read()
        assert a == open(os.path.join(other, "annotations", name), "rb").read()
    stamp = os.path.getmtime(os.path.join(demo_root, "annotations", "person_bbox.pkl"))
    assert ensure_demo_action_genome() == demo_root
    assert os.path.getmtime(os.path.join(demo_root, "annotations", "person_bbox.pkl")) == stamp


# ------------------------------------------------------------------------------------------------------- mapper
def test_mapper_resizes_frames_and_scales_boxes(demo_root):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 192, 200
    video = DatasetCatalog.get("demo_ag_test")[0]
    h, w = video["frames"][0]["height"], video["frames"][0]["width"]
    out = build_mapper(cfg, "demo_ag_test", is_train=False)(video)
    scale = min(192 / min(h, w), 200 / max(h, w))
    assert out["images"].dtype == torch.uint8
    assert tuple(out["images"].shape) == (len(video["frames"]), 3, round(h * scale), round(w * scale))
    assert out["image_scale"] == pytest.approx(scale) and out["flipped"] is False
    for src, dst in zip(video["frames"], out["frames"]):
        np.testing.assert_array_equal(dst["boxes"], src["boxes"])  # original pixels kept
        torch.testing.assert_close(dst["gt_boxes"], torch.from_numpy(src["boxes"]) * scale)
    assert "gt_boxes" not in video["frames"][0]  # the dataset dict is untouched
    # The person (shirt colour) is where its scaled box says.
    x1, y1, x2, y2 = out["frames"][0]["gt_boxes"][0].round().int().tolist()
    centre = out["images"][0, :, (y1 + 3 * y2) // 4, (x1 + x2) // 2]
    assert centre[2] > centre[0] + 60  # blue shirt


def test_mapper_flips_whole_video_consistently(demo_root):
    video = DatasetCatalog.get("demo_ag_train")[0]
    plain = ActionGenomeMapper(is_train=False, min_size=video["frames"][0]["height"], max_size=0)(video)
    flipped = ActionGenomeMapper(is_train=True, min_size=video["frames"][0]["height"], max_size=0, flip_prob=1.0)(video)
    assert flipped["flipped"] is True
    torch.testing.assert_close(flipped["images"], plain["images"].flip(-1))
    w = video["frames"][0]["width"]
    for a, b in zip(plain["frames"], flipped["frames"]):
        np.testing.assert_allclose(b["boxes"][:, [0, 2]], w - a["boxes"][:, [2, 0]])
        torch.testing.assert_close(b["gt_boxes"][:, [1, 3]], a["gt_boxes"][:, [1, 3]])
        np.testing.assert_array_equal(b["relations"], a["relations"])


def test_mapper_errors_name_the_frame(demo_root, tmp_path):
    video = dict(DatasetCatalog.get("demo_ag_test")[0])
    mapper = ActionGenomeMapper(is_train=False, min_size=64, max_size=100)
    missing = dict(video["frames"][0], file_name=str(tmp_path / "gone.png"))
    with pytest.raises(FileNotFoundError, match="Frame '.*gone.png' of video .* not found"):
        mapper(dict(video, frames=[missing]))
    wrong = dict(video["frames"][0], height=video["frames"][0]["height"] + 1)
    with pytest.raises(ValueError, match="annotation .*bbox_size"):
        mapper(dict(video, frames=[wrong]))
