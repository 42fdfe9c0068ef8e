"""TEMPURA: GMM heads, the predicate memory (buffers), each loss term, the seed's two TEMPURA flags' meanings, the three
modes and overfitting one tiny video."""

import pytest
import torch
import torch.nn.functional as F

import sgg.modeling  # noqa: F401  (registers backbones and meta-architectures)
from sgg.evaluation.video_scene_graph import evaluate_video_scene_graphs
from sgg.modeling import build_model
from sgg.modeling.meta_arch.tempura import (
    GMMHead,
    LinearHead,
    PredicateMemory,
    TrackingEncoder,
    euclidean_contrastive_loss,
    uncertainty_weights,
    variance_regularization,
)
from tests.modeling.meta_arch.test_sttran import check_prediction, make_video, tiny_cfg


def tempura_cfg(mode="predcls", **tempura):
    cfg = tiny_cfg(mode)
    cfg.MODEL.META_ARCHITECTURE = "TEMPURA"
    t = cfg.MODEL.TEMPURA
    t.NUM_MIXTURES, t.TRACKING_HEADS, t.TRACKING_FFN = 3, 4, 16
    t.MEMORY.EPOCH_VIDEOS = 2
    for key, value in tempura.items():
        node = t
        *path, leaf = key.split("__")
        for p in path:
            node = node[p]
        node[leaf] = value
    return cfg


# ---------------------------------------------------------------------------------------------- heads
def test_gmm_head_shapes_sampling_and_uncertainties():
    torch.manual_seed(0)
    head = GMMHead(8, 5, 3, "softmax")
    x = torch.randn(4, 8)
    head.train()
    a, b = head(x), head(x)
    assert a.probs.shape == (4, 5) and a.var.shape == (4, 3, 5)
    assert not torch.allclose(a.probs, b.probs)  # sampled logits: two draws differ
    assert torch.allclose(a.probs.sum(1), torch.ones(4), atol=1e-5)
    head.eval()
    e1, e2 = head(x), head(x)
    assert torch.equal(e1.probs, e2.probs)  # inference uses the means
    # hand computation from the head's parameters
    mu = head.mu(x).view(4, 3, 5)
    var = torch.sigmoid(head.var(x)).view(4, 3, 5)
    pi = head.pi(x).softmax(-1)[..., None]
    p = (pi * mu.softmax(-1)).sum(1)
    assert torch.allclose(e1.probs, p, atol=1e-6)
    assert torch.allclose(e1.aleatoric, (pi * var).sum(1), atol=1e-6)
    assert torch.allclose(e1.epistemic, (pi * (mu.softmax(-1) - p[:, None]) ** 2).sum(1), atol=1e-6)
    assert torch.allclose(a.aleatoric, e1.aleatoric)  # uncertainties come from the means, not the draw
    # sampling off: training equals inference
    head.sample = False
    assert torch.equal(head.train()(x).probs, e1.probs)
    # one component: no epistemic uncertainty; sigmoid heads give per-class probabilities
    one = GMMHead(8, 6, 1, "sigmoid").eval()(x)
    assert torch.allclose(one.epistemic, torch.zeros(4, 6)) and ((one.probs > 0) & (one.probs < 1)).all()
    lin = LinearHead(8, 6, "sigmoid")(x)
    assert lin.var is None and torch.equal(lin.aleatoric, torch.zeros(4, 6))
    with pytest.raises(ValueError, match="NUM_MIXTURES"):
        GMMHead(8, 5, 0, "softmax")


def test_linear_ablation_heads_and_k():
    model = build_model(tempura_cfg(REL_HEAD="linear", MEMORY__COMPUTE="none"))
    assert isinstance(model.attention_head, LinearHead) and model.memory is None
    model = build_model(tempura_cfg(NUM_MIXTURES=4))
    assert model.spatial_head.num_mixtures == 4 and model.contacting_head.mu.out_features == 4 * 17


# ---------------------------------------------------------------------------------------------- memory
def test_memory_prototype_is_the_class_mean_of_an_epoch():
    torch.manual_seed(0)
    mem = PredicateMemory(num_predicates=4, dim=3, epoch_videos=2)
    f1 = torch.tensor([[1.0, 0, 0], [0, 2.0, 0]])
    y1 = torch.tensor([[1.0, 0, 1, 0], [1.0, 0, 0, 0]])
    f2 = torch.tensor([[0, 0, 3.0]])
    y2 = torch.tensor([[0, 1.0, 1, 0]])
    mem.accumulate(f1, y1)
    assert not mem.end_video() and not mem.valid.any()  # epoch 0: no memory yet
    x = torch.randn(5, 3)
    assert torch.equal(mem(x), x)
    mem.accumulate(f2, y2)
    assert mem.end_video()  # the epoch's 2nd video: swap in
    assert mem.valid.tolist() == [True, True, True, False]  # predicate 3 never seen: no prototype
    expected = torch.tensor([[0.5, 1.0, 0], [0, 0, 3.0], [0.5, 0, 1.5], [0, 0, 0]])
    assert torch.allclose(mem.memory, expected)
    assert mem.sums.abs().sum() == 0 and mem.weights.sum() == 0 and int(mem.videos_seen) == 2
    # fusion: lam f + (1 - lam) Attn(f, M, M) over the valid prototypes
    keys = expected[:3][None]
    read, _ = mem.attention(x[None], keys, keys)
    assert torch.allclose(mem(x), 0.5 * x + 0.5 * read[0], atol=1e-6)
    # weighted prototypes: weights w give sum(w f) / sum(w)
    mem2 = PredicateMemory(num_predicates=1, dim=1, epoch_videos=1)
    mem2.accumulate(torch.tensor([[1.0], [4.0]]), torch.tensor([[1.0], [3.0]]))
    mem2.end_video()
    assert torch.allclose(mem2.memory, torch.tensor([[13.0 / 4]]))


def test_model_memory_prototypes_are_the_pairs_labels_class_means():
    torch.manual_seed(0)
    model = build_model(tempura_cfg(MEMORY__EPOCH_VIDEOS=1, SAMPLING=False))
    video = make_video()
    captured = {}
    original = model.memory.accumulate

    def spy(features, weights):
        captured["f"], captured["w"] = features.clone(), weights.clone()
        original(features, weights)

    model.memory.accumulate = spy
    model.train()([video])
    f, w = captured["f"], captured["w"]
    # the video's relations: attention 0 / 1, spatial 3, 4, 5, contacting 17, 23 (absolute predicate ids)
    assert torch.nonzero(w.sum(0)).squeeze(1).tolist() == [0, 1, 3, 4, 5, 17, 23]
    assert model.memory.valid.nonzero().squeeze(1).tolist() == [0, 1, 3, 4, 5, 17, 23]
    for c in (0, 3, 23):
        rows = w[:, c] > 0
        assert torch.allclose(model.memory.memory[c], f[rows].mean(0), atol=1e-5)


def test_memory_buffers_are_saved_restored_and_used_at_test_time():
    torch.manual_seed(0)
    model = build_model(tempura_cfg(MEMORY__EPOCH_VIDEOS=2))
    for seed in range(3):  # one refresh + one video of the next epoch's sums
        model.train()([make_video(seed)])
    state = model.state_dict()
    for key in ("memory.memory", "memory.valid", "memory.sums", "memory.weights", "memory.videos_seen"):
        assert key in state
    assert state["memory.valid"].any() and state["memory.weights"].sum() > 0 and int(state["memory.videos_seen"]) == 3
    fresh = build_model(tempura_cfg(MEMORY__EPOCH_VIDEOS=2))
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    video = make_video(5)
    a = model.eval()([video])[0]["frames"][1]["contacting"]
    b = fresh.eval()([video])[0]["frames"][1]["contacting"]
    assert torch.equal(a, b)
    fresh.memory.valid.zero_()  # without the memory the predictions change: it is used at test time
    assert not torch.allclose(fresh([video])[0]["frames"][1]["contacting"], a)


def test_memory_needs_the_epoch_size_only_for_training():
    model = build_model(tempura_cfg(MEMORY__EPOCH_VIDEOS=0))
    check_prediction(make_video(), model.eval()([make_video()])[0])
    with pytest.raises(ValueError, match="EPOCH_VIDEOS"):
        model.train()([make_video()])


def test_early_fusion_and_automated_lambda_and_eval_pass():
    torch.manual_seed(0)
    model = build_model(tempura_cfg(MEMORY__FUSION="early", MEMORY__FEAT_SELECTION="automated",
                                    MEMORY__EPOCH_VIDEOS=1, MEMORY__PASS="eval", MEMORY__WEIGHT_TYPE="both"))
    assert model.memory.gate is not None
    model.train()([make_video()])
    assert model.training and model.memory.valid.any()
    # early fusion stores the relation vector (width rel_dim) and feeds the transformer with the fused one
    losses = model([make_video(1)])
    sum(losses.values()).backward()
    assert model.memory.gate.weight.grad is not None


# ---------------------------------------------------------------------------------------------- losses
def test_loss_functions_by_hand():
    # contrastive: two same-label embeddings at distance 0 (no positive term), one other at 90 degrees
    emb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = euclidean_contrastive_loss(emb, torch.tensor([0, 0, 1]))
    # negatives: d = sqrt(2) > 1 = margin -> 0; positives: d ~ 0 -> ~1e-6
    assert float(loss.detach()) < 1e-5
    loss = euclidean_contrastive_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]]), torch.tensor([0, 1, 1]))
    d01 = 2 ** 0.5
    z2 = F.normalize(torch.tensor([1.0, 0.1]), dim=0)
    d12 = float((torch.tensor([0.0, 1.0]) - z2).norm())
    d02 = float((torch.tensor([1.0, 0.0]) - z2).norm())
    assert d01 > 1 and d02 < 1
    assert float(loss) == pytest.approx(d12 + (1 - d02), rel=1e-4)  # one positive pair, one active negative pair
    # uncertainty weights: 1 + softmax over the batch of the summed uncertainty
    al, ep = torch.tensor([[0.1, 0.2], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.5, 0.5]])
    assert uncertainty_weights(al, ep, "none") is None
    w = uncertainty_weights(al, ep, "both")
    s = torch.tensor([0.3, 1.0])
    assert torch.allclose(w, 1 + s.exp() / s.exp().sum())
    assert torch.allclose(uncertainty_weights(al, ep, "al"), 1 + torch.tensor([0.3, 0.0]).softmax(0))
    # variance regularisation: 0 at unit variance, > 0 below it, its gradient raises small variances
    assert float(variance_regularization(torch.ones(3, 2))) == pytest.approx(0.0, abs=1e-7)
    v = torch.full((2, 2), 0.1, requires_grad=True)
    variance_regularization(v).backward()
    assert float(variance_regularization(v.detach())) == pytest.approx(0.5 * (0.1 - 1 - torch.log(torch.tensor(0.1))))
    assert (v.grad < 0).all()


def test_model_loss_terms_follow_the_config():
    torch.manual_seed(0)
    video = make_video()
    base = dict(SAMPLING=False, MEMORY__COMPUTE="none")
    model = build_model(tempura_cfg("predcls", **base)).train()
    losses = model([video])
    assert set(losses) == {"loss_attention", "loss_spatial", "loss_contacting"}
    # NLL on the mixture probabilities = cross-entropy of log p
    reg = build_model(tempura_cfg("predcls", GMM_REGULARIZATION=0.5, **base)).train()
    reg.load_state_dict(model.state_dict())
    r = reg([video])
    assert r["loss_gmm_reg"] > 0 and torch.allclose(r["loss_attention"], losses["loss_attention"])
    var = reg.attention_head.var
    var.weight.grad = None
    r["loss_gmm_reg"].backward()
    assert var.weight.grad is not None and var.weight.grad.abs().sum() > 0
    margin = build_model(tempura_cfg("predcls", MULTI_LABEL_LOSS="margin", **base)).train()
    margin.load_state_dict(model.state_dict())
    m = margin([video])
    assert not torch.allclose(m["loss_spatial"], losses["loss_spatial"])
    assert torch.allclose(m["loss_attention"], losses["loss_attention"])
    weighted = build_model(tempura_cfg("predcls", REL_LOSS_WEIGHTING="both", **base)).train()
    weighted.load_state_dict(model.state_dict())
    assert not torch.allclose(weighted([video])["loss_contacting"], losses["loss_contacting"])
    # SGCls: object loss, contrastive loss, eos_coef (class 0 weight) and object loss weighting
    sg = build_model(tempura_cfg("sgcls", OBJ_CON_LOSS="euc_con", LAMBDA_CON=2.0, **base)).train()
    s1 = sg([video])
    assert {"loss_object", "loss_object_contrastive"} <= set(s1)
    sg.lambda_con = 1.0
    torch.manual_seed(0)
    assert torch.allclose(sg([video])["loss_object_contrastive"] * 2, s1["loss_object_contrastive"], rtol=1e-4)
    eos = build_model(tempura_cfg("sgcls", OBJ_CON_LOSS="euc_con", EOS_COEF=0.0, **base)).train()
    assert eos.object_class_weight.tolist()[:2] == [0.0, 1.0]  # eos_coef = weight of class 0 (the person)
    eos.load_state_dict(sg.state_dict())
    torch.manual_seed(0)
    s_ref = sg([video])["loss_object"]
    torch.manual_seed(0)
    assert not torch.allclose(eos([video])["loss_object"], s_ref)  # the person boxes stop counting
    gmm_obj = build_model(tempura_cfg("sgcls", OBJ_HEAD="gmm", OBJ_LOSS_WEIGHTING="ep", **base)).train()
    assert isinstance(gmm_obj.object_classifier.head, GMMHead)
    assert torch.isfinite(gmm_obj([video])["loss_object"])


# ---------------------------------------------------------------------------------------------- outputs
def test_predictions_carry_uncertainties_and_the_threshold_flags_pairs():
    torch.manual_seed(0)
    video = make_video()
    model = build_model(tempura_cfg(UNCERTAINTY_THRESHOLD=-1.0)).eval()
    frame = model([video])[0]["frames"][0]
    p = len(frame["pairs"])
    assert frame["aleatoric"].shape == (p, 26) and frame["epistemic"].shape == (p, 26)
    assert torch.allclose(frame["uncertainty"], (frame["aleatoric"] + frame["epistemic"]).mean(1))
    assert frame["uncertain"].all()
    model.uncertainty_threshold = float(frame["uncertainty"].min())
    flags = model([video])[0]["frames"][0]["uncertain"]
    assert torch.equal(flags, frame["uncertainty"] > frame["uncertainty"].min()) and not flags.all()
    model.uncertainty_threshold = 10.0
    assert not model([video])[0]["frames"][0]["uncertain"].any()


def test_tracking_encoder_groups_sequences():
    torch.manual_seed(0)
    enc = TrackingEncoder(8, layers=1, heads=2, dim_feedforward=16, dropout=0.0).eval()
    x = torch.randn(5, 8)
    groups = torch.tensor([3, 1, 3, 2, 1])
    frames = torch.tensor([0, 0, 1, 1, 2])
    out = enc(x, groups, frames)
    # a group's output depends only on its own boxes: changing group 1 leaves groups 2 and 3 unchanged
    x2 = x.clone()
    x2[1] += 1.0
    out2 = enc(x2, groups, frames)
    assert torch.allclose(out[[0, 2, 3]], out2[[0, 2, 3]], atol=1e-6) and not torch.allclose(out[4], out2[4])


@pytest.mark.parametrize("mode", ["sgcls", "sgdet"])
def test_sgcls_sgdet_with_tracking_train_and_predict(mode):
    torch.manual_seed(0)
    model = build_model(tempura_cfg(mode, TRACKING=True, OBJ_CON_LOSS="euc_con"))
    assert model.object_classifier.tracker is not None
    video = make_video(2, num_frames=2)
    losses = model.train()([video])
    # the tracks come from a class predictor trained with its own loss
    assert {"loss_object", "loss_object_contrastive", "loss_object_group"} <= set(losses)
    sum(losses.values()).backward()
    assert model.object_classifier.tracker.encoder.layers[0].linear1.weight.grad is not None
    assert model.object_classifier.group_classifier.weight.grad is not None
    out = model.eval()([video])[0]
    check_prediction(video, out)
    assert "uncertainty" in out["frames"][0]


def test_bad_configs_fail_clearly():
    with pytest.raises(ValueError, match="REL_HEAD"):
        build_model(tempura_cfg(REL_HEAD="mlp"))
    with pytest.raises(ValueError, match="MEMORY.FUSION"):
        build_model(tempura_cfg(MEMORY__FUSION="middle"))
    with pytest.raises(ValueError, match="FEAT_LAMBDA"):
        build_model(tempura_cfg(MEMORY__FEAT_LAMBDA=1.5))
    with pytest.raises(ValueError, match="GMM_REGULARIZATION"):
        build_model(tempura_cfg(GMM_REGULARIZATION=-1.0))


def test_one_tiny_video_overfits():
    torch.manual_seed(0)
    model = build_model(tempura_cfg(MEMORY__EPOCH_VIDEOS=5))
    video = make_video()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(30):
        total = sum(model([video]).values())
        first = float(total.detach()) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total.detach()) < 0.5 * first
    assert model.memory.valid.any()  # the memory was refreshed (every 5 videos) and is now used
    out = model.eval()([video])[0]
    gts = [{k: fr[k] for k in ("boxes", "labels", "relations")} for fr in video["frames"]]
    assert evaluate_video_scene_graphs(gts, out["frames"], constraint="with")["R@20"] == pytest.approx(600 / 7)
