"""The 'longtail' Action Genome demo variant (TEMPURA's mean-recall A/B): same on-disk format, object classes drawn
with Zipf weights, so the predicates tied to the rare classes are rare; the default demo is unchanged."""

import collections
import dataclasses
import os
import pickle

import sgg.data.demo.action_genome_demo as demo
from sgg.data.demo.action_genome_demo import DEMO_VARIANTS, DemoVariant, generate_demo_action_genome


def _class_counts(root):
    with open(os.path.join(root, "annotations", "object_bbox_and_relationship.pkl"), "rb") as f:
        objects = pickle.load(f)
    videos = collections.defaultdict(set)
    for key, objs in objects.items():
        for o in objs:
            videos[o["class"]].add(key.split("/")[0])
    return {name: len(v) for name, v in videos.items()}


def test_longtail_variant_skews_the_object_classes(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "NUM_TRAIN_VIDEOS", 16)  # fewer videos: the test renders two datasets
    monkeypatch.setattr(demo, "NUM_TEST_VIDEOS", 1)
    knobs = DEMO_VARIANTS["longtail"]
    assert knobs.object_zipf > 0 and dataclasses.replace(knobs, name="", object_zipf=0.0) == DemoVariant()
    generate_demo_action_genome(str(tmp_path / "lt"), knobs)
    generate_demo_action_genome(str(tmp_path / "default"), DemoVariant())
    lt, default = _class_counts(tmp_path / "lt"), _class_counts(tmp_path / "default")
    # videos containing each class: the first kind dominates the variant (uniform draws in the default)
    assert lt["cup/glass/bottle"] == max(lt.values()) and lt["cup/glass/bottle"] >= 3 * lt.get("television", 0)
    assert lt["cup/glass/bottle"] / sum(lt.values()) > 0.3 > 0.2 > default["cup/glass/bottle"] / sum(default.values())
