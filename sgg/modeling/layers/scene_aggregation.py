"""Spatial information aggregation (SceneLLM's "SIA"): the objects of one frame -> one frame token.

SceneLLM composes a frame like a Chinese character from its components: objects close to each other form a
component, components form the frame. Here, per frame::

    node_i  = code_i (N_t, D) + box MLP(cx, cy, w, h of the normalised box)
    clusters: Ward hierarchical clustering of the box centres, cut at max(1, round(ratio x N_t)) clusters
    graph   : full edges inside each cluster (+ self loops), none between clusters or frames
    GCN     : LAYERS x  H <- H + ReLU(D^-1/2 (A + I) D^-1/2 H W)           (plain PyTorch, no graph library)
    cluster : mean of its nodes -> self-attention among the clusters of the frame
    token   = mean of the frame's cluster outputs (D,); a frame without boxes gets zeros

All frames of a video are processed at once (block-diagonal adjacency, attention masked to the frame), so the cost is
one dense (N x N) product per layer for the N boxes of the video. The clustering (scipy, already a dependency)
decides the graph only; it is not differentiated.
"""

from __future__ import annotations

import logging
from typing import Tuple

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from torch import nn

from sgg.structures.boxes import box_xyxy_to_cxcywh

__all__ = ["cluster_box_centres", "frame_graph", "SpatialInformationAggregation"]

logger = logging.getLogger(__name__)


def cluster_box_centres(centres: torch.Tensor, frame_idx: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Global cluster id ``(N,)`` int64 of every box: Ward clustering of the box ``centres`` ``(N, 2)`` within each
    frame (``frame_idx`` ``(N,)``), cut at ``max(1, round(ratio x n))`` clusters for a frame of ``n`` boxes.

    Ids are consecutive over the video, frame by frame (frame 0's clusters first).
    """
    if centres.ndim != 2 or centres.shape[1] != 2 or len(centres) != len(frame_idx):
        raise ValueError(f"cluster_box_centres: expected (N, 2) centres and (N,) frame indices, got "
                         f"{tuple(centres.shape)} and {tuple(frame_idx.shape)}.")
    pts = centres.detach().cpu().double().numpy()
    frames = frame_idx.detach().cpu().numpy()
    out = np.zeros(len(pts), dtype=np.int64)
    next_id = 0
    for t in np.unique(frames):
        rows = np.nonzero(frames == t)[0]
        n = len(rows)
        k = max(1, int(round(ratio * n)))
        if n == 1 or k == 1:
            labels = np.ones(n, dtype=np.int64)
        elif k >= n:
            labels = np.arange(1, n + 1)
        else:
            labels = fcluster(linkage(pts[rows], method="ward"), t=k, criterion="maxclust")
        # renumber 1..k in order of first appearance, so ids do not depend on scipy's numbering
        _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        out[rows] = next_id + order[inverse]
        next_id += len(first)
    return torch.from_numpy(out).to(frame_idx.device)


def frame_graph(boxes_norm: torch.Tensor, frame_idx: torch.Tensor, ratio: float = 0.5
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The SIA graph of a video's boxes ``boxes_norm`` ``(N, 4)`` (xyxy, frame fractions): ``(adjacency (N, N) bool
    with self loops, edges only inside a cluster of one frame; cluster ids (N,))``."""
    centres = box_xyxy_to_cxcywh(boxes_norm)[:, :2]
    clusters = cluster_box_centres(centres, frame_idx, ratio)
    return clusters[:, None] == clusters[None, :], clusters


class SpatialInformationAggregation(nn.Module):
    """Object codes + boxes of a video -> one token per frame (see the module docstring).

    ``forward(codes (N, dim), boxes_norm (N, 4) xyxy in [0, 1], frame_idx (N,), num_frames) -> (num_frames, dim)``.
    """

    def __init__(self, *, dim: int, layers: int = 2, num_heads: int = 4, cluster_ratio: float = 0.5,
                 dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MODEL.SCENELLM.SIA_HEADS ({num_heads}) must divide MODEL.SCENELLM.CODE_DIM ({dim}).")
        if not 0.0 < cluster_ratio <= 1.0:
            raise ValueError(f"MODEL.SCENELLM.CLUSTER_RATIO must be in (0, 1], got {cluster_ratio}.")
        self.cluster_ratio = float(cluster_ratio)
        self.pos_embed = nn.Sequential(nn.Linear(4, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.gcn = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.cluster_attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, codes: torch.Tensor, boxes_norm: torch.Tensor, frame_idx: torch.Tensor,
                num_frames: int) -> torch.Tensor:
        out = codes.new_zeros((num_frames, self.dim))
        if len(codes) == 0:
            return out
        adjacency, clusters = frame_graph(boxes_norm, frame_idx, self.cluster_ratio)
        a = adjacency.to(codes.dtype)
        norm = a.sum(1).rsqrt()
        a_hat = norm[:, None] * a * norm[None, :]
        h = codes + self.pos_embed(box_xyxy_to_cxcywh(boxes_norm))
        for layer in self.gcn:
            h = h + torch.relu(a_hat @ layer(h))
        # clusters: mean of their nodes; each cluster belongs to the frame of its nodes
        num_clusters = int(clusters.max()) + 1
        counts = torch.bincount(clusters, minlength=num_clusters).to(h.dtype)
        c = h.new_zeros((num_clusters, self.dim)).index_add_(0, clusters, h) / counts[:, None]
        cluster_frame = torch.zeros(num_clusters, dtype=torch.long, device=h.device)
        cluster_frame[clusters] = frame_idx
        blocked = cluster_frame[:, None] != cluster_frame[None, :]  # attention only among one frame's clusters
        attended, _ = self.cluster_attention(c[None], c[None], c[None], attn_mask=blocked, need_weights=False)
        c = self.norm(c + attended[0])
        frame_counts = torch.bincount(cluster_frame, minlength=num_frames).to(h.dtype)
        summed = out.index_add(0, cluster_frame, c)
        return summed / frame_counts.clamp(min=1)[:, None]

