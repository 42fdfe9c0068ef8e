"""SceneGraphVisualizer: drawing sizes and colours, the graph layouts, MP4 overlays, timelines and keyframe plots, on
hand-made scene graphs (no model)."""

import numpy as np
import pytest
from PIL import Image

from sgg.structures.scene_graph import KeyframeResult, SceneGraph, VideoSceneGraph
from sgg.utils.video_io import read_video
from sgg.utils.visualizer import PALETTE, SceneGraphVisualizer, graph_layout, radial_layout, star_hub

CLASSES = ["person", "cup", "table"]
PREDICATES = ["holding", "on", "near"]


def _graph(h=120, w=160, shift=0.0, triplets=((0, 1, 0), (1, 2, 1), (0, 2, 2))):
    image = np.full((h, w, 3), 200, np.uint8)
    boxes = np.array([[20, 10, 60, 110], [50 + shift, 40, 80 + shift, 70], [90, 70, 150, 115]], np.float32)
    triplets = np.asarray(triplets, np.int64).reshape(-1, 3)
    return SceneGraph(boxes=boxes, labels=[0, 1, 2], scores=[0.99, 0.8, 0.7], triplets=triplets,
                      triplet_scores=np.linspace(0.9, 0.5, len(triplets)), class_names=CLASSES,
                      predicate_names=PREDICATES, image_size=(h, w), image=image)


def test_draw_size_colours_and_panel():
    vis = SceneGraphVisualizer(min_height=360, panel_width=300, supersample=1)
    sg = _graph()
    out = vis.draw(sg)
    scale = 360 / 120
    assert out.size == (round(160 * scale) + 300, 360)
    pixels = np.asarray(out)
    # The outline of the cup's box (object 1) is drawn in the cup's colour (the second palette entry): most of its
    # left edge (labels may cover a little of it) and none of the inside of the box.
    edge = pixels[int(40 * scale) + 2: int(70 * scale) - 2, int(50 * scale)]
    assert (edge == np.array(PALETTE[1], np.uint8)).all(-1).mean() > 0.5
    assert (pixels[int(40 * scale) + 8: int(70 * scale) - 8, int(50 * scale) + 8]
            == np.array(PALETTE[1], np.uint8)).all(-1).mean() < 0.2
    # The panel is white where nothing is drawn (bottom-right corner) and holds coloured nodes somewhere.
    assert tuple(pixels[-3, -3]) == (255, 255, 255)
    panel = pixels[:, round(160 * scale) + 2:]
    assert any((panel == np.array(c, np.uint8)).all(-1).sum() > 50 for c in PALETTE[:3])


def test_draw_without_relations_and_large_images_are_downscaled():
    vis = SceneGraphVisualizer(max_height=300)
    sg = _graph(h=900, w=600, triplets=np.zeros((0, 3)))
    out = vis.draw(sg)
    assert out.height == 300 and out.width > 200
    with pytest.raises(ValueError, match="needs the picture"):
        vis.draw(SceneGraph(boxes=sg.boxes, labels=sg.labels, scores=sg.scores, triplets=sg.triplets,
                            triplet_scores=sg.triplet_scores, class_names=CLASSES, predicate_names=PREDICATES,
                            image_size=(900, 600)))


def test_colours_follow_objects_across_frames():
    vis = SceneGraphVisualizer()
    first = vis.object_colors(_graph())
    # Same classes in another order: each (class, rank) keeps its colour.
    sg = _graph()
    sg.labels = np.array([2, 0, 1])
    again = vis.object_colors(sg)
    assert again == [first[2], first[0], first[1]]


def test_layouts_separate_nodes():
    sizes = np.full((4, 2), 0.15)
    pos = graph_layout(np.full((4, 2), 0.5), [(0, 1), (1, 2), (2, 3)], sizes)
    gaps = np.abs(pos[:, None] - pos[None])
    apart = ((gaps >= sizes[0] - 1e-3).any(-1)) | np.eye(4, dtype=bool)
    assert apart.all() and (pos >= 0).all() and (pos <= 1).all()
    assert star_hub(4, [(0, 1), (0, 2), (3, 0)]) == 0 and star_hub(4, [(0, 1), (2, 3)]) is None
    centers = radial_layout(np.array([[0.5, 0.5], [0.9, 0.5], [0.1, 0.5], [0.5, 0.1]]), 0, np.full((4, 2), 20.0),
                            (400, 300), margin=10)
    assert np.allclose(centers[0], (200, 150))
    assert centers[1, 0] > 200 > centers[2, 0] and centers[3, 1] < 150  # right stays right, up stays up


def test_video_overlay_timeline_and_keyframes(tmp_path):
    frames = [_graph(shift=4.0 * t, triplets=((0, 1, 0),) if t < 2 else ((0, 1, 0), (1, 2, 1))) for t in range(4)]
    vsg = VideoSceneGraph(frames=frames, frame_indices=[0, 2, 4, 6], times=[0, 0.5, 1.0, 1.5], fps=2.0)
    vis = SceneGraphVisualizer(min_height=200, panel_width=200)
    paths = vis.save_result(vsg, str(tmp_path), "clip")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["clip.mp4", "clip_timeline.png", "clip_frame.png"]
    video, times = read_video(paths[0])
    assert video.shape[0] == 4 and video.shape[1] == 200 and abs(video.shape[2] - (round(160 * 200 / 120) + 200)) <= 1
    np.testing.assert_allclose(times, [0, 0.5, 1.0, 1.5], atol=1e-3)
    fig = vis.plot_timeline(vsg)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["person holding cup", "cup on table"]
    assert Image.open(paths[1]).size[0] > 500 and Image.open(paths[2]).height == 200
    result = KeyframeResult(scores=[0.1, 0.9, 0.3, 0.5], frame_indices=[0, 2, 4, 6], times=[0, 1, 2, 3],
                            keyframes=[1, 3], frames=np.zeros((4, 32, 32, 3), np.uint8))
    (path,) = vis.save_result(result, str(tmp_path), "clip")
    assert path.endswith("clip_keyframes.png") and Image.open(path).size[0] > 500
