"""ResNet (frozen BN, FREEZE_AT, local weights) and SmallCNN backbones."""

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from sgg.config import get_cfg
from sgg.modeling import BACKBONE_REGISTRY, build_backbone


def _cfg(**kv):
    cfg = get_cfg()
    for k, v in kv.items():
        setattr(cfg.MODEL.BACKBONE, k, v)
    return cfg


def test_small_cnn_shape_and_stride():
    net = build_backbone(_cfg(NAME="SmallCNN", OUT_CHANNELS=24))
    out = net(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 24, 64 // net.stride, 96 // net.stride) and net.out_channels == 24 and net.stride == 16
    with pytest.raises(ValueError, match="OUT_CHANNELS"):
        build_backbone(_cfg(NAME="SmallCNN", OUT_CHANNELS=4))


def test_small_cnn_stride_8_keeps_twice_the_resolution():
    net = build_backbone(_cfg(NAME="SmallCNN", OUT_CHANNELS=16, SMALL_CNN_STRIDE=8))
    assert net.stride == 8 and net(torch.randn(1, 3, 64, 96)).shape == (1, 16, 8, 12)
    with pytest.raises(ValueError, match="SMALL_CNN_STRIDE must be 8 or 16, got 4"):
        build_backbone(_cfg(NAME="SmallCNN", SMALL_CNN_STRIDE=4))


def test_resnet50_frozen_bn_freeze_at_and_output():
    net = build_backbone(_cfg(NAME="ResNet", DEPTH=50, FREEZE_AT=2))
    assert "ResNet" in BACKBONE_REGISTRY and net.out_channels == 2048 and net.stride == 32
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert not any(p.requires_grad for p in net.stages[0].parameters())  # res2 frozen at FREEZE_AT 2
    assert all(p.requires_grad for p in net.stages[1].parameters())
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 2048, 2, 2)
    net0 = build_backbone(_cfg(NAME="ResNet", DEPTH=50, FREEZE_AT=0))
    assert all(p.requires_grad for p in net0.parameters())
    with pytest.raises(ValueError, match="DEPTH"):
        build_backbone(_cfg(NAME="ResNet", DEPTH=34))


def test_resnet_loads_local_torchvision_weights(tmp_path):
    torch.manual_seed(3)
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save(reference.state_dict(), path)
    net = build_backbone(_cfg(NAME="ResNet", DEPTH=50, WEIGHTS=str(path)))
    assert torch.equal(net.stem[0].weight, reference.conv1.weight)
    assert torch.equal(net.stages[3][2].conv3.weight, reference.layer4[2].conv3.weight)
    assert torch.equal(net.stem[1].running_mean, reference.bn1.running_mean)
    with pytest.raises(FileNotFoundError, match="local"):
        build_backbone(_cfg(NAME="ResNet", DEPTH=50, WEIGHTS=str(tmp_path / "missing.pth")))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises((ValueError, RuntimeError)):
        build_backbone(_cfg(NAME="ResNet", DEPTH=50, WEIGHTS=str(tmp_path / "bad.pth")))
