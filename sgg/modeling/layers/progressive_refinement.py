"""OED's progressive refinement over reference frames (Wang et al., CVPR 2024): the temporal stage of a one-stage
video SGG model.

A one-stage model predicts, per frame, ``Q`` pair queries (subject box, object box + class, predicates). The temporal
stage refines the queries of a *key* frame with the queries of ``R`` *reference* frames:

* every reference query gets a confidence :func:`reference_query_scores` (product of its best object, attention,
  spatial and contacting probabilities);
* :class:`ProgressiveRefinement` runs ``len(topk_fractions)`` post-norm layers (self-attention over the key frame's
  queries, cross-attention to the ``round(f * N)`` best of the ``N`` reference queries, feed-forward); the fractions
  shrink from layer to layer (upstream: 0.8, 0.5, 0.3 of the 100 queries per reference frame, "coarse to fine");
* :func:`select_reference_frames` picks the reference frames of every key frame (upstream's rules for training and
  test, plus a causal rule that only looks at past frames).

Shapes: queries ``(B, Q, D)`` of the key frames, ``(B, N, D)`` of their reference frames (``N = R x Q``, frame
after frame); scores ``(B, N)``.
"""

from __future__ import annotations

import logging
from typing import List, Sequence

import torch
from torch import nn

from .transformer import TransformerDecoderLayer

__all__ = ["reference_query_scores", "top_reference_queries", "ProgressiveRefinement", "select_reference_frames",
           "REFERENCE_RULES"]

logger = logging.getLogger(__name__)

# Reference-frame rules: "random" (upstream training), "strided" (upstream test, future frames included),
# "causal_random" / "causal_strided" (the same over past frames only, for online use).
REFERENCE_RULES = ("random", "strided", "causal_random", "causal_strided")


def reference_query_scores(obj_logits: torch.Tensor, attention_logits: torch.Tensor, spatial_logits: torch.Tensor,
                           contacting_logits: torch.Tensor) -> torch.Tensor:
    """Confidence of every query: max p(object class) x max p(attention) x max p(spatial) x max p(contacting).

    ``obj_logits (..., C + 1)`` (last column = no object, excluded), ``attention_logits (..., A + 1)`` (softmax over
    all columns, the extra "background" one excluded from the max, as upstream), ``spatial_logits (..., S)`` and
    ``contacting_logits (..., K)`` (sigmoid). Returns ``(...)``.
    """
    obj = obj_logits.softmax(-1)[..., :-1].amax(-1)
    att = attention_logits.softmax(-1)[..., :-1].amax(-1)
    return obj * att * spatial_logits.sigmoid().amax(-1) * contacting_logits.sigmoid().amax(-1)


def top_reference_queries(queries: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` best reference queries of every key frame: ``queries (B, N, D)`` (the reference frames' queries,
    frame after frame), ``scores (B, N)`` -> ``(B, min(k, N), D)``, best first (ties: the lower index first)."""
    b, n, d = queries.shape
    k = max(1, min(int(k), n))
    # A stable descending sort makes ties deterministic (torch.topk's order on ties is unspecified).
    idx = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(queries, 1, idx[..., None].expand(b, k, d))


class ProgressiveRefinement(nn.Module):
    """Stack of refinement layers; layer ``i`` attends to the ``round(topk_fractions[i] * N)`` best of the ``N``
    reference queries (:func:`top_reference_queries`; upstream: ``N = R x 100``, so 160 / 100 / 60 for two
    reference frames). Each layer is a post-norm decoder layer (self-attention over the key frame's queries,
    cross-attention to the selected reference queries, feed-forward), the layer OED calls
    ``TemporalQueryEncoderLayer``; no position embeddings (the queries carry their content).

    ``forward(key (B, Q, D), refs (B, N, D), ref_scores (B, N)) -> (B, Q, D)``.
    """

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float,
                 topk_fractions: Sequence[float] = (0.8, 0.5, 0.3)):
        super().__init__()
        if not topk_fractions or any(not 0 < f <= 1 for f in topk_fractions):
            raise ValueError(f"MODEL.OED.TOPK_FRACTIONS must be non-empty fractions in (0, 1], got "
                             f"{tuple(topk_fractions)}.")
        self.topk_fractions = tuple(float(f) for f in topk_fractions)
        self.layers = nn.ModuleList(TransformerDecoderLayer(dim, num_heads, dim_feedforward, dropout)
                                    for _ in self.topk_fractions)

    def num_selected(self, num_refs: int) -> List[int]:
        """Reference queries each layer attends to, of ``num_refs`` candidates: ``max(1, round(f * num_refs))``."""
        return [max(1, int(round(f * num_refs))) for f in self.topk_fractions]

    def forward(self, key: torch.Tensor, refs: torch.Tensor, ref_scores: torch.Tensor) -> torch.Tensor:
        """Refined key-frame queries ``(B, Q, D)``."""
        if refs.ndim != 3 or refs.shape[0] != key.shape[0] or refs.shape[-1] != key.shape[-1] \
                or ref_scores.shape != refs.shape[:2]:
            raise ValueError(f"ProgressiveRefinement: refs must be (B, N, D) and ref_scores (B, N) matching key "
                             f"{tuple(key.shape)}, got {tuple(refs.shape)} and {tuple(ref_scores.shape)}.")
        out = key
        for layer, k in zip(self.layers, self.num_selected(refs.shape[1])):
            out = layer(out, top_reference_queries(refs, ref_scores, k))
        return out


def select_reference_frames(num_frames: int, num_refs: int, interval: int, rule: str,
                            generator: torch.Generator = None) -> torch.Tensor:
    """Reference frames ``(num_frames, num_refs)`` int64 (indices into the video's annotated frames) of every key.

    Candidates of key ``t``: the annotated frames within ``t +- interval`` (``"causal_*"``: ``t - interval .. t - 1``),
    the key excluded. ``"random"``: upstream training — the candidate list is doubled until it holds at least
    ``num_refs`` entries, then ``num_refs`` of them are drawn without replacement (torch's RNG, so checkpoints
    restore the stream). ``"strided"``: upstream test — every ``(n - 1) // (num_refs - 1)``-th candidate when there are
    more than ``num_refs``, else all, repeated until ``num_refs``, the first ``num_refs`` kept. A key without
    candidates (a 1-frame video; the first frame under a causal rule) is its own reference (upstream loops forever).
    """
    if rule not in REFERENCE_RULES:
        raise ValueError(f"MODEL.OED reference rule must be one of {REFERENCE_RULES}, got {rule!r}.")
    if num_refs < 1 or interval < 1:
        raise ValueError(f"MODEL.OED.NUM_REF_FRAMES and the intervals must be >= 1, got {num_refs}, {interval}.")
    causal = rule.startswith("causal")
    out = torch.empty((num_frames, num_refs), dtype=torch.long)
    for t in range(num_frames):
        hi = t - 1 if causal else min(num_frames - 1, t + interval)
        cand = [i for i in range(max(0, t - interval), hi + 1) if i != t] or [t]
        if rule.endswith("random"):
            pool = list(cand)
            while len(pool) < num_refs:
                pool = pool + pool
            pick = torch.randperm(len(pool), generator=generator)[:num_refs].tolist()
            refs = [pool[i] for i in pick]
        else:
            step = (len(cand) - 1) // (num_refs - 1) if num_refs > 1 and len(cand) > num_refs else 1
            step = max(step, 1) if num_refs > 1 else len(cand)
            refs = cand[::step]
            while len(refs) < num_refs:
                refs = refs + refs
            refs = refs[:num_refs]
        out[t] = torch.tensor(refs)
    return out
