"""The demo variant "tracks": several objects of one class crossing, in AG's real format, read by the real loader, and
sgg's identity sidecar (annotations/sgg_track_ids.pkl) that tools/benchmark.py track scores against."""

import collections
import os
import pickle

import numpy as np
import pytest

from sgg.data.datasets.action_genome import load_action_genome
from sgg.data.demo.action_genome_demo import DEMO_VARIANTS, TRACK_IDS_FILE, generate_demo_action_genome


@pytest.fixture(scope="module")
def tracks_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ag_tracks") / "action_genome_tracks")
    generate_demo_action_genome(root, DEMO_VARIANTS["tracks"])
    return root


def test_tracks_variant_has_same_class_objects_that_cross(tracks_root):
    videos = load_action_genome(tracks_root, "test")
    assert videos
    crossed = 0
    for video in videos:
        # Every frame shows (up to) 3 objects of the video's first class: the first object + one crossing pair.
        counts = [max(collections.Counter(f["labels"][1:].tolist()).values()) for f in video["frames"]]
        assert max(counts) >= 3, video["video_id"]
        # Some pair of same-class boxes swaps its left-to-right order between the first and the last frame.
        first, last = video["frames"][0], video["frames"][-1]
        label = collections.Counter(first["labels"][1:].tolist()).most_common(1)[0][0]
        xs0 = first["boxes"][first["labels"] == label][:, 0]
        xs1 = last["boxes"][last["labels"] == label][:, 0]
        if len(xs0) == len(xs1) and not np.array_equal(np.argsort(xs0), np.argsort(xs1)):
            crossed += 1
    assert crossed >= len(videos) // 2


def test_identity_sidecar_is_aligned_with_the_ag_pickle(tracks_root):
    ann = os.path.join(tracks_root, "annotations")
    with open(os.path.join(ann, TRACK_IDS_FILE), "rb") as f:
        ids = pickle.load(f)
    with open(os.path.join(ann, "object_bbox_and_relationship.pkl"), "rb") as f:
        objects = pickle.load(f)
    assert ids.keys() == objects.keys()
    for key, entries in objects.items():
        assert len(ids[key]) == len(entries) and len(set(ids[key])) == len(entries)


def test_default_demo_writes_no_sidecar(tmp_path):
    root = str(tmp_path / "ag")
    generate_demo_action_genome(root)
    assert not os.path.exists(os.path.join(root, "annotations", TRACK_IDS_FILE))
