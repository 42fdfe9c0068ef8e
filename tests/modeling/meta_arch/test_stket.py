"""STKET on tiny synthetic videos: losses and per-branch outputs in every mode, priors loaded as trainable parameters
(and refused when counted on another dataset), prior injection on/off, the predicted (never GT) contact set, and the
ensemble window of the same object class."""

import numpy as np
import pytest
import torch

import sgg.modeling  # noqa: F401  (registers backbones and meta-architectures)
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES, AG_PREDICATES
from sgg.data.stket_priors import compute_stket_priors, save_stket_priors
from sgg.modeling import build_model
from sgg.modeling.meta_arch.stket import BRANCHES, STKET
from sgg.utils.errors import DataFormatError
from tests.modeling.meta_arch.test_sttran import check_prediction, make_video, tiny_cfg

BRANCH_LOSSES = {f"loss_{b}_{g}" for b in BRANCHES + ("spatial_prior", "temporal_prior")
                 for g in ("attention", "spatial", "contacting")}


@pytest.fixture
def prior_file(tmp_path):
    videos = [make_video(seed=s, num_frames=4) for s in range(2)]
    path = str(tmp_path / "priors.json")
    save_stket_priors(compute_stket_priors(videos, AG_OBJECT_CLASSES, AG_PREDICATES), path)
    return path


def stket_cfg(prior_file, mode="predcls", **stket):
    cfg = tiny_cfg(mode)
    cfg.MODEL.META_ARCHITECTURE = "STKET"
    cfg.MODEL.STTRAN.ENC_LAYERS = cfg.MODEL.STTRAN.DEC_LAYERS = 2
    cfg.MODEL.STTRAN.MULTI_LABEL_LOSS = "bce"
    cfg.MODEL.STKET.PRIOR_FILE = prior_file
    for key, value in stket.items():
        setattr(cfg.MODEL.STKET, key, value)
    return cfg


def test_predcls_trains_all_branches_and_prior_heads(prior_file):
    torch.manual_seed(0)
    model = build_model(stket_cfg(prior_file))
    video = make_video(num_frames=4)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(20):
        losses = model([video])
        assert set(losses) == BRANCH_LOSSES
        total = sum(losses.values())
        first = float(total.detach()) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total.detach()) < 0.6 * first
    # the priors are parameters and they train
    for name in ("spatial_initial_prior", "temporal_initial_prior", "temporal_specific_prior"):
        assert getattr(model, name).grad is not None and name in model.state_dict()
    model.eval()
    out = model([video])[0]
    check_prediction(video, out)
    for frame in out["frames"]:
        for b in BRANCHES:
            assert frame[f"{b}/contacting"].shape == frame["contacting"].shape
        assert torch.equal(frame["attention"], frame["ensemble/attention"])  # OUTPUT_BRANCH ensemble


def test_priors_are_initialised_from_the_file_and_a_foreign_file_is_refused(prior_file, tmp_path):
    import json

    model = build_model(stket_cfg(prior_file))
    data = json.load(open(prior_file))
    cup = torch.tensor(data["11"]["initial_prior"])
    assert torch.allclose(model.spatial_initial_prior[10], cup)
    assert torch.allclose(model.temporal_initial_prior[10], cup)
    c = data["11"]["c_rel_idx"][0]
    assert torch.allclose(model.temporal_specific_prior[10, c], torch.tensor(data["11"]["specific_prior"][0]))
    data["11"]["obj_cls_name"] = "mug"
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match="counted on another dataset"):
        build_model(stket_cfg(str(foreign)))
    off = build_model(stket_cfg(str(tmp_path / "missing.json"), USE_SPATIAL_PRIOR=False, USE_TEMPORAL_PRIOR=False))
    assert not any("prior" in k for k in off.state_dict())  # no prior needed, none read


def _outputs(model, video):
    model.eval()
    return model([video])[0]["frames"]


def test_prior_injection_changes_the_outputs_of_its_branches(prior_file):
    torch.manual_seed(1)
    model = build_model(stket_cfg(prior_file))
    video = make_video(num_frames=4)
    both = _outputs(model, video)
    model.use_temporal_prior = False  # the same weights, no transition prior in the temporal decoder
    spatial_only = _outputs(model, video)
    model.use_spatial_prior = False
    none = _outputs(model, video)
    for a, b, c in zip(both, spatial_only, none):
        assert torch.equal(a["spatial/contacting"], b["spatial/contacting"])  # temporal prior: after the encoder
        assert not torch.allclose(a["temporal/contacting"], b["temporal/contacting"])
        assert not torch.allclose(b["spatial/contacting"], c["spatial/contacting"])


def test_contact_set_is_predicted_never_the_ground_truth(prior_file):
    torch.manual_seed(2)
    model = build_model(stket_cfg(prior_file, CONTACT_THRESHOLD=0.5))
    logits = torch.tensor([[0.0] * 8 + [5.0] + [0.0] * 8,  # argmax not_contacting -> {not_contacting}
                           [3.0, -3.0, 1.0] + [-3.0] * 5 + [2.0] + [-3.0] * 8])  # {0, 2}: >= 0.5, minus not_contacting
    sets = model._contact_sets(logits)
    assert sets[0].nonzero().flatten().tolist() == [8]
    assert sets[1].nonzero().flatten().tolist() == [0, 2]
    video = make_video(num_frames=4)
    base = _outputs(model, video)
    # GT contacting labels changed: no output moves (inference reads no GT relation).
    changed = make_video(num_frames=4)
    for frame in changed["frames"]:
        frame["relations"] = np.where(frame["relations"][:, 2:] >= 9, [[0, 0, 10]], frame["relations"])
    for a, b in zip(base, _outputs(model, changed)):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # The spatial branch's contacting head decides the contact set: shifting its not_contacting bias changes the
    # temporal branch (through the transition prior) ...
    with torch.no_grad():
        model.heads["spatial"].contacting.bias[8] += 20.0
    shifted = _outputs(model, video)
    assert any(not torch.allclose(a["temporal/attention"], b["temporal/attention"]) for a, b in zip(base, shifted))
    # ... and without the transition prior it does not.
    model.use_temporal_prior = False
    plain = _outputs(model, video)
    with torch.no_grad():
        model.heads["spatial"].contacting.bias[8] -= 20.0
    for a, b in zip(plain, _outputs(model, video)):
        assert torch.equal(a["temporal/attention"], b["temporal/attention"])


def test_class_history_and_ensemble_window():
    """Pairs (frame, class): class 3 at frames 0, 1, 2, 5, 6; class 4 at 0, 2, 6. Windows chain back while gaps are
    <= 2 frames: the pair at frame 5 of class 3 is alone (gap 3), at frame 6 it has frame 5."""
    model = STKET.__new__(STKET)
    torch.nn.Module.__init__(model)
    model.window_size, model.max_gap = 4, 2
    fp = torch.tensor([0, 0, 1, 2, 2, 5, 6, 6])
    ol = torch.tensor([3, 4, 3, 3, 4, 3, 3, 4])
    cls, rep, prev = model._class_history(ol, fp, torch.ones(8), 7, by_score=False)
    assert rep.tolist() == [[0, 2, 3, -1, -1, 5, 6], [1, -1, 4, -1, -1, -1, 7]]
    assert prev[0].tolist() == [-1, 0, 1, 2, 2, 2, 5]
    seen = {}

    class Record(torch.nn.Module):
        def forward(self, h, prior, pad, pos):
            seen["slots"], seen["pad"] = h[..., 0].clone(), pad.clone()
            return h

    model.slot_embedding, model.ensemble = torch.nn.Embedding(4, 1), torch.nn.ModuleList([Record()])
    out = model._ensemble(torch.arange(8.0)[:, None], cls, rep, prev, fp)
    assert out[:, 0].tolist() == list(range(8))  # the current slot is the pair itself
    lengths = (~seen["pad"]).sum(1).tolist()
    assert lengths == [1, 1, 2, 3, 2, 1, 2, 1]
    assert seen["slots"][3, :3].tolist() == [0, 2, 3] and seen["slots"][4, :2].tolist() == [1, 4]
    # SGCls / SGDet evaluation: the highest-scoring instance represents its class in a frame
    _, rep, _ = model._class_history(torch.tensor([3, 3]), torch.tensor([0, 0]), torch.tensor([0.2, 0.9]), 1,
                                     by_score=True)
    assert rep.tolist() == [[1]]


@pytest.mark.parametrize("mode", ["sgcls", "sgdet"])
def test_sgcls_and_sgdet_train_and_predict(prior_file, mode):
    torch.manual_seed(3)
    model = build_model(stket_cfg(prior_file, mode))
    video = make_video(num_frames=3)
    model.train()
    losses = model([video])
    assert BRANCH_LOSSES | {"loss_object"} <= set(losses)
    sum(losses.values()).backward()
    model.eval()
    out = model([video])[0]
    check_prediction(video, out)
    assert all(f"{b}/attention" in out["frames"][0] for b in BRANCHES)


def test_bad_configs_fail_clearly(prior_file):
    with pytest.raises(ValueError, match="OUTPUT_BRANCH"):
        build_model(stket_cfg(prior_file, OUTPUT_BRANCH="raw"))
    with pytest.raises(ValueError, match="CONTACT_THRESHOLD"):
        build_model(stket_cfg(prior_file, CONTACT_THRESHOLD=0.0))
    cfg = stket_cfg(prior_file)
    cfg.MODEL.STTRAN.DEC_LAYERS = 0
    with pytest.raises(ValueError, match="DEC_LAYERS"):
        build_model(cfg)
