"""Augmentations: resize arithmetic, crop, flip, and the SpeaQ recipe built from INPUT.*."""

import numpy as np
import pytest

from sgg.config import get_cfg
from sgg.data import transforms as T


def test_resize_shortest_edge_arithmetic_and_boxes():
    np.random.seed(0)
    t = T.ResizeShortestEdge((50,), max_size=80).get_transform(100, 200)  # 50 x 100 -> long side capped: 40 x 80
    assert (t.new_h, t.new_w) == (40, 80)
    np.testing.assert_allclose(t.apply_box(np.array([[10, 20, 110, 60]], np.float32)), [[4, 8, 44, 24]])
    image = np.zeros((100, 200, 3), np.uint8)
    assert t.apply_image(image).shape == (40, 80, 3)
    sizes = {T.ResizeShortestEdge((30, 40), 0, "range").get_transform(100, 200).new_h for _ in range(200)}
    assert sizes == set(range(30, 41))
    with pytest.raises(ValueError, match="needs \\(min, max\\) sizes"):
        T.ResizeShortestEdge((1, 2, 3), 0, "range")


def test_flip_and_crop_move_pixels_and_boxes_together():
    image = np.zeros((20, 30, 3), np.uint8)
    image[5:10, 2:8] = 255  # a white block at box [2, 5, 8, 10]
    box = np.array([[2, 5, 8, 10]], np.float32)
    flip = T.HFlipTransform(30)
    flipped, fbox = flip.apply_image(image), flip.apply_box(box)
    np.testing.assert_array_equal(fbox, [[22, 5, 28, 10]])
    assert flipped[5:10, 22:28].min() == 255 and flipped.sum() == image.sum()
    crop = T.CropTransform(1, 3, 10, 10)
    cropped, cbox = crop.apply_image(image), crop.apply_box(box)
    assert cropped.shape == (10, 10, 3)
    x1, y1, x2, y2 = cbox[0].astype(int)
    assert cropped[y1:y2, x1:x2].min() == 255 and cropped.sum() == image.sum()
    assert T.flips_horizontally(T.TransformList([flip, crop, flip])) is False
    assert T.flips_horizontally(T.TransformList([crop, flip])) is True and T.flips_horizontally(flip) is True
    assert T.flips_horizontally(T.TransformList([T.TransformList([flip]), crop])) is True  # fvcore flattens lists


def test_transforms_are_fvcores_and_resize_is_pils_bilinear():
    """Flip / crop / lists are fvcore's (detectron2's base); the resize keeps detectron2's PIL bilinear filter, which
    fvcore's ScaleTransform (torch interpolate) does not reproduce."""
    from fvcore.transforms import transform as F
    from PIL import Image

    assert T.HFlipTransform is F.HFlipTransform and T.CropTransform is F.CropTransform
    assert issubclass(T.ResizeTransform, F.Transform)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ours = T.ResizeTransform(37, 53, 20, 31).apply_image(image)
    np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(image).resize((31, 20), Image.BILINEAR)))
    assert not np.array_equal(ours, F.ScaleTransform(37, 53, 20, 31, interp="bilinear").apply_image(image))
    boxes = np.array([[0, 0, 53, 37], [5.5, 2, 10, 30]], np.float32)
    out = T.ResizeTransform(37, 53, 20, 31).apply_box(boxes)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, boxes * np.array([31 / 53, 20 / 37] * 2, np.float32), rtol=1e-6)
    assert T.ResizeTransform(37, 53, 20, 31).apply_box(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_random_crop_absolute_range_bounds():
    np.random.seed(1)
    aug = T.RandomCrop("absolute_range", (384, 600))
    for _ in range(50):
        t = aug.get_transform(500, 1000)
        assert 384 <= t.h <= 500 and 384 <= t.w <= 600
        assert 0 <= t.y0 <= 500 - t.h and 0 <= t.x0 <= 1000 - t.w
    with pytest.raises(ValueError, match="Unknown INPUT.CROP.TYPE 'square'"):
        T.RandomCrop("square", (1, 1))


def test_speaq_recipe_from_config():
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", tuple(range(480, 801, 32)), "INPUT.MAX_SIZE_TRAIN", 1333,
                         "INPUT.CROP.ENABLED", True])
    main, crop = T.build_scene_graph_augmentations(cfg, is_train=True)
    assert [type(a).__name__ for a in main] == ["RandomFlip", "ResizeShortestEdge"]
    assert main[1].sizes == tuple(range(480, 801, 32)) and main[1].max_size == 1333
    assert [type(a).__name__ for a in crop] == ["ResizeShortestEdge", "RandomCrop"]
    assert crop[0].sizes == (400, 500, 600) and crop[1].crop_size == (384, 600)
    test_main, test_crop = T.build_scene_graph_augmentations(cfg, is_train=False)
    assert test_crop is None and test_main[0].sizes == (800,)
    cfg.merge_from_list(["INPUT.RANDOM_FLIP", "vertical"])
    with pytest.raises(ValueError, match="INPUT.RANDOM_FLIP='vertical' is not supported"):
        T.build_scene_graph_augmentations(cfg, is_train=True)
