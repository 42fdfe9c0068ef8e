"""Keyframe detector: shapes, masking, freezing / stage-2 prefixes, losses, and the true parameter count."""

import pytest
import torch

from sgg.config import get_cfg
from sgg.modeling import META_ARCH_REGISTRY, build_model
from sgg.modeling.backbone.efficientnet import EfficientNetBackbone, last_blocks_prefixes, load_efficientnet_weights
from sgg.modeling.losses import pairwise_margin_ranking_loss, soft_spearman_loss
from sgg.modeling.meta_arch.keyframe_detector import local_window_mask, sinusoidal_position_encoding


def _tiny_cfg(arch="KeyframeDetector"):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.MODEL.BACKBONE.NAME = "EfficientNetB0"
    cfg.MODEL.EFFICIENTNET.WIDTH_MULT = 0.1
    cfg.MODEL.EFFICIENTNET.DEPTH_MULT = 0.1
    cfg.MODEL.KEYFRAME.FEATURE_DIM = 12
    cfg.MODEL.KEYFRAME.D_MODEL = 16
    cfg.MODEL.KEYFRAME.NUM_HEADS = 2
    cfg.MODEL.KEYFRAME.NUM_LAYERS = 1
    cfg.MODEL.KEYFRAME.DIM_FEEDFORWARD = 32
    cfg.MODEL.KEYFRAME.SCORER_HIDDEN = 8
    cfg.MODEL.KEYFRAME.LOCAL_WINDOW = 1
    return cfg


def test_pixel_model_train_and_eval_contract():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg())
    batch = [{"frames": torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8), "target": torch.rand(5)},
             {"frames": torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8), "target": torch.rand(3)}]
    losses = model(batch)
    assert set(losses) == {"loss_rank", "loss_mse"} and all(v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())  # frozen in stage 1
    assert model.input_proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert [o["scores"].shape for o in out] == [(5,), (3,)]
    assert all(((o["scores"] >= 0) & (o["scores"] <= 1)).all() for o in out)


def test_padding_does_not_change_scores():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg("KeyframeFeatureDetector")).eval()
    short, long_ = torch.randn(4, 12), torch.randn(9, 12)
    with torch.no_grad():
        alone = model([{"features": short}])[0]["scores"]
        batched = model([{"features": short}, {"features": long_}])[0]["scores"]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-5)


def test_local_window_mask_and_position_encoding():
    mask = local_window_mask(5, 1)
    assert mask[2].tolist() == [False, True, True, True, False]
    pe = sinusoidal_position_encoding(6, 8)
    assert pe.shape == (6, 8) and pe[0, 0] == 0 and pe[0, 1] == 1  # sin(0), cos(0)
    torch.testing.assert_close(pe[3, 0], torch.sin(torch.tensor(3.0)))


def test_stage2_prefixes_address_the_last_blocks():
    model = build_model(_tiny_cfg())
    prefixes = last_blocks_prefixes(2)
    assert prefixes == ["backbone.features.7.", "backbone.features.8."]
    names = [n for n, _ in model.named_parameters() if n.startswith(tuple(prefixes))]
    assert names and all(n.startswith(("backbone.features.7.", "backbone.features.8.")) for n in names)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("backbone."))
    with pytest.raises(ValueError, match=r"num_blocks must be in \[0, 9\]"):
        last_blocks_prefixes(10)


def test_unfrozen_backbone_gets_gradients_and_bn_stays_fixed():
    cfg = _tiny_cfg()
    cfg.MODEL.KEYFRAME.FREEZE_BACKBONE = False
    model = build_model(cfg).train()
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not bn.training  # BACKBONE_NORM_EVAL keeps statistics fixed
    before = bn.running_mean.clone()
    loss = model([{"frames": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), "target": torch.rand(4)}])
    sum(loss.values()).backward()
    assert model.backbone.features[8][0].weight.grad is not None
    torch.testing.assert_close(bn.running_mean, before)


def test_true_parameter_count_of_the_seed_architecture():
    cfg = _tiny_cfg()
    for k, v in dict(D_MODEL=512, NUM_HEADS=8, NUM_LAYERS=3, DIM_FEEDFORWARD=2048, SCORER_HIDDEN=256).items():
        setattr(cfg.MODEL.KEYFRAME, k, v)
    cfg.MODEL.EFFICIENTNET.WIDTH_MULT = cfg.MODEL.EFFICIENTNET.DEPTH_MULT = 1.0
    model = build_model(cfg)
    d, ffn = 512, 2048
    mha = 4 * d * d + 4 * d
    encoder_layer = mha + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d
    temporal = (1280 * d + d) + 3 * encoder_layer + 2 * mha + (2 * d * d + d) + (d * 256 + 256) + (256 + 1)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert model.backbone.out_channels == 1280
    assert sum(p.numel() for p in model.parameters()) == temporal + backbone
    assert 16_500_000 < temporal + backbone < 17_500_000  # ~16.9 M, not the seed's 7.8 M


def test_registered_variants_and_input_errors():
    assert {"KeyframeDetector", "KeyframeFeatureDetector"} <= set(META_ARCH_REGISTRY.names())
    model = build_model(_tiny_cfg("KeyframeFeatureDetector"))
    with pytest.raises(ValueError, match=r"needs 'features' \(T, 12\).*FEATURE_DIM"):
        model([{"features": torch.randn(4, 7), "video_id": "v"}])
    with pytest.raises(KeyError, match="has no 'target'"):
        model([{"features": torch.randn(4, 12)}])
    pixel = build_model(_tiny_cfg())
    with pytest.raises(ValueError, match="needs 'frames' uint8 .*KeyframeFeatureDetector"):
        pixel([{"features": torch.randn(4, 12)}])


def test_backbone_weights_load_and_mismatch_error(tmp_path):
    small = EfficientNetBackbone(width_mult=0.1, depth_mult=0.1)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {**small.state_dict(), "classifier.1.weight": torch.zeros(1)}}, path)
    other = EfficientNetBackbone(width_mult=0.1, depth_mult=0.1, weights=str(path))
    for a, b in zip(small.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"w.pth' do not match the network"):
        load_efficientnet_weights(EfficientNetBackbone(width_mult=0.2, depth_mult=0.1), str(path))
    with pytest.raises(FileNotFoundError, match="MODEL.BACKBONE.WEIGHTS"):
        EfficientNetBackbone(weights=str(tmp_path / "missing.pth"))


def test_soft_spearman_tracks_spearman_and_pairwise_margin_hand_case():
    target = torch.tensor([[0.1, 0.5, 0.9, 0.3]])
    perfect = soft_spearman_loss(target * 10, target, temperature=0.01)
    reversed_ = soft_spearman_loss(-target * 10, target, temperature=0.01)
    assert perfect.item() == pytest.approx(0.0, abs=1e-3) and reversed_.item() == pytest.approx(2.0, abs=1e-3)
    pred = torch.zeros(1, 4, requires_grad=True)
    soft_spearman_loss(pred, target).backward()
    assert pred.grad[0, 2] < 0 < pred.grad[0, 0]  # raising the most important step lowers the loss
    # Pairwise margin: pred [0, 0.02, 0.5], target [0, 1, 2] -> ordered pairs (1,0) gap .02, (2,0) .5, (2,1) .48;
    # hinge with margin 0.05: (0.03 + 0 + 0) / 3.
    loss = pairwise_margin_ranking_loss(torch.tensor([[0.0, 0.02, 0.5]]), torch.tensor([[0.0, 1.0, 2.0]]),
                                        margin=0.05)
    assert loss.item() == pytest.approx(0.01, abs=1e-6)
    mask = torch.tensor([[True, True, False]])  # the padded step is ignored
    loss = pairwise_margin_ranking_loss(torch.tensor([[0.0, 0.02, -9.0]]), torch.tensor([[0.0, 1.0, 2.0]]), mask,
                                        margin=0.05)
    assert loss.item() == pytest.approx(0.03, abs=1e-6)


def test_partially_unfrozen_backbone_matches_full_forward():
    torch.manual_seed(0)
    backbone = EfficientNetBackbone(width_mult=0.1, depth_mult=0.1).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = torch.flatten(backbone.avgpool(backbone.features(images)), 1)
    for name, p in backbone.named_parameters():
        p.requires_grad_(name.startswith(("features.7.", "features.8.")))  # what stage 2 does
    assert backbone.first_trainable_block() == 7
    out = backbone(images)
    torch.testing.assert_close(out, reference)
    out.sum().backward()
    assert backbone.features[8][0].weight.grad is not None and backbone.features[0][0].weight.grad is None
