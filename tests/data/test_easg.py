"""EASG loader on the real layout (tests/data/easg_layout.py), its errors on malformed files, the demo twin and the
mapper."""

import os
import pickle

import numpy as np
import pytest
import torch

from sgg.config import get_cfg
from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.data.datasets.easg import EASGFormatError, easg_vocabulary, load_easg, read_vocabulary
from sgg.data.easg_mapper import EASGMapper
from sgg.utils.pickles import RefusedPickleError
from tests.data.easg_layout import A1, A2, OBJECTS, aid, write_easg


def test_loader_reads_the_real_layout(tmp_path):
    root = write_easg(tmp_path / "easg")
    train = {g["graph_id"]: g for g in load_easg(root, "train")}
    # one dict per (graph_uid, verb): the disagreeing annotators of clipC give two graphs, the agreeing ones of clipA
    # one graph whose objects are the union of both annotators' rows
    assert sorted(train) == ["clipA_000020", "clipA_000060", "clipC_000040", "clipC_000040#take"]
    g = train["clipA_000020"]
    assert g["clip_uid"] == "clipA" and g["verb"] == 0 and g["dataset_name"] == "easg_train"
    table = g["objects"][1]
    assert OBJECTS[table["category_id"]] == "TABLE" and table["relations"] == [1, 2]  # two rows merged: from + on
    assert g["triplets"].tolist() == [[0, 1, 0], [0, 2, 1], [0, 2, 2]]
    knife = g["objects"][0]
    assert knife["boxes"]["pnr"].shape == (2, 4)  # two boxes of the noun in one frame
    np.testing.assert_allclose(knife["boxes"]["pre"], [[0.1, 0.2, 0.3, 0.4]], atol=1e-6)  # xywh -> xyxy
    assert knife["roi_features"]["pnr"].shape == (2, 8) and float(knife["roi_features"]["pnr"][0, 0]) == 1.0
    assert [f["frame_type"] for f in g["frames"]] == ["pre", "pnr", "post"]
    assert g["frames"][0]["clip_frame_number"] == 10
    assert g["frames"][1]["file_name"] == os.path.join(root, "frames", "clipA_000020", "clipA_pnr.jpg")
    merged = train["clipA_000060"]
    assert merged["annotators"] == [aid("clipA_000060", A1), aid("clipA_000060", A2)]
    assert [OBJECTS[o["category_id"]] for o in merged["objects"]] == ["bowl", "table", "right_hand"]
    assert merged["objects"][0]["boxes"]["pnr"].shape == (2, 4)  # both annotators' boxes
    assert float(merged["verb_feature"][0]) == 2.0  # "put"; the last annotator with that verb, as upstream
    assert float(train["clipC_000040#take"]["verb_feature"][0]) == 0.0
    # TABLE and table are distinct classes, as in EASG's objects.txt
    assert read_vocabulary(root)["objects"].index("TABLE") != read_vocabulary(root)["objects"].index("table")
    val = load_easg(root, "val", features="off")
    assert len(val) == 1 and "verb_feature" not in val[0] and "roi_features" not in val[0]["objects"][0]


def _rewrite_pickle(root, split, data):
    with open(os.path.join(root, f"easg_{split}.pkl"), "wb") as f:
        pickle.dump(data, f)


@pytest.mark.parametrize("case", ["no_vocab", "dup_line", "unknown_verb", "bad_bbox", "not_dict", "no_annotations",
                                  "evil", "truncated", "missing_roi_graph", "features_on_missing"])
def test_malformed_files_give_clear_errors(tmp_path, case):
    root = write_easg(tmp_path / "easg", features=case not in ("features_on_missing",), frames=False)
    pkl = os.path.join(root, "easg_train.pkl")
    with open(pkl, "rb") as f:
        data = pickle.load(f)  # our own test file
    first = next(iter(data.values()))
    rows = next(iter(first["annotations"].values()))
    expect, kwargs = EASGFormatError, {}
    if case == "no_vocab":
        os.remove(os.path.join(root, "verbs.txt"))
        match = "verbs.txt"
    elif case == "dup_line":
        with open(os.path.join(root, "objects.txt"), "a") as f:
            f.write("bowl\n")
        match = "'bowl' appears on lines 1 and 6"
    elif case == "unknown_verb":
        rows[0]["verb"] = "juggle"
        _rewrite_pickle(root, "train", data)
        match = "verb 'juggle' is not in verbs.txt"
    elif case == "bad_bbox":
        rows[0]["bbox"]["pre"] = np.zeros((1, 3), np.float32)
        _rewrite_pickle(root, "train", data)
        match = r"bbox\['pre'\] must be an \(n, 4\) array"
    elif case == "not_dict":
        _rewrite_pickle(root, "train", [1, 2])
        match = "must hold a dict keyed by graph_uid"
    elif case == "no_annotations":
        del first["annotations"]
        _rewrite_pickle(root, "train", data)
        match = "expected a dict with 'clip_frame_number' and 'annotations'"
    elif case == "evil":
        with open(pkl, "wb") as f:
            f.write(b"cos\nsystem\n(S'echo hi'\ntR.")
        expect, match = RefusedPickleError, "os.system"
    elif case == "truncated":
        with open(pkl, "rb") as f:
            blob = f.read()
        with open(pkl, "wb") as f:
            f.write(blob[: len(blob) // 2])
        match = "Could not unpickle"
    elif case == "missing_roi_graph":
        with open(os.path.join(root, "roi_feats_train.pkl"), "wb") as f:
            pickle.dump({}, f)
        match = "no features for graph 'clipA_000020'"
    else:
        kwargs = {"features": "on"}
        match = "verb_features.pt"
    with pytest.raises(expect, match=match) as info:
        load_easg(root, "train", **kwargs)
    assert "\n" not in str(info.value)


def test_demo_twin_is_read_by_the_real_loader_and_mapped():
    graphs = DatasetCatalog.get("demo_easg_val")
    assert len(graphs) == 48 and MetadataCatalog.get("demo_easg_val").evaluator_type == "easg_graph"
    vocab = easg_vocabulary("demo_easg_val")
    assert "TABLE" in vocab["objects"] and "table" in vocab["objects"] and len(vocab["relations"]) == 13
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "quick",
                                     "easg_sttran_edgecls_demo.yaml"))
    g = graphs[0]
    out = EASGMapper(cfg, is_train=True)(g)
    n = len(g["objects"])
    assert out["relation_targets"].shape == (n, 13) and out["object_labels"].tolist() == [
        o["category_id"] for o in g["objects"]]
    assert out["images"].shape[:2] == (len(g["frames"]), 3) and out["images"].dtype == torch.uint8
    assert out["gt_boxes"].shape == (len(out["box_index"]), 4) and out["verb_feature"].shape == (32,)
    h, w = out["image_size"]
    assert (out["gt_boxes"][:, 2] <= w).all() and (out["gt_boxes"] >= 0).all()  # clipped to the frame
    assert out["roi_frame_features"].shape == (len(g["frames"]), n, 32)
    assert out["roi_frame_mask"].sum() == len({(int(t), int(j)) for t, j in out["box_index"]})
