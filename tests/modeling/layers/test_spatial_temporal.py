"""STTran-family transformer blocks over variable-length groups of pair features."""

import pytest
import torch

from sgg.modeling.layers import SpatialTemporalTransformer, segment_index, unblock_empty


def test_segment_index_pads_and_unblocks_empty_segments():
    index, pad = segment_index(torch.tensor([2, 0, 1]), torch.tensor([0, 2, 2]), 2, 3)
    assert index.tolist() == [[0, 1], [2, 2], [2, 2]]
    assert pad.tolist() == [[False, False], [True, True], [False, True]]
    assert unblock_empty(pad).tolist() == [[False, False], [False, True], [False, True]]


def test_temporal_window_limits_what_each_frame_sees():
    torch.manual_seed(0)
    net = SpatialTemporalTransformer(dim=16, enc_layers=1, dec_layers=2, num_heads=4, dim_feedforward=32,
                                     dropout=0.0, window=2).eval()
    frame_of_pair = torch.tensor([0, 0, 1, 2, 2, 3])
    x = torch.randn(6, 16)
    y = net(x, frame_of_pair, 4)
    x2 = x.clone()
    x2[0] += 5.0  # change a pair of frame 0
    y2 = net(x2, frame_of_pair, 4)
    changed = (y2 - y).abs().sum(1) > 1e-5
    # frame 0 and 1 read window (0, 1); frames 2 and 3 read windows (1, 2) and (2, 3): untouched
    assert changed.tolist() == [True, True, True, False, False, False]
    # an empty frame neither breaks attention nor produces NaN
    out = net(torch.randn(3, 16), torch.tensor([0, 0, 2]), 4)
    assert torch.isfinite(out).all() and out.shape == (3, 16)
    with pytest.raises(ValueError, match="divisible"):
        SpatialTemporalTransformer(dim=10, enc_layers=1, dec_layers=1, num_heads=4, dim_feedforward=8, dropout=0,
                                   window=2)


def test_spatial_and_temporal_parts_compose_to_forward():
    torch.manual_seed(1)
    net = SpatialTemporalTransformer(dim=8, enc_layers=1, dec_layers=1, num_heads=2, dim_feedforward=16,
                                     dropout=0.0, window=2).eval()
    frames = torch.tensor([0, 1, 1, 2])
    x = torch.randn(4, 8)
    spatial = net.spatial(x, frames, 3)
    # the spatial encoder only mixes pairs of one frame: frame 0's single pair does not see frame 1
    x2 = x.clone()
    x2[1] += 3.0
    assert torch.allclose(net.spatial(x2, frames, 3)[0], spatial[0])
    assert torch.allclose(net(x, frames, 3), net.temporal(spatial, frames, 3))
