"""VG150 loader: exact decoding of a hand-built h5, filters, malformed-file errors, metadata, demo data."""

import json
import os
import pickle
import threading

import h5py
import numpy as np
import pytest

from sgg.data import DatasetCatalog, MetadataCatalog
from sgg.data.datasets import visual_genome as vg
from sgg.data.demo import visual_genome_demo as demo
from sgg.data.samplers import SAMPLER_REGISTRY

# ---------------------------------------------------------------------------- a tiny, hand-built VG release
# 6 h5 rows; image_data.json also lists corrupted image 1592 (no h5 row), as the real file does.
IMAGES = [  # (image_id, width, height, split)
    (1, 512, 256, 0),  # box scale 0.5
    (2, 300, 2048, 0),  # box scale 2
    (3, 1024, 1024, 2),  # box scale 1
    (4, 1024, 512, 0),  # boxes, no relation
    (5, 1024, 512, 0),  # no box at all
    (6, 1024, 1024, 2),
]
BOXES_1024 = np.array([  # [cx, cy, w, h]
    [100, 100, 40, 20], [101, 60, 51, 30],  # image 1; the odd width exercises x1 = trunc(cx - w / 2)
    [50, 50, 20, 20], [60, 60, 20, 20], [300, 300, 10, 10],  # image 2; the last box leaves the 300 px wide image
    [10, 10, 4, 4], [20, 20, 4, 4],  # image 3
    [50, 50, 10, 10],  # image 4
    [100, 100, 50, 50], [110, 110, 50, 50],  # image 6
], dtype=np.int32)
LABELS = np.array([1, 2, 1, 2, 3, 3, 1, 2, 1, 3])
ATTRIBUTES = np.zeros((10, 10), dtype=np.int64)
ATTRIBUTES[0, :2] = [2, 1]
FIRST_BOX = np.array([0, 2, 5, 7, -1, 8])
LAST_BOX = np.array([1, 4, 6, 7, -1, 9])
RELATIONSHIPS = np.array([[0, 1], [2, 3], [2, 3], [3, 4], [6, 5], [8, 9]])  # global box indices
PREDICATES = np.array([2, 1, 2, 1, 1, 2])
FIRST_REL = np.array([0, 1, 4, -1, -1, 5])
LAST_REL = np.array([0, 3, 4, -1, -1, 5])
VOCAB = {"label_to_idx": {"cat": 1, "dog": 2, "tree": 3}, "predicate_to_idx": {"on": 1, "near": 2},
         "attribute_to_idx": {"red": 1, "furry": 2}}


def write_tiny_vg(root, **overrides):
    """Write the tiny release under ``root``; ``overrides`` replace (or, with None, delete) h5 keys."""
    os.makedirs(root, exist_ok=True)
    arrays = {"labels": LABELS[:, None], "boxes_1024": BOXES_1024, "attributes": ATTRIBUTES,
              "img_to_first_box": FIRST_BOX, "img_to_last_box": LAST_BOX, "relationships": RELATIONSHIPS,
              "predicates": PREDICATES[:, None], "img_to_first_rel": FIRST_REL, "img_to_last_rel": LAST_REL,
              "split": np.array([s for *_, s in IMAGES])}
    arrays.update(overrides)
    with h5py.File(os.path.join(root, vg.VG_H5_FILE), "w") as f:
        for key, value in arrays.items():
            if value is not None:
                f[key] = value
    with open(os.path.join(root, vg.VG_DICTS_FILE), "w") as f:
        json.dump(VOCAB, f)
    entries = [{"image_id": i, "width": w, "height": h, "url": "", "coco_id": None, "flickr_id": None}
               for i, w, h, _ in IMAGES]
    entries.insert(2, {"image_id": 1592, "width": 10, "height": 10, "url": "", "coco_id": None, "flickr_id": None})
    with open(os.path.join(root, vg.VG_IMAGE_DATA_FILE), "w") as f:
        json.dump(entries, f)
    return str(root)


def load(root, split, **kwargs):
    kwargs.setdefault("num_val_images", 1)
    return vg.load_vg_dicts(root, split, dataset_name="tiny", **kwargs)


def test_decodes_boxes_labels_relations_exactly(tmp_path):
    root = write_tiny_vg(tmp_path)
    (val,) = load(root, "val")  # the first train image
    assert val["image_id"] == 1 and (val["width"], val["height"]) == (512, 256)
    assert val["file_name"] == os.path.join(root, "VG_100K", "1.jpg")
    # [100,100,40,20] -> [80,90,120,110] * 0.5; [101,60,51,30] -> x1 = trunc(75.5) = 75 -> [75,45,126,75] * 0.5
    np.testing.assert_array_equal(val["boxes"], np.array([[40, 45, 60, 55], [37.5, 22.5, 63, 37.5]], np.float32))
    assert val["boxes"].dtype == np.float32
    np.testing.assert_array_equal(val["labels"], [0, 1])
    assert val["labels"].dtype == np.int64
    np.testing.assert_array_equal(val["relations"], [[0, 1, 1]])
    np.testing.assert_array_equal(val["attributes"][0], [1, 0] + [-1] * 8)
    assert val["attributes"].shape == (2, 10) and val["dataset_name"] == "tiny"

    (train,) = load(root, "train")  # image 4 has no relation, image 5 no box
    assert train["image_id"] == 2
    # scale 2; the third box [295,295,305,305]*2 is clipped to x <= W - 1 = 299
    np.testing.assert_array_equal(train["boxes"], [[80, 80, 120, 120], [100, 100, 140, 140], [299, 590, 299, 610]])
    np.testing.assert_array_equal(train["relations"], [[0, 1, 0], [0, 1, 1], [1, 2, 0]])  # global 2..4 -> local 0..2

    test = load(root, "test")
    assert [d["image_id"] for d in test] == [3, 6]
    np.testing.assert_array_equal(test[0]["boxes"], [[8, 8, 12, 12], [18, 18, 22, 22]])
    np.testing.assert_array_equal(test[0]["relations"], [[1, 0, 0]])


def _dicts_as_values(dicts):
    """Comparable contents (array values and dtypes; file names without the root)."""
    return [{k: (v.tolist(), v.dtype) if isinstance(v, np.ndarray) else os.path.basename(v) if k == "file_name" else v
             for k, v in d.items()} for d in dicts]


def test_mapped_and_h5py_reads_give_the_same_dicts(tmp_path):
    # Contiguous datasets are gathered from the file mapped in memory; chunked / compressed ones (and big-endian
    # ones, whose bytes differ) are read through h5py or converted: the same dicts either way.
    plain = write_tiny_vg(tmp_path / "plain")
    other = write_tiny_vg(tmp_path / "chunked")
    path = os.path.join(other, vg.VG_H5_FILE)
    with h5py.File(os.path.join(plain, vg.VG_H5_FILE), "r") as src, h5py.File(path, "w") as dst:
        for key in src:
            value = src[key][()]
            if key == "attributes":
                dst.create_dataset(key, data=value, chunks=(3, 10), compression="gzip")
            elif key == "labels":
                dst.create_dataset(key, data=value.astype(">i4"))  # contiguous, big-endian int32
            else:
                dst.create_dataset(key, data=value, chunks=True)
    mapped = vg._read_h5(path, 1024, None, mapped=vg._MAPPED_KEYS)
    assert mapped["attributes"].flags.writeable and not mapped["labels"].flags.writeable  # read / mapped
    assert not vg._read_h5(os.path.join(plain, vg.VG_H5_FILE), 1024, None, mapped=vg._MAPPED_KEYS)[
        "attributes"].flags.writeable
    for split in ("train", "val", "test"):
        for kwargs in ({}, {"filter_empty_rels": False}):
            assert _dicts_as_values(load(plain, split, **kwargs)) == _dicts_as_values(load(other, split, **kwargs))
    h5 = os.path.join(plain, vg.VG_H5_FILE)
    assert vg.read_vg_h5(h5)["attributes"].flags.writeable  # the public reader still returns owned arrays


def test_mapped_block_past_the_end_of_the_file_names_the_key(tmp_path, monkeypatch):
    # HDF5 itself refuses a truncated file when opening it (test_truncated_h5); a file cut after that is caught by
    # the mapped read's own bounds check instead of a crash.
    root = write_tiny_vg(tmp_path)
    real_get = vg._FileMap.get

    def cut_short(self):
        buffer = real_get(self)
        self.size = 2100  # as if the file ended inside 'boxes_1024'
        return buffer

    monkeypatch.setattr(vg._FileMap, "get", cut_short)
    with pytest.raises(vg.VGFormatError, match=r"VG-SGG-with-attri.h5': key '\w+' cannot be read.*runs past the end"):
        load(root, "train")


def test_image_list_fast_parse_matches_json_and_falls_back(tmp_path, monkeypatch):
    root = write_tiny_vg(tmp_path)
    path = os.path.join(root, vg.VG_IMAGE_DATA_FILE)

    def parse_with_json_only(p):
        with monkeypatch.context() as m:
            m.setattr(vg, "_parse_image_info_typed", lambda _p: None)
            return vg._parse_image_info(p)

    def same(a, b):
        for field in ("image_ids", "widths", "heights"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert getattr(a, field).dtype == getattr(b, field).dtype == np.int64

    typed = vg._parse_image_info_typed(path)
    assert typed is not None and typed.image_ids.tolist() == [1, 2, 3, 4, 5, 6]
    same(typed, parse_with_json_only(path))
    entries = json.load(open(path))
    entries[0]["width"] = 512.0  # not a JSON integer: msgspec refuses it, json + numpy accept it as before
    entries[3]["extra"] = {"nested": [1, 2, {"width": 5}]}  # unknown keys of any shape are skipped
    json.dump(entries, open(path, "w"))
    assert vg._parse_image_info_typed(path) is None
    same(vg._parse_image_info(path), parse_with_json_only(path))
    assert vg._parse_image_info(path).widths.tolist() == [512, 300, 1024, 1024, 1024, 1024]
    with open(path, "w") as f:  # a duplicate key: the last wins in both parsers
        f.write('[{"image_id": 1, "width": 2, "height": 3, "width": 4}]')
    same(vg._parse_image_info_typed(path), parse_with_json_only(path))
    with open(path, "w") as f:
        f.write('[{"image_id": 1, "width": 2, "height": 3},]')  # malformed: json's error names the file
    assert vg._parse_image_info_typed(path) is None
    with pytest.raises(vg.VGFormatError, match="image_data.json' is not valid JSON"):
        vg._parse_image_info(path)


def test_split_filters(tmp_path):
    root = write_tiny_vg(tmp_path)
    ids = lambda dicts: [d["image_id"] for d in dicts]  # noqa: E731
    assert ids(load(root, "train", filter_empty_rels=False)) == [2, 4]  # still no image without boxes
    assert ids(load(root, "train", num_val_images=0)) == [1, 2]
    assert ids(load(root, "train", num_val_images=0, num_images=1)) == [1]
    empty = load(root, "train", filter_empty_rels=False)[1]
    assert empty["relations"].shape == (0, 3) and empty["relations"].dtype == np.int64


def test_filter_non_overlap_keeps_overlapping_pairs_and_drops_empty_images(tmp_path):
    root = write_tiny_vg(tmp_path)
    dicts = load(root, "train", num_val_images=0, filter_non_overlap=True)
    # image 1's boxes do not overlap -> dropped; in image 2 the pair (1, 2) is disjoint -> removed
    assert [d["image_id"] for d in dicts] == [2]
    np.testing.assert_array_equal(dicts[0]["relations"], [[0, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match="train split only"):
        load(root, "test", filter_non_overlap=True)


def test_filter_duplicate_relations_picks_one_predicate_per_pair_at_random():
    rels = np.array([[0, 1, 3], [0, 1, 5], [1, 0, 3], [2, 1, 4], [0, 1, 7]])
    seen = set()
    for seed in range(60):
        out = vg.filter_duplicate_relations(rels, np.random.default_rng(seed))
        assert out.shape == (3, 3)
        assert len({(s, o) for s, o, _ in out.tolist()}) == 3
        chosen = {(s, o): p for s, o, p in out.tolist()}
        assert chosen[(1, 0)] == 3 and chosen[(2, 1)] == 4 and chosen[(0, 1)] in (3, 5, 7)
        seen.add(chosen[(0, 1)])
    assert seen == {3, 5, 7}
    unique = rels[[0, 2, 3]]
    assert vg.filter_duplicate_relations(unique) is unique


# ---------------------------------------------------------------------------- malformed files
def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(vg.VGFormatError, match="VG-SGG-dicts-with-attri.json' does not exist"):
        load(str(tmp_path), "train")
    root = write_tiny_vg(tmp_path)
    os.remove(os.path.join(root, vg.VG_IMAGE_DATA_FILE))
    with pytest.raises(vg.VGFormatError, match="image_data.json' does not exist.*prepare_vg.py --check"):
        load(root, "train")


@pytest.mark.parametrize("key", ["predicates", "img_to_first_rel", "boxes_1024", "attributes"])
def test_missing_h5_key(tmp_path, key):
    root = write_tiny_vg(tmp_path, **{key: None})
    with pytest.raises(vg.VGFormatError, match=f"VG-SGG-with-attri.h5' has no key '{key}'"):
        load(root, "train")


def test_box_scale_absent_from_file(tmp_path):
    root = write_tiny_vg(tmp_path)
    with pytest.raises(vg.VGFormatError, match="no key 'boxes_512'.*DATASETS.VG.BOX_SCALE"):
        load(root, "train", box_scale=512)


@pytest.mark.parametrize("key,value,message", [
    ("labels", np.array([1, 2, 1, 2, 4, 3, 1, 2, 1, 3])[:, None], r"'labels' holds 1 value\(s\) outside \[1, 3\]"),
    ("predicates", np.array([2, 1, 2, 3, 1, 2])[:, None], r"'predicates' holds 1 value\(s\) outside \[1, 2\]"),
    ("relationships", np.array([[0, 1], [2, 3], [2, 3], [3, 5], [6, 5], [8, 9]]),
     r"'relationships' row 3 = \[3, 5\] points outside its image's boxes"),
    ("img_to_last_box", np.array([1, 10, 6, 7, -1, 9]), r"'img_to_last_box' holds 1 value\(s\) outside \[0, 9\]"),
    ("img_to_first_rel", np.array([0, 1, 4, -1, -1, 6]), r"'img_to_first_rel' holds 1 value\(s\) outside \[0, 5\]"),
    ("split", np.array([0, 0, 2, 0, 0]), r"'img_to_first_box' has shape \(6,\), expected \(5,\)"),
    ("boxes_1024", BOXES_1024[:, :3], r"'boxes_1024' has shape \(10, 3\), expected \(10, 4\)"),
    ("boxes_1024", np.where(np.arange(10)[:, None] == 3, [60, 60, 0, 20], BOXES_1024),
     r"'boxes_1024' holds boxes with w/h <= 0 or a negative centre"),
    ("boxes_1024", np.where(np.arange(10)[:, None] == 3, [-1, 60, 20, 20], BOXES_1024),
     r"'boxes_1024' holds boxes with w/h <= 0 or a negative centre"),
])
def test_out_of_range_and_inconsistent_arrays(tmp_path, key, value, message):
    root = write_tiny_vg(tmp_path, **{key: value})
    with pytest.raises(vg.VGFormatError, match=message) as info:
        load(root, "test" if key == "img_to_first_rel" else "train", num_val_images=0)
    assert vg.VG_H5_FILE in str(info.value)


def test_box_centred_on_the_border_is_valid(tmp_path):
    boxes = BOXES_1024.copy()
    boxes[3] = [0, 0, 20, 20]  # image 2: x1 = y1 = -10, clipped to 0
    root = write_tiny_vg(tmp_path, boxes_1024=boxes)
    (train,) = load(root, "train")
    np.testing.assert_array_equal(train["boxes"][1], [0, 0, 20, 20])


def test_truncated_h5(tmp_path):
    root = write_tiny_vg(tmp_path)
    path = os.path.join(root, vg.VG_H5_FILE)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(vg.VGFormatError, match="VG-SGG-with-attri.h5.*(not a readable HDF5 file|cannot be read)"):
        load(root, "train")


def test_wrong_image_count(tmp_path):
    root = write_tiny_vg(tmp_path)
    path = os.path.join(root, vg.VG_IMAGE_DATA_FILE)
    entries = json.load(open(path))
    json.dump(entries[:-1], open(path, "w"))
    with pytest.raises(vg.VGFormatError, match=r"image_data.json' lists 5 images .* h5 has 6 rows .*108073"):
        load(root, "train")


def test_bad_dictionary_file(tmp_path):
    root = write_tiny_vg(tmp_path)
    path = os.path.join(root, vg.VG_DICTS_FILE)
    json.dump({"label_to_idx": VOCAB["label_to_idx"], "attribute_to_idx": {}}, open(path, "w"))
    with pytest.raises(vg.VGFormatError, match="dicts-with-attri.json' has no key 'predicate_to_idx'"):
        load(root, "train")
    json.dump(dict(VOCAB, label_to_idx={"cat": 1, "dog": 3}), open(path, "w"))
    with pytest.raises(vg.VGFormatError, match=r"'label_to_idx' must map names to the indices 1..2"):
        load(root, "train")


# ---------------------------------------------------------------------------- registration + metadata
def test_registered_dataset_and_lazy_metadata(tmp_path):
    root = write_tiny_vg(tmp_path)
    name = "tiny_vg_test_registration_train"
    vg.register_vg_format_dataset(name, root_fn=lambda: root, split="train", num_val_images=lambda: 1)
    try:
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "scene_graph" and meta.mapper == "SceneGraphMapper"
        assert meta.thing_classes == ["cat", "dog", "tree"]  # read from the files on first access
        assert meta.predicate_classes == ["on", "near"] and meta.attribute_classes == ["red", "furry"]
        assert meta.predicate_frequencies == [2, 1]  # train split without the val image: image 2's relations
        assert meta.flip_predicate_pairs == []
        assert [d["image_id"] for d in DatasetCatalog.get(name)] == [2]
        copy = pickle.loads(pickle.dumps(meta))  # e.g. sent to a spawned worker
        assert copy.thing_classes == meta.thing_classes and copy.evaluator_type == "scene_graph"
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_builtin_names_are_registered():
    for name in ("vg_train", "vg_val", "vg_test", "synthetic_genome_train", "synthetic_genome_test",
                 "demo_vg_train", "demo_vg_val", "demo_vg_test", "demo_synthetic_train", "demo_synthetic_test"):
        assert name in DatasetCatalog
        assert MetadataCatalog.get(name).evaluator_type == "scene_graph"


def test_vg_root_from_config(tmp_path, monkeypatch):
    from sgg.config import get_cfg
    root = write_tiny_vg(tmp_path / "elsewhere")
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path / "empty"))
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.VG.ROOT", root, "DATASETS.VG.NUM_VAL_IMAGES", "0"])
    DatasetCatalog.configure(cfg)
    assert vg.vg_options()["vg_root"] == root
    assert [d["image_id"] for d in DatasetCatalog.get("vg_train")] == [1, 2]
    cfg.merge_from_list(["DATASETS.VG.ROOT", ""])
    DatasetCatalog.configure(cfg)
    with pytest.raises(vg.VGFormatError, match=os.path.join("empty", "vg", vg.VG_DICTS_FILE)):
        DatasetCatalog.get("vg_train")


# ---------------------------------------------------------------------------- demo data
@pytest.fixture(scope="module")
def demo_datasets(tmp_path_factory):
    # One directory per pytest session, shared by every test file that needs the demo (generated once).
    root = str(tmp_path_factory.getbasetemp() / "shared_sgg_datasets")
    for style in ("vg", "synthetic"):
        demo.ensure_demo_dataset(lambda: root, style)
    return root


def test_demo_is_read_by_the_real_loader(demo_datasets, monkeypatch):
    monkeypatch.setenv("SGG_DATASETS", demo_datasets)
    sizes = {}
    for name in ("demo_vg_train", "demo_vg_val", "demo_vg_test", "demo_synthetic_train", "demo_synthetic_test"):
        dicts = DatasetCatalog.get(name)
        sizes[name] = len(dicts)
        for d in dicts:
            assert os.path.isfile(d["file_name"]) and d["file_name"].startswith(demo_datasets)
            assert len(d["relations"]) > 0 and d["labels"].max() < len(demo.DEMO_CLASSES)
            for s, o, p in d["relations"].tolist():  # every predicate is the geometry of the decoded boxes
                assert demo.geometric_predicate(d["boxes"][s], d["boxes"][o]) == demo.DEMO_PREDICATES[p]
    spec = demo.DEMO_SPECS["vg"]
    assert sizes["demo_vg_val"] == spec["num_val"]
    # a few train images were made relation-free (and one box-free): the filters removed them
    assert spec["num_train"] - spec["num_val"] - 12 < sizes["demo_vg_train"] < spec["num_train"] - spec["num_val"]
    assert sizes["demo_vg_test"] > 100 and sizes["demo_synthetic_train"] > 300 and sizes["demo_synthetic_test"] > 80
    train_ids = {d["image_id"] for d in DatasetCatalog.get("demo_vg_train")}
    assert not train_ids & {d["image_id"] for d in DatasetCatalog.get("demo_vg_test")}


def test_demo_metadata_long_tail_and_flip_pairs(demo_datasets, monkeypatch):
    monkeypatch.setenv("SGG_DATASETS", demo_datasets)
    for name in ("demo_vg_train", "demo_synthetic_train"):
        meta = MetadataCatalog.get(name)
        assert meta.predicate_classes == list(demo.DEMO_PREDICATES)
        assert meta.thing_classes == list(demo.DEMO_CLASSES)
        freqs = np.array(meta.predicate_frequencies)
        counted = np.bincount(np.concatenate([d["relations"][:, 2] for d in DatasetCatalog.get(name)]),
                              minlength=len(freqs))
        np.testing.assert_array_equal(freqs, counted)
        assert freqs.min() > 0 and freqs.max() >= 6 * freqs.min()  # long-tailed, but every predicate present
        left, right = demo.DEMO_PREDICATES.index("left of"), demo.DEMO_PREDICATES.index("right of")
        assert meta.flip_predicate_pairs == [[left, right]]


def test_demo_generation_is_deterministic_and_safe_under_concurrency(demo_datasets, tmp_path):
    roots = [str(tmp_path)] * 3
    errors = []

    def generate():
        try:
            demo.ensure_demo_dataset(lambda: roots[0], "synthetic")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(os.listdir(tmp_path / "demo")) == ["synthetic_genome", "synthetic_genome.lock"]  # no temp left
    a, b = os.path.join(demo_datasets, "demo", "synthetic_genome"), str(tmp_path / "demo" / "synthetic_genome")
    with h5py.File(os.path.join(a, vg.VG_H5_FILE)) as fa, h5py.File(os.path.join(b, vg.VG_H5_FILE)) as fb:
        assert set(fa) == set(fb)
        for key in fa:
            np.testing.assert_array_equal(fa[key][()], fb[key][()])
    for image in sorted(os.listdir(os.path.join(a, "VG_100K")))[:20]:
        assert open(os.path.join(a, "VG_100K", image), "rb").read() == \
            open(os.path.join(b, "VG_100K", image), "rb").read()


def test_geometric_predicate_rules():
    gp = demo.geometric_predicate
    assert gp([10, 10, 20, 20], [0, 0, 50, 50]) == "inside" and gp([0, 0, 50, 50], [10, 10, 20, 20]) == "contains"
    assert gp([10, 0, 30, 20], [0, 20, 40, 40]) == "on" and gp([0, 20, 40, 40], [10, 0, 30, 20]) == "under"
    assert gp([10, 0, 30, 10], [0, 30, 40, 40]) == "above" and gp([0, 30, 40, 40], [10, 0, 30, 10]) == "below"
    assert gp([0, 0, 10, 10], [30, 0, 40, 10]) == "left of" and gp([30, 0, 40, 10], [0, 0, 10, 10]) == "right of"
    assert gp([0, 0, 10, 10], [20, 20, 30, 30]) == "near" and gp([0, 0, 10, 10], [60, 20, 70, 30]) == "far from"
    assert gp([0, 0, 10, 10], [5, 5, 15, 15]) is None  # partial overlap: no rule


def _benchmark_module():
    """tools/benchmarks/vg_load.py: its random release writer and its Scene-Graph-Benchmark-style reference loop."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "benchmarks", "vg_load.py")
    spec = importlib.util.spec_from_file_location("vg_load_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_matches_a_per_image_reference_loop_on_random_content(tmp_path):
    # The benchmark's Scene-Graph-Benchmark-style loop is the reference; random content exercises the indexing.
    bench = _benchmark_module()
    bench.write_random_release(str(tmp_path), 600, 6.0, 4.0, seed=3)
    for split in ("train", "val", "test"):
        ours = vg.load_vg_dicts(str(tmp_path), split, num_val_images=50)
        reference = bench.baseline_load(str(tmp_path), split, num_val_images=50)
        assert len(ours) == len(reference) > 40
        for a, b in zip(ours, reference):
            assert (a["image_id"], a["height"], a["width"], a["file_name"]) == \
                (b["image_id"], b["height"], b["width"], b["file_name"])
            for key in ("boxes", "labels", "relations", "attributes"):
                np.testing.assert_array_equal(a[key], b[key])
                assert a[key].dtype == b[key].dtype


def test_decode_truncates_toward_zero_like_the_int32_reference():
    boxes = np.array([[10, 10, 25, 4], [101, 60, 51, 30], [3, 2, 8, 5]], dtype=np.int32)
    # x1 = trunc(cx - w/2): -2.5 -> -2, 75.5 -> 75, -1 -> -1; y1 = 8, 45, trunc(-0.5) = 0; x2 = x1 + w, y2 = y1 + h
    expected = [[-2, 8, 23, 12], [75, 45, 126, 75], [-1, 0, 7, 5]]
    np.testing.assert_array_equal(vg.decode_vg_boxes(boxes), expected)
    np.testing.assert_array_equal(vg.decode_vg_boxes(boxes.astype(np.float64)), expected)


# ---------------------------------------------------------------------------- lazy dataset dicts
def test_dicts_behave_like_a_list_built_on_access(tmp_path):
    root = write_tiny_vg(tmp_path)
    dicts = load(root, "train", num_val_images=0, filter_empty_rels=False)  # images 1, 2, 4
    assert isinstance(dicts, vg.VGDatasetDicts) and len(dicts) == 3 and dicts.num_built == 0
    assert dicts.field_values("image_id") == [1, 2, 4] and dicts.field_values("dataset_name") == ["tiny"] * 3
    assert dicts.num_built == 0  # scalar columns need no dict
    last = dicts[-1]
    assert last["image_id"] == 4 and dicts[np.int64(2)] is last and dicts.num_built == 1
    with pytest.raises(IndexError):
        dicts[3]
    last["note"] = "kept"  # a change made to a dict persists, as in a list
    assert [d["image_id"] for d in dicts] == [1, 2, 4] and dicts[2]["note"] == "kept"
    assert [d["image_id"] for d in dicts[::2]] == [1, 4] and dicts[1:][0] is dicts[1]
    assert [d["image_id"] for d in dicts + [{"image_id": 9}]] == [1, 2, 4, 9]
    assert list(dicts[0]) == ["file_name", "image_id", "height", "width", "boxes", "labels", "relations",
                              "attributes", "dataset_name"]
    assert dicts.field_values("note") == [None, None, "kept"]


def test_set_fields_tags_built_and_unbuilt_dicts(tmp_path):
    root = write_tiny_vg(tmp_path)
    dicts = load(root, "train", num_val_images=0, filter_empty_rels=False)
    first = dicts[0]
    dicts.set_fields({"dataset_name": "other", "loss_weight": 0.5}, overwrite=False)  # setdefault: name kept
    dicts.set_fields({"dataset_type": "real"})
    assert dicts.num_built == 1
    assert dicts.field_values("dataset_type") == ["real"] * 3 and dicts.field_values("loss_weight") == [0.5] * 3
    for d in (first, dicts[1]):
        assert (d["dataset_name"], d["dataset_type"], d["loss_weight"]) == ("tiny", "real", 0.5)
    first["dataset_type"] = "synthetic"
    assert dicts.field_values("dataset_type") == ["synthetic", "real", "real"]


def test_random_access_and_iteration_build_the_same_dicts(tmp_path):
    bench = _benchmark_module()
    bench.write_random_release(str(tmp_path), 600, 6.0, 4.0, seed=5)
    one_by_one = vg.load_vg_dicts(str(tmp_path), "train", num_val_images=50)
    order = np.random.default_rng(0).permutation(len(one_by_one))
    by_index = {int(i): one_by_one[int(i)] for i in order}
    chunks = vg.load_vg_dicts(str(tmp_path), "train", num_val_images=50)
    for i, d in enumerate(chunks):
        assert list(d) == list(by_index[i])
        for key, value in d.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, by_index[i][key])
                assert value.dtype == by_index[i][key].dtype
            else:
                assert value == by_index[i][key]


def test_pickle_sends_only_the_split_and_keeps_changes(tmp_path):
    bench = _benchmark_module()
    bench.write_random_release(str(tmp_path), 2000, 6.0, 4.0, seed=1)
    dicts = vg.load_vg_dicts(str(tmp_path), "test", num_val_images=50)
    dicts[3]["note"] = "kept"
    data = pickle.dumps(dicts)
    with h5py.File(os.path.join(str(tmp_path), vg.VG_H5_FILE), "r") as f:
        whole_attributes = f["attributes"].nbytes
    assert dicts._rows.attributes.nbytes < 0.5 * whole_attributes  # only the split's rows are read ...
    assert len(data) < 0.5 * whole_attributes  # ... and sent (~30 % of the images are test images)
    copy = pickle.loads(data)
    assert len(copy) == len(dicts) and copy.num_built == 1 and copy[3]["note"] == "kept"
    for a, b in zip(copy, dicts):
        for key in ("boxes", "labels", "relations", "attributes"):
            np.testing.assert_array_equal(a[key], b[key])
        assert (a["file_name"], a["image_id"], a["height"], a["width"]) == \
            (b["file_name"], b["image_id"], b["height"], b["width"])


def test_data_loader_helpers_keep_vg_dicts_lazy(tmp_path):
    from sgg.config import get_cfg
    from sgg.data.build import get_dataset_dicts, get_multi_dataset_dicts
    from sgg.data.dicts import ConcatDatasetDicts

    root = write_tiny_vg(tmp_path)
    names = {"tiny_lazy_train": "train", "tiny_lazy_test": "test"}
    for name, split in names.items():
        vg.register_vg_format_dataset(name, root_fn=lambda: root, split=split, num_val_images=lambda: 0)
    try:
        single = get_dataset_dicts(["tiny_lazy_train"])
        assert isinstance(single, vg.VGDatasetDicts) and single.num_built == 0
        both = get_dataset_dicts(list(names))
        assert isinstance(both, ConcatDatasetDicts) and len(both) == 4
        assert [d["dataset_name"] for d in both] == ["tiny_lazy_train"] * 2 + ["tiny_lazy_test"] * 2
        assert [d["image_id"] for d in both[-3:]] == [2, 3, 6] and both[-1] is both[3]

        cfg = get_cfg()
        cfg.merge_from_list(["DATASETS.MULTI_DATASET.ENABLED", True,
                             "DATASETS.MULTI_DATASET.REAL_DATASETS", ("tiny_lazy_train",),
                             "DATASETS.MULTI_DATASET.SYNTHETIC_DATASETS", ("tiny_lazy_test",),
                             "DATASETS.MULTI_DATASET.REAL_SAMPLING_RATIO", 0.5,
                             "DATASETS.MULTI_DATASET.SYNTHETIC_SAMPLING_RATIO", 0.5,
                             "DATASETS.MULTI_DATASET.SYNTHETIC_LOSS_WEIGHT", 0.25, "DATALOADER.REPEAT_THRESHOLD", 0.5])
        mixed = get_multi_dataset_dicts(cfg)
        sampler = SAMPLER_REGISTRY.get("MultiDatasetDynamicSampler")(cfg, dataset_dicts=mixed, batch_size=2, seed=0)
        assert sum(part.num_built for part in mixed._parts) == 0  # tagging and sampling built no dict
        batch = next(iter(sampler))
        assert [mixed[i]["dataset_type"] for i in batch] == ["real", "synthetic"]
        assert [mixed[i]["loss_weight"] for i in batch] == [1.0, 0.25]
        factors = SAMPLER_REGISTRY.get("RepeatFactorTrainingSampler").from_config(
            cfg, mixed, batch_size=2, seed=0)["repeat_factors"]
        as_list = SAMPLER_REGISTRY.get("RepeatFactorTrainingSampler").from_config(
            cfg, list(mixed), batch_size=2, seed=0)["repeat_factors"]
        np.testing.assert_array_equal(factors, as_list)  # walks every dict's relations: builds them
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


# ---------------------------------------------------------------------------- image_data.json cache
def test_image_list_is_cached_beside_the_file_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("SGG_CACHE", raising=False)
    root = write_tiny_vg(tmp_path)
    path = os.path.join(root, vg.VG_IMAGE_DATA_FILE)
    vg.clear_vg_caches()
    first = [d["image_id"] for d in load(root, "test")]
    cache = os.path.join(root, ".image_data.json.sgg-cache.npz")
    assert vg.image_info_cache_files(path)[0] == cache and os.path.isfile(cache)
    assert not [f for f in os.listdir(root) if f.endswith(".tmp")]

    def no_parse(_path):
        raise AssertionError("parsed again")

    vg.clear_vg_caches()  # a new process: only the disk cache is left
    monkeypatch.setattr(vg, "_parse_image_info", no_parse)
    assert [d["image_id"] for d in load(root, "test")] == first
    with pytest.raises(vg.VGFormatError, match=r"lists 6 images .* h5 has 7 rows"):
        vg.load_vg_image_info(path, 7)  # the count check holds for cached lists too
    monkeypatch.undo()

    entries = json.load(open(path))
    entries[3]["image_id"] = 33  # h5 row 2 (image 3, a test image) now has id 33: the stale cache is not used
    json.dump(entries, open(path, "w"))
    os.utime(path, ns=(1, 1))
    vg.clear_vg_caches()
    assert [d["image_id"] for d in load(root, "test")] == [33, 6]

    with open(cache, "wb") as f:
        f.write(b"PK\x03\x04 not a zip")  # damaged by something else: ignored and rewritten
    vg.clear_vg_caches()
    assert [d["image_id"] for d in load(root, "test")] == [33, 6]
    assert np.load(cache)["image_ids"].tolist()[2] == 33
    vg.clear_vg_caches(disk=True)
    assert not os.path.exists(cache)


def test_image_list_cache_falls_back_to_the_user_cache_for_read_only_datasets(tmp_path, monkeypatch):
    root = write_tiny_vg(tmp_path / "dataset")
    monkeypatch.delenv("SGG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_mkstemp = vg.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if os.path.samefile(dir, root):
            raise PermissionError(13, "Permission denied", dir)  # what a read-only dataset directory gives
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(vg.tempfile, "mkstemp", mkstemp)
    vg.clear_vg_caches()
    ids = [d["image_id"] for d in load(root, "test")]
    assert sorted(os.listdir(root)) == sorted([vg.VG_H5_FILE, vg.VG_DICTS_FILE, vg.VG_IMAGE_DATA_FILE])
    cache_dir = tmp_path / "xdg" / "sgg" / "vg_image_data"
    (cached,) = os.listdir(cache_dir)
    assert cached.startswith("image_data.json.") and cached.endswith(".npz")
    monkeypatch.setattr(vg, "_parse_image_info", lambda _path: pytest.fail("parsed again"))
    vg.clear_vg_caches()
    assert [d["image_id"] for d in load(root, "test")] == ids
    vg.clear_vg_caches(disk=True)
    assert not os.listdir(cache_dir)


def test_sgg_cache_variable_keeps_caches_out_of_the_dataset(tmp_path, monkeypatch):
    root = write_tiny_vg(tmp_path / "dataset")
    monkeypatch.setenv("SGG_CACHE", str(tmp_path / "cache"))
    vg.clear_vg_caches()
    load(root, "test")
    assert sorted(os.listdir(root)) == sorted([vg.VG_H5_FILE, vg.VG_DICTS_FILE, vg.VG_IMAGE_DATA_FILE])
    assert len(os.listdir(tmp_path / "cache" / "vg_image_data")) == 1


def test_entry_without_a_key_names_it(tmp_path):
    root = write_tiny_vg(tmp_path)
    path = os.path.join(root, vg.VG_IMAGE_DATA_FILE)
    entries = json.load(open(path))
    del entries[4]["height"]
    json.dump(entries, open(path, "w"))
    vg.clear_vg_caches()
    with pytest.raises(vg.VGFormatError, match=r"image_data.json': entry 3 .* has no key 'height'"):
        load(root, "train")


def test_bulk_built_arrays_are_views_owned_by_their_image(tmp_path):
    bench = _benchmark_module()
    bench.write_random_release(str(tmp_path), 400, 6.0, 4.0, seed=3)
    dicts = vg.load_vg_dicts(str(tmp_path), "train", num_val_images=20)
    reference = [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()}
                 for d in vg.load_vg_dicts(str(tmp_path), "train", num_val_images=20)]
    built = list(dicts)
    assert built[0]["labels"].min() >= 0 and built[0]["attributes"].min() >= -1
    for key in ("labels", "attributes", "relations"):
        assert built[0][key].base is not None  # a view, not a per-image copy
        built[0][key][...] = 7  # changes that dict only
    for d, ref in zip(built[1:], reference[1:]):
        for key in ("boxes", "labels", "attributes", "relations"):
            np.testing.assert_array_equal(d[key], ref[key])
            assert d[key].dtype == ref[key].dtype
    assert dicts[0] is built[0] and (dicts[0]["labels"] == 7).all()
