"""SIA: Ward clusters of box centres per frame, intra-cluster edges only, one token per frame."""

import torch

from sgg.modeling.layers.scene_aggregation import SpatialInformationAggregation, cluster_box_centres, frame_graph


def _box(cx, cy, size=0.05):
    return [cx - size, cy - size, cx + size, cy + size]


def test_clusters_and_graph_stay_inside_each_frame():
    # frame 0: two objects on the left, two on the right -> 2 clusters; frame 1: one object; frame 2: none;
    # frame 3: the same four boxes as frame 0
    layout = [_box(0.1, 0.1), _box(0.15, 0.12), _box(0.9, 0.9), _box(0.85, 0.88)]
    boxes = torch.tensor(layout + [_box(0.5, 0.5)] + layout)
    frame_idx = torch.tensor([0, 0, 0, 0, 1, 3, 3, 3, 3])
    clusters = cluster_box_centres(((boxes[:, :2] + boxes[:, 2:]) / 2), frame_idx, ratio=0.5)
    assert clusters.tolist() == [0, 0, 1, 1, 2, 3, 3, 4, 4]
    adjacency, same = frame_graph(boxes, frame_idx, ratio=0.5)
    assert torch.equal(same, clusters)
    assert adjacency.diagonal().all()
    assert adjacency[0, 1] and adjacency[2, 3] and not adjacency[0, 2] and not adjacency[1, 3]
    assert not adjacency[0, 5] and not adjacency[:4, 4].any()  # no edge across frames, identical layouts included


def test_one_token_per_frame_and_no_mixing_across_frames():
    torch.manual_seed(0)
    sia = SpatialInformationAggregation(dim=8, layers=2, num_heads=2, cluster_ratio=0.5).eval()
    layout = [_box(0.1, 0.1), _box(0.15, 0.12), _box(0.9, 0.9), _box(0.85, 0.88)]
    boxes = torch.tensor(layout + [_box(0.5, 0.5)])
    frame_idx = torch.tensor([0, 0, 0, 0, 2])
    codes = torch.randn(5, 8, requires_grad=True)
    tokens = sia(codes, boxes, frame_idx, num_frames=3)
    assert tokens.shape == (3, 8) and torch.equal(tokens[1], torch.zeros(8))  # frame 1 has no boxes
    # frame 2's token depends on frame 2's box only
    (tokens[2] * torch.arange(8.0)).sum().backward()  # (a plain sum of a LayerNorm output has no gradient)
    assert codes.grad[:4].abs().sum() == 0 and codes.grad[4].abs().sum() > 0
    # a frame's token does not change when another frame's boxes change
    other = sia(codes.detach(), torch.cat([boxes[:4], torch.tensor([_box(0.2, 0.7)])]), frame_idx, num_frames=3)
    assert torch.allclose(other[0], tokens[0].detach()) and not torch.allclose(other[2], tokens[2].detach())
    assert sia(torch.zeros(0, 8), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 2).shape == (2, 8)
