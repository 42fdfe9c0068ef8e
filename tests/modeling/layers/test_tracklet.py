"""sgg.modeling.layers.tracklet: grouping rows into padded sequences (with chunking), sinusoidal positions, and the
group-wise transformer encoder DSG-DETR uses for its tracklet and temporal stages."""

import math

import pytest
import torch

from sgg.modeling.layers import GroupTransformerEncoder, group_batches, sinusoidal_positions


def test_group_batches_round_trip_keeps_order_inside_groups():
    groups = torch.tensor([2, 0, 2, 1, 0, 2])
    index, pad, slot = group_batches(groups)
    assert index.shape == (3, 3)
    assert index[~pad].tolist() == [1, 4, 3, 0, 2, 5]  # group 0: rows 1, 4; group 1: row 3; group 2: rows 0, 2, 5
    assert index.view(-1)[slot].tolist() == list(range(6))


def test_group_batches_chunks_long_groups():
    groups = torch.tensor([7] * 5 + [3] * 2)
    index, pad, slot = group_batches(groups, chunk=2)
    lengths = (~pad).sum(1).tolist()
    assert lengths == [2, 2, 2, 1]  # group 3 (rows 5, 6), group 7 cut into 2 + 2 + 1
    assert index.view(-1)[slot].tolist() == list(range(7))
    assert index[3, 0] == 4


def test_sinusoidal_positions_values():
    pe = sinusoidal_positions(torch.tensor([0, 3]), 6)
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    assert pe[1, 0] == pytest.approx(math.sin(3.0)) and pe[1, 1] == pytest.approx(math.cos(3.0))
    assert pe[1, 2] == pytest.approx(math.sin(3.0 / 10000 ** (2 / 6)))
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(torch.tensor([1]), 5)


def encoder(**kw):
    torch.manual_seed(0)
    enc = GroupTransformerEncoder(dim=8, layers=2, num_heads=2, dim_feedforward=16, dropout=0.0, **kw)
    return enc.eval()


def test_groups_do_not_attend_to_each_other():
    enc = encoder()
    x = torch.randn(6, 8)
    groups = torch.tensor([0, 1, 0, 1, 0, 1])
    pos = torch.tensor([0, 0, 1, 1, 2, 2])
    out = enc(x, groups, pos)
    x2 = x.clone()
    x2[1] += 5.0  # change a row of group 1
    out2 = enc(x2, groups, pos)
    assert torch.allclose(out[groups == 0], out2[groups == 0], atol=1e-6)
    assert not torch.allclose(out[3], out2[3])  # the rest of group 1 sees it
    # A single group of the same rows (in order) gives what the tracklet alone gives.
    alone = enc(x[groups == 0], torch.zeros(3, dtype=torch.long), pos[groups == 0])
    assert torch.allclose(alone, out[groups == 0], atol=1e-5)


def test_positions_matter_and_chunks_cut_attention():
    enc = encoder()
    x = torch.randn(4, 8)
    groups = torch.zeros(4, dtype=torch.long)
    a = enc(x, groups, torch.arange(4))
    b = enc(x, groups, torch.tensor([0, 5, 10, 15]))
    assert not torch.allclose(a, b)
    chunked = encoder(chunk=2)
    out = chunked(x, groups, torch.arange(4))
    x2 = x.clone()
    x2[3] += 5.0
    out2 = chunked(x2, groups, torch.arange(4))
    assert torch.allclose(out[:2], out2[:2], atol=1e-6)  # rows 0, 1 are a different piece than row 3
    assert not torch.allclose(out[2], out2[2])
    with pytest.raises(ValueError, match="positions"):
        enc(x, groups)
    with pytest.raises(ValueError, match="chunk"):
        GroupTransformerEncoder(dim=8, layers=1, num_heads=2, dim_feedforward=8, dropout=0.0, chunk=-1)


def test_gradients_flow_and_empty_input():
    enc = encoder()
    enc.train()
    x = torch.randn(5, 8, requires_grad=True)
    enc(x, torch.tensor([0, 0, 1, 1, 1]), torch.arange(5)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert enc(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)).shape == (0, 8)
