"""sgg.engine.Predictor on image SGG (SpeaQ), video SGG (STTran SGDet / PredCls) and keyframe models: returned
structures in original pixels, the evaluation preprocessing, triplet rules, and one clear error per bad input."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from sgg.checkpoint import CheckpointError
from sgg.data import DatasetCatalog, build_test_loader
from sgg.engine import InputError, Predictor
from sgg.engine.predictor import image_triplets, video_frame_triplets
from sgg.structures.scene_graph import KeyframeResult, SceneGraph, VideoSceneGraph
from tests.seeit_models import save_tiny_model, shared_datasets, synthetic_video, tiny_config

IMAGE_CFG, SGDET_CFG = "configs/quick/speaq_demo.yaml", "configs/quick/sttran_sgdet_demo.yaml"
PREDCLS_CFG, KEYFRAME_CFG = "configs/quick/sttran_demo.yaml", "configs/quick/keyframe_demo.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Demo datasets under a module-wide $SGG_DATASETS, tiny checkpoints and a synthetic video."""
    root = tmp_path_factory.mktemp("predictor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGG_DATASETS", shared_datasets(tmp_path_factory))
        paths = {"image": save_tiny_model(IMAGE_CFG, root / "speaq"),
                 "sgdet": save_tiny_model(SGDET_CFG, root / "sgdet"),
                 "keyframe": save_tiny_model(KEYFRAME_CFG, root / "keyframe"),
                 "video": synthetic_video(str(root / "clip.mp4"), num_frames=8, fps=4.0), "root": root}
        yield paths
        DatasetCatalog.reset_options()


def _predictor(config_file, weights, **kwargs):
    cfg = tiny_config(config_file, ["MODEL.WEIGHTS", weights])
    return Predictor(cfg, **kwargs)


def test_image_triplets_best_predicate_per_pair_scored_with_both_objects():
    pred = {"scores": torch.tensor([0.9, 0.5, 0.8]), "rel_pairs": torch.tensor([[0, 1], [2, 0], [1, 2]]),
            "rel_scores": torch.tensor([[0.1, 0.7], [0.6, 0.2], [0.05, 0.1]]),
            "rel_uncertainty": torch.tensor([[0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])}
    triplets, scores, unc = image_triplets(pred, topk=10, threshold=0.0)
    expected = {(0, 1, 1): 0.7 * 0.9 * 0.5, (2, 0, 0): 0.6 * 0.8 * 0.9, (1, 2, 1): 0.1 * 0.5 * 0.8}
    assert [tuple(t) for t in triplets.tolist()] == sorted(expected, key=lambda k: -expected[k])
    np.testing.assert_allclose(scores, sorted(expected.values(), reverse=True), rtol=1e-6)
    np.testing.assert_allclose(unc, [0.5, 0.4, 0.8])  # the chosen predicate's column of each kept pair
    triplets, scores, _ = image_triplets(pred, topk=1, threshold=0.0)
    assert triplets.tolist() == [[2, 0, 0]]
    assert len(image_triplets(pred, topk=10, threshold=0.5)[0]) == 0


def test_video_frame_triplets_follow_action_genome_directions():
    frame = {"scores": torch.tensor([1.0, 0.5]), "pairs": torch.tensor([[0, 1]]),
             "attention": torch.tensor([[0.2, 0.7, 0.1]]), "spatial": torch.full((1, 6), 0.4),
             "contacting": torch.full((1, 17), 0.2)}
    triplets, scores, unc = video_frame_triplets(frame, topk=100, threshold=0.0)
    assert unc is None and len(triplets) == 1 + 6 + 17  # top-1 attention, every spatial / contacting predicate
    attention = triplets[triplets[:, 2] < 3]
    assert attention.tolist() == [[0, 1, 1]]
    spatial = triplets[(triplets[:, 2] >= 3) & (triplets[:, 2] < 9)]
    assert (spatial[:, :2] == [1, 0]).all()  # object -> person
    assert (triplets[triplets[:, 2] >= 9][:, :2] == [0, 1]).all()
    assert scores[0] == pytest.approx(0.7 * 0.5) and np.all(np.diff(scores) <= 0)
    assert len(video_frame_triplets(frame, topk=3, threshold=0.0)[0]) == 3


def test_image_predictor_matches_the_evaluation_path(env):
    predictor = _predictor(IMAGE_CFG, env["image"], topk=7, threshold=0.0)
    assert predictor.task == "image" and predictor.class_names and predictor.predicate_names
    cfg = predictor.cfg
    batch = next(iter(build_test_loader(cfg, cfg.DATASETS.TEST[0], batch_size=1)))
    with torch.no_grad():
        reference = predictor.model(batch)[0]
    path = batch[0]["file_name"]
    sg = predictor(path)
    assert isinstance(sg, SceneGraph)
    w, h = Image.open(path).size
    assert sg.image_size == (h, w) and sg.image.shape == (h, w, 3)
    # Same preprocessing as evaluation: the predicted boxes are the evaluated model's boxes, in original pixels.
    ref_triplets, ref_scores, _ = image_triplets(reference, topk=7, threshold=0.0)
    np.testing.assert_allclose(sg.triplet_scores, ref_scores, rtol=1e-5)
    ref_boxes = reference["boxes"].numpy()
    for (s, o, p), (rs, ro, rp) in zip(sg.triplets.tolist(), ref_triplets.tolist()):
        np.testing.assert_allclose(sg.boxes[s], ref_boxes[rs], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(sg.boxes[o], ref_boxes[ro], rtol=1e-5, atol=1e-4)
        assert p == rp
    assert len(sg.triplets) == min(7, len(reference["rel_pairs"])) >= 1
    assert (sg.boxes[:, [0, 2]] <= w + 1e-3).all() and (sg.boxes[:, [1, 3]] <= h + 1e-3).all()
    # Array and PIL inputs give the same graph; the threshold drops every triplet above the best score.
    rgb = np.asarray(Image.open(path).convert("RGB"))
    for same in (predictor(rgb), predictor(Image.fromarray(rgb))):
        np.testing.assert_array_equal(same.triplets, sg.triplets)
        np.testing.assert_allclose(same.boxes, sg.boxes, rtol=1e-6)
    none = predictor(path, threshold=float(sg.triplet_scores.max()) + 1e-6)
    assert len(none.triplets) == 0
    doc = sg.to_dict()
    assert len(doc["triplets"]) == len(sg.triplets) and {"subject", "predicate", "object", "score", "text"} <= set(
        doc["triplets"][0])
    assert len(sg.triplet_rows("x")) == len(sg.triplets)


def test_video_predictor_on_an_mp4_sgdet(env):
    predictor = _predictor(SGDET_CFG, env["sgdet"], topk=5, threshold=0.0)
    assert predictor.task == "video"
    vsg = predictor(env["video"])
    assert isinstance(vsg, VideoSceneGraph)
    # 8 frames at 4 fps sampled at INPUT.VIDEO_FPS = 2: every other frame.
    assert vsg.frame_indices.tolist() == [0, 2, 4, 6] and np.allclose(vsg.times, [0.0, 0.5, 1.0, 1.5])
    for sg in vsg.frames:
        assert sg.image.shape == (96, 128, 3) and sg.image_size == (96, 128)
        assert 1 <= len(sg.triplets) <= 5 and np.all(np.diff(sg.triplet_scores) <= 0)
        names = sg.label_names
        for s, o, p in sg.triplets.tolist():
            assert 0 <= p < 26
            person = names[o] if 3 <= p < 9 else names[s]  # spatial predicates point to the person
            assert person == "person"
    assert len(vsg.triplet_rows("clip")) == sum(len(sg.triplets) for sg in vsg.frames)
    tracks = vsg.relation_tracks()
    assert all(t.shape == (4,) for t in tracks.values())


def test_image_model_on_a_video_runs_per_frame(env):
    vsg = _predictor(IMAGE_CFG, env["image"], topk=3, threshold=0.0)(env["video"])
    assert isinstance(vsg, VideoSceneGraph) and len(vsg) == 4 and vsg.frame_indices.tolist() == [0, 2, 4, 6]
    assert all(1 <= len(sg.triplets) <= 3 and sg.image_size == (96, 128) for sg in vsg.frames)


def test_predcls_video_dict_uses_its_ground_truth_boxes(env):
    weights = save_tiny_model(PREDCLS_CFG, env["root"] / "predcls")
    predictor = _predictor(PREDCLS_CFG, weights, topk=50, threshold=0.0)
    video = DatasetCatalog.get("demo_ag_test")[0]
    vsg = predictor(video)
    assert len(vsg) == len(video["frames"])
    for sg, frame in zip(vsg.frames, video["frames"]):
        got = {tuple(np.round(b, 2)) for b in sg.boxes.tolist()}
        assert got == {tuple(np.round(b, 2)) for b in np.asarray(frame["boxes"], np.float32).tolist()}
    with pytest.raises(InputError, match="SGDet"):
        predictor(env["video"])  # a plain video has no boxes to score


def test_keyframe_predictor(env):
    predictor = _predictor(KEYFRAME_CFG, env["keyframe"])
    assert predictor.task == "keyframe"
    result = predictor(env["video"])
    assert isinstance(result, KeyframeResult)
    assert result.frame_indices.tolist() == [0, 2, 4, 6] and result.frames.shape == (4, 64, 64, 3)
    assert ((result.scores >= 0) & (result.scores <= 1)).all()
    assert len(result.keyframes) == 1  # max(1, floor(0.15 * 4))
    assert result.keyframes[0] == int(np.argmax(result.scores))
    frames = np.stack([np.asarray(Image.fromarray(f)) for f in result.frames])
    assert len(predictor.predict_keyframes(frames).scores) == 4
    assert [r["keyframe"] for r in result.rows("clip")].count(1) == 1


def test_checkpoint_of_another_model_is_refused(env):
    with pytest.raises(CheckpointError, match="trained as SpeaQ"):
        _predictor(SGDET_CFG, env["image"])
    with pytest.raises(CheckpointError, match="not found"):
        _predictor(SGDET_CFG, os.path.join(env["root"], "missing.pth"))


def test_bad_inputs_give_one_clear_error(env, tmp_path):
    image_predictor = _predictor(IMAGE_CFG, env["image"])
    fake = tmp_path / "notes.jpg"
    fake.write_text("not an image")
    with pytest.raises(InputError, match="is not an image"):
        image_predictor(str(fake))
    with pytest.raises(InputError, match="does not exist"):
        image_predictor(str(tmp_path / "gone.png"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(InputError, match="Cannot read video"):
        _predictor(SGDET_CFG, env["sgdet"])(str(broken))
    with pytest.raises(InputError, match="must be"):
        image_predictor(np.zeros((4, 4), np.float32))
