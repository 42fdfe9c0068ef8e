"""EASG models on mapped graphs of the tiny real-layout dataset: STTran-EASG on the released RoI features (the
"frames" source runs in tests/engine/test_easg_runs.py), per-object aggregation, the linear baseline, the frequency
tables."""

import pytest
import torch

from sgg.data.datasets.easg import load_easg
from sgg.data.easg_mapper import EASGMapper
from sgg.modeling.meta_arch.easg_frequency import EASGFrequencyBaseline, easg_frequency_tables
from sgg.modeling.meta_arch.easg_linear import EASGLinear
from sgg.modeling.meta_arch.sttran_easg import STTranEASG, graph_pairs
from tests.data.easg_layout import DIM, write_easg


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    root = write_easg(tmp_path_factory.mktemp("easg"), frames=False)
    mapper = EASGMapper(num_relations=4, load_frames=False, min_size=48, max_size=64)
    return [mapper(g) for g in load_easg(root, "train")], load_easg(root, "train")


@pytest.mark.parametrize("mode", ["edgecls", "sgcls", "easgcls"])
def test_sttran_easg_on_roi_features(mapped, mode):
    graphs, _ = mapped
    torch.manual_seed(0)
    model = STTranEASG(mode=mode, features=None, object_source="roi", num_objects=5, num_relations=4, num_verbs=3,
                       verb_dim=DIM, roi_dim=DIM, visual_dim=8, embed_dim=4, dim_feedforward=16,
                       obj_classifier_hidden=8, pos_dim=4, verb_hidden=8, multi_label_loss="margin")
    model.train()
    losses = model(graphs[:2])
    assert set(losses) == {"loss_relation"} | ({"loss_object"} if mode != "edgecls" else set()) | (
        {"loss_verb"} if mode == "easgcls" else set())
    sum(losses.values()).backward()
    assert model.relation.obj_fc.weight.grad.abs().sum() > 0
    assert model(graphs[2:3])  # a one-object, one-pair graph alone still trains (BatchNorm sees two rows)
    model.eval()
    with torch.no_grad():
        out = model(graphs)
        frame, obj, _ = graph_pairs(graphs[0])
        _, rel_logits, *_ = model._run(graphs[:1])
    for g, o in zip(graphs, out):
        n = len(g["objects"])
        assert o["relation_scores"].shape == (n, 4) and o["object_scores"].shape == (n, 5)
        assert o["verb_scores"].shape == (3,) and torch.allclose(o["verb_scores"].sum(), torch.tensor(1.0))
    # the knife of clipA_000020 is in three frames: its scores are the mean of its three pairs
    assert obj.tolist() == [0, 0, 1, 0] and frame.tolist() == [0, 1, 1, 2]
    assert torch.allclose(out[0]["relation_scores"][0], rel_logits.sigmoid()[[0, 1, 3]].mean(0), atol=1e-6)
    if mode == "edgecls":  # the GT classes and verb, as one-hot
        assert out[0]["object_scores"].argmax(1).tolist() == [1, 2] and out[0]["verb_scores"][0] == 1.0


@pytest.mark.parametrize("verb_dim, roi_dim, key", [(DIM + 1, DIM, "MODEL.EASG.VERB_FEATURE_DIM"),
                                                     (DIM, DIM + 1, "MODEL.EASG.ROI_FEATURE_DIM")])
def test_sttran_easg_refuses_features_of_another_width(mapped, verb_dim, roi_dim, key):
    graphs, _ = mapped
    model = STTranEASG(mode="sgcls", features=None, object_source="roi", num_objects=5, num_relations=4, num_verbs=3,
                       verb_dim=verb_dim, roi_dim=roi_dim, visual_dim=8, embed_dim=4, dim_feedforward=16,
                       obj_classifier_hidden=8, pos_dim=4, verb_hidden=8, multi_label_loss="margin")
    with pytest.raises(ValueError, match=f"graph '.*' (is|are) {DIM}-d, the model expects {key} {DIM + 1}"):
        model(graphs[:2])


def test_linear_baseline_and_frequency_tables(mapped):
    graphs, raw = mapped
    model = EASGLinear(num_verbs=3, num_objects=5, num_relations=4, verb_dim=DIM, object_dim=DIM)
    losses = model(graphs)
    assert set(losses) == {"loss_verb", "loss_object", "loss_relation"}
    model.eval()
    out = model(graphs[:1])[0]
    assert out["relation_scores"].shape == (2, 4) and torch.allclose(out["object_scores"].sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="MODEL.EASG.VERB_FEATURE_DIM"):
        EASGLinear(num_verbs=3, num_objects=5, num_relations=4, verb_dim=DIM + 1, object_dim=DIM).eval()(graphs[:1])
    verb, objects, relations = easg_frequency_tables(raw, 3, 5, 4)
    assert verb.tolist() == [2, 1, 1]  # take (clipA_000020, clipC#take), cut, put
    assert objects[0, 2] == 1 and relations[0, 2].tolist() == [0, 1, 1, 0]  # TABLE under take: from + on
    freq = EASGFrequencyBaseline(mode="edgecls", verb_counts=verb, object_counts=objects, relation_counts=relations,
                                 smoothing=0.0).eval()
    rel = freq(graphs[:1])[0]["relation_scores"]
    assert rel[1].tolist() == [0.0, 1.0, 1.0, 0.0]  # P(r | take, TABLE)
