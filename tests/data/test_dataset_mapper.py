"""SceneGraphMapper: decoding, targets, flips that swap left/right predicates, crops, duplicates, errors."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from sgg.config import get_cfg
from sgg.data import MAPPER_REGISTRY, DatasetCatalog, build_mapper
from sgg.data import transforms as T
from sgg.data.dataset_mapper import SceneGraphMapper
from sgg.data.demo import visual_genome_demo as demo


class _Fixed(T.Augmentation):
    def __init__(self, transform):
        self.transform = transform

    def get_transform(self, height, width):
        return self.transform


def _sample(tmp_path, **extra):
    image = np.zeros((30, 40, 3), np.uint8)
    image[2:12, 4:14] = (255, 0, 0)
    path = os.path.join(tmp_path, "7.jpg")
    Image.fromarray(image).save(path, quality=100)
    d = {"file_name": path, "image_id": 7, "height": 30, "width": 40, "dataset_name": "toy",
         "boxes": np.array([[4, 2, 14, 12], [20, 10, 30, 20], [32, 20, 38, 28]], np.float32),
         "labels": np.array([3, 1, 2]), "relations": np.array([[0, 1, 0], [1, 2, 1], [0, 2, 4]]),
         "attributes": -np.ones((3, 10), np.int64)}
    d.update(extra)
    return d


def test_output_format_and_defaults(tmp_path):
    mapper = SceneGraphMapper(is_train=False, augmentations=[T.ResizeShortestEdge((60,), 0)])
    out = mapper(_sample(tmp_path))
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, 60, 80)
    assert out["image"][0, 10, 15] > 200 and out["image"][1, 10, 15] < 60  # RGB order: the block is red
    assert (out["height"], out["width"], out["image_id"]) == (30, 40, 7)
    torch.testing.assert_close(out["gt_boxes"][0], torch.tensor([8.0, 4.0, 28.0, 24.0]))
    assert out["gt_boxes"].dtype == torch.float32 and out["gt_classes"].tolist() == [3, 1, 2]
    assert out["gt_relations"].dtype == torch.int64 and out["gt_relations"].shape == (3, 3)
    assert out["dataset_type"] == "real" and out["loss_weight"] == 1.0
    tagged = mapper(_sample(tmp_path, dataset_type="synthetic", loss_weight=0.5))
    assert tagged["dataset_type"] == "synthetic" and tagged["loss_weight"] == 0.5


def test_horizontal_flip_swaps_declared_predicate_pairs(tmp_path):
    mapper = SceneGraphMapper(is_train=True, augmentations=[_Fixed(T.HFlipTransform(40))],
                              filter_duplicate_rels=False, flip_predicate_pairs={"toy": [[0, 1]]})
    out = mapper(_sample(tmp_path))
    assert out["gt_relations"].tolist() == [[0, 1, 1], [1, 2, 0], [0, 2, 4]]
    torch.testing.assert_close(out["gt_boxes"][0], torch.tensor([26.0, 2.0, 36.0, 12.0]))
    unflipped = SceneGraphMapper(is_train=True, augmentations=[], filter_duplicate_rels=False,
                                 flip_predicate_pairs={"toy": [[0, 1]]})(_sample(tmp_path))
    assert unflipped["gt_relations"].tolist() == [[0, 1, 0], [1, 2, 1], [0, 2, 4]]


def test_crop_drops_boxes_and_renumbers_relations(tmp_path):
    mapper = SceneGraphMapper(is_train=True, augmentations=[_Fixed(T.CropTransform(15, 0, 25, 30))],
                              filter_duplicate_rels=False)
    out = mapper(_sample(tmp_path))  # box 0 (x 4..14) falls outside the crop
    assert out["gt_classes"].tolist() == [1, 2]
    assert out["gt_relations"].tolist() == [[0, 1, 1]]
    torch.testing.assert_close(out["gt_boxes"], torch.tensor([[5.0, 10, 15, 20], [17, 20, 23, 28]]))


def test_train_mapper_filters_duplicate_pairs(tmp_path):
    rels = np.array([[0, 1, 0], [0, 1, 3], [1, 2, 1]])
    mapper = SceneGraphMapper(is_train=True, augmentations=[])
    seen = set()
    for seed in range(30):
        np.random.seed(seed)
        out = mapper(_sample(tmp_path, relations=rels))["gt_relations"].tolist()
        assert len(out) == 2 and out[1] == [1, 2, 1]
        seen.add(out[0][2])
    assert seen == {0, 3}
    test_mapper = SceneGraphMapper(is_train=False, augmentations=[])
    assert len(test_mapper(_sample(tmp_path, relations=rels))["gt_relations"]) == 3  # evaluation keeps all


def test_missing_image_names_the_file(tmp_path):
    mapper = SceneGraphMapper(is_train=False, augmentations=[])
    with pytest.raises(FileNotFoundError, match="Image '.*nope.jpg' does not exist.*prepare_vg.py"):
        mapper(_sample(tmp_path, file_name=str(tmp_path / "nope.jpg")))


def test_flipped_demo_images_keep_geometry_consistent(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "shared_sgg_datasets"  # the demo is generated once per session
    monkeypatch.setenv("SGG_DATASETS", str(root))
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", ("demo_synthetic_train",)])
    assert MAPPER_REGISTRY.get("SceneGraphMapper") is SceneGraphMapper
    mapper = build_mapper(cfg, "demo_synthetic_train", is_train=True)  # the metadata names SceneGraphMapper
    assert isinstance(mapper, SceneGraphMapper)
    mapper.augmentations = [T.RandomFlip(1.0)]  # flip only: boxes stay in pixels, so the rules still apply
    mapper.filter_duplicate_rels = False
    swapped = 0
    for d in DatasetCatalog.get("demo_synthetic_train")[:120]:
        out = mapper(d)
        boxes = out["gt_boxes"].numpy()
        for s, o, p in out["gt_relations"].tolist():
            assert demo.geometric_predicate(boxes[s], boxes[o]) == demo.DEMO_PREDICATES[p]
        swapped += int((d["relations"][:, 2] != out["gt_relations"][:, 2].numpy()).sum())
    assert swapped > 10  # left of / right of were present and swapped
