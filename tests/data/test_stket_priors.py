"""STKET's priors (sgg/data/stket_priors.py, tools/compute_stket_priors.py) on a hand-made dataset with means worked
out by hand, the upstream JSON layout, and the refusal of another dataset's file."""

import json

import numpy as np
import pytest

from sgg.data.catalog import DatasetCatalog, MetadataCatalog
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES, AG_PREDICATES
from sgg.data.stket_priors import (
    compute_stket_priors,
    load_stket_priors,
    prior_tensors,
    save_stket_priors,
    transition_entropy,
)
from sgg.utils.errors import DataFormatError
from tests.tools.tool_loader import load_tool

CUP, CHAIR = 10, 7  # sgg labels (person = 0); upstream keys "11" and "8"
HOLD, NOCON, TOUCH, SIT = 14, 17, 21, 19  # global predicate ids (contacting = 9 + local index)
HELD = (0, 5, HOLD)  # looking_at, in_front_of, holding
FREE = (1, 6, NOCON)  # not_looking_at, behind, not_contacting


def _frame(*objects):
    """objects: (label, (attention, spatial, contacting)) rows 1.. after the person."""
    rels = []
    for row, (_, (att, spa, con)) in enumerate(objects, 1):
        rels += [[0, row, att], [row, 0, spa], [0, row, con]]
    return {"labels": np.array([0] + [lab for lab, _ in objects]), "relations": np.array(rels, np.int64)}


def hand_dataset():
    """cup rows, per video: A = HELD, HELD, FREE; B = FREE, HELD (a chair beside it, unsure/beneath/sitting_on
    twice); C = HELD, (unsure, on_the_side_of, touching)."""
    chair = (CHAIR, (2, 4, SIT))
    return [
        {"video_id": "A", "frames": [_frame((CUP, HELD)), _frame((CUP, HELD)), _frame((CUP, FREE))]},
        {"video_id": "B", "frames": [_frame((CUP, FREE), chair), _frame((CUP, HELD), chair)]},
        {"video_id": "C", "frames": [_frame((CUP, HELD)), _frame((CUP, (2, 7, TOUCH)))]},
    ]


def vec(**values):
    out = np.zeros(26)
    for idx, v in values.items():
        out[int(idx[1:])] = v
    return out


def test_means_are_exactly_the_hand_computed_ones():
    priors = compute_stket_priors(hand_dataset(), AG_OBJECT_CLASSES, AG_PREDICATES)
    assert sorted(priors) == ["11", "8"]
    cup = priors["11"]
    assert cup["obj_cls_name"] == "cup/glass/bottle"
    # 7 cup rows: HELD x4, FREE x2, (unsure, on_the_side_of, touching) x1
    np.testing.assert_allclose(cup["initial_prior"], vec(p0=4 / 7, p5=4 / 7, p14=4 / 7, p1=2 / 7, p6=2 / 7, p17=2 / 7,
                                                         p2=1 / 7, p7=1 / 7, p21=1 / 7))
    assert cup["c_rel_idx"] == [HOLD - 9, NOCON - 9, TOUCH - 9]
    assert cup["c_rel_name"] == ["holding", "not_contacting", "touching"]
    spec = dict(zip(cup["c_rel_idx"], np.array(cup["specific_prior"])))
    # holding: video A -> rows 1, 2 (mean 0.5 HELD + 0.5 FREE); video C -> row 1; B's only holding row is its last.
    # Mean of the two per-video means (not of the three rows pooled).
    np.testing.assert_allclose(spec[HOLD - 9], vec(p0=.25, p5=.25, p14=.25, p1=.25, p6=.25, p17=.25, p2=.5, p7=.5,
                                                   p21=.5))
    np.testing.assert_allclose(spec[NOCON - 9], vec(p0=1, p5=1, p14=1))  # B: FREE -> HELD; A's FREE row is last
    np.testing.assert_allclose(spec[TOUCH - 9], np.zeros(26))  # touching only on a last row: zeros, as upstream
    chair = priors["8"]
    np.testing.assert_allclose(chair["initial_prior"], vec(p2=1, p4=1, p19=1))
    assert chair["c_rel_idx"] == [SIT - 9]
    np.testing.assert_allclose(chair["specific_prior"][0], vec(p2=1, p4=1, p19=1))


def test_file_round_trip_tensors_and_refusal(tmp_path):
    priors = compute_stket_priors(hand_dataset(), AG_OBJECT_CLASSES, AG_PREDICATES)
    path = str(tmp_path / "p.json")
    save_stket_priors(priors, path)
    loaded = load_stket_priors(path)
    assert loaded == json.loads(json.dumps(priors))
    initial, specific = prior_tensors(loaded, AG_OBJECT_CLASSES, source=path)
    assert initial.shape == (36, 26) and specific.shape == (36, 17, 26)
    np.testing.assert_allclose(initial[CUP], priors["11"]["initial_prior"], rtol=1e-6)
    np.testing.assert_allclose(specific[CUP, NOCON - 9], vec(p0=1, p5=1, p14=1))
    assert not initial[0].any() and not specific[CUP, 0].any()  # person row, unseen predicates: 0
    other = list(AG_OBJECT_CLASSES)
    other[CUP] = "mug"
    with pytest.raises(DataFormatError, match=r"class 11 is 'cup/glass/bottle' but the dataset's class 11.*'mug'"):
        prior_tensors(loaded, other, source=path)
    with pytest.raises(FileNotFoundError, match="compute_stket_priors"):
        load_stket_priors(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text('{"x": {}}')
    with pytest.raises(DataFormatError, match="keyed by a class index"):
        load_stket_priors(str(tmp_path / "bad.json"))


def test_an_upstream_style_file_loads(tmp_path):
    """Upstream's TrainPrior.json: same keys, 1-based indices (television = '33'), extra fields ignored."""
    entry = {"obj_cls_name": "television", "c_rel_name": ["not_contacting"], "c_rel_idx": [8],
             "initial_prior": [0.611, 0.324, 0.065] + [0.0] * 23, "specific_prior": [[0.5] * 26]}
    (tmp_path / "TrainPrior.json").write_text(json.dumps({"33": entry}))
    initial, specific = prior_tensors(load_stket_priors(str(tmp_path / "TrainPrior.json")), AG_OBJECT_CLASSES)
    assert AG_OBJECT_CLASSES[32] == "television"
    np.testing.assert_allclose(initial[32, :3], [0.611, 0.324, 0.065], rtol=1e-6)
    np.testing.assert_allclose(specific[32, 8], 0.5)


def test_transition_entropy_is_lower_when_contacts_predict_the_next_frame():
    ent = transition_entropy(compute_stket_priors(hand_dataset(), AG_OBJECT_CLASSES, AG_PREDICATES))
    assert ent["entries"] == 4 and ent["transition_bits"] < ent["marginal_bits"]


@pytest.fixture
def registered_hand_split():
    name = "stket_hand_train"
    DatasetCatalog.register(name, hand_dataset)
    MetadataCatalog.get(name).set(thing_classes=list(AG_OBJECT_CLASSES), predicate_classes=list(AG_PREDICATES))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_tool_writes_the_priors_of_a_training_split_and_refuses_others(registered_hand_split, tmp_path, capsys):
    tool = load_tool("compute_stket_priors")
    out = tmp_path / "priors.json"
    assert tool.main(["--dataset", registered_hand_split, "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(
        compute_stket_priors(hand_dataset(), AG_OBJECT_CLASSES, AG_PREDICATES)))
    assert "3 videos, 2 object classes" in capsys.readouterr().out
    assert tool.main(["--dataset", "demo_ag_test", "--output", str(tmp_path / "x.json")]) == 2
    assert "training split only" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    assert tool.main(["--dataset", "no_such_train"]) == 2
    assert "not a registered dataset" in capsys.readouterr().err
