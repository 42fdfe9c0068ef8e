"""TEMPURA (Nag et al., CVPR 2023): unbiased dynamic scene graphs with mixture-density heads, a predicate memory and
uncertainty-aware training, on STTran's pipeline.

Per video (one dict from :class:`~sgg.data.video_mapper.ActionGenomeMapper`)::

    frames --feature source--> feature maps; object features of boxes; union-box features of pairs   (as STTran)
    boxes: GT (PredCls / SGCls) or detections (SGDet)
    object classifier (SGCls / SGDet): [feature | p(class) @ embedding | box position]
        (-> tracking branch: boxes grouped by predicted class over the video, each group a sequence through a
            TransformerEncoder with a sinusoidal frame encoding)
        -> Linear + BN + ReLU (the "object memory feature", input of the contrastive loss) -> linear or GMM head
    relation vector (STTran's) -> [early memory fusion] -> spatial encoder -> temporal decoder -> [late memory fusion]
        -> GMM heads: attention (3, softmax), spatial (6, sigmoid), contacting (17, sigmoid)

GMM head (per head, K components): ``mu_k`` = Linear -> C logits, ``var_k`` = sigmoid(Linear -> C), ``pi`` =
softmax over K of Linear -> 1. Training samples ``logits_k = mu_k + sqrt(var_k) * eps`` (``MODEL.TEMPURA.SAMPLING``);
the output is ``p = sum_k pi_k act(logits_k)``; inference uses the means. Uncertainties per class: aleatoric
``sum_k pi_k var_k``, epistemic ``sum_k pi_k (act(mu_k) - p)^2`` with ``p`` from the means. ``REL_HEAD: "linear"``
(one Linear, no sampling, zero uncertainty) is the ablation.

Predicate memory: one prototype per predicate (26 x D), the (binary or uncertainty-weighted) class mean of the
relation features of the training pairs, accumulated in registered buffers while training and swapped in every
``MEMORY.EPOCH_VIDEOS`` training videos (one epoch; the model counts the videos it is trained on, it knows no
trainer). Fusion: ``f' = lam f + (1 - lam) Attn(f, M, M)`` (1 head, no bias). All memory tensors are persistent
buffers, so checkpoints carry them, ``--resume`` continues the epoch's sums exactly and evaluation uses the memory.

Training returns ``loss_attention`` (NLL of the mixture), ``loss_spatial`` / ``loss_contacting`` (BCE or multi-label
margin on the mixture), ``loss_gmm_reg`` (``GMM_REGULARIZATION`` > 0), and in SGCls / SGDet ``loss_object`` and
``loss_object_contrastive`` (``OBJ_CON_LOSS: euc_con``) (+ the detector's losses in SGDet). Evaluation returns
STTran's per-frame dicts plus per pair ``aleatoric`` (P, 26), ``epistemic`` (P, 26), ``uncertainty`` (P,) and
``uncertain`` (P,) bool. docs/tempura.md lists every key, flag and the differences from the reference code.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, NamedTuple, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sgg.config import configurable
from sgg.data.datasets.action_genome import AG_OBJECT_CLASSES
from sgg.structures.boxes import box_xyxy_to_cxcywh, union_box

from ..build import META_ARCH_REGISTRY, build_video_detector, build_video_features
from ..layers import SpatialTemporalTransformer
from ..video_sgg import (
    MODES,
    RelationFeatures,
    VideoSGGModel,
    assign_person_labels,
    check_video_images,
    class_prior,
    detected_training_boxes,
    gather_gt_boxes,
    inference_boxes,
    load_word_vectors,
    normalized_boxes,
    pairs_of_persons,
    predcls_persons,
    sgdet_training_options,
    split_frames,
    training_pairs,
    video_relation_targets,
)

__all__ = ["GMMOutput", "GMMHead", "LinearHead", "PredicateMemory", "TrackingEncoder", "TempuraObjectClassifier",
           "euclidean_contrastive_loss", "uncertainty_weights", "variance_regularization", "TEMPURA"]

logger = logging.getLogger(__name__)

WEIGHTINGS = ("none", "al", "ep", "both")


# --------------------------------------------------------------------------------------------------- heads
class GMMOutput(NamedTuple):
    """What a head returns for ``P`` inputs and ``C`` classes."""

    probs: torch.Tensor  # (P, C) mixture probabilities (sampled logits in training when sampling is on)
    aleatoric: torch.Tensor  # (P, C) sum_k pi_k var_k (zeros for the linear head)
    epistemic: torch.Tensor  # (P, C) sum_k pi_k (act(mu_k) - p_mean)^2 (zeros for the linear head)
    var: Optional[torch.Tensor]  # (P, K, C) component variances (None for the linear head)


def _activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    return logits.softmax(-1) if activation == "softmax" else logits.sigmoid()


class GMMHead(nn.Module):
    """TEMPURA's mixture-density classification head: ``K`` components of (mean logits, sigmoid variance per class,
    mixture weight).

    ``forward(x (P, D)) -> GMMOutput``. In training with ``sample`` the logits of each component are drawn as
    ``mu + sqrt(var) * eps`` (reparameterised, so gradients reach mu and var); otherwise the means are used.
    ``activation`` is ``"softmax"`` (single-label heads) or ``"sigmoid"`` (multi-label heads).
    """

    def __init__(self, in_dim: int, num_classes: int, num_mixtures: int, activation: str, sample: bool = True):
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"GMMHead activation must be 'softmax' or 'sigmoid', got {activation!r}.")
        if num_mixtures < 1:
            raise ValueError(f"MODEL.TEMPURA.NUM_MIXTURES must be >= 1, got {num_mixtures}.")
        self.num_classes, self.num_mixtures = num_classes, num_mixtures
        self.activation, self.sample = activation, sample
        self.mu = nn.Linear(in_dim, num_mixtures * num_classes)
        self.var = nn.Linear(in_dim, num_mixtures * num_classes)
        self.pi = nn.Linear(in_dim, num_mixtures)

    def forward(self, x: torch.Tensor) -> GMMOutput:
        p, k, c = x.shape[0], self.num_mixtures, self.num_classes
        mu = self.mu(x).view(p, k, c)
        var = torch.sigmoid(self.var(x)).view(p, k, c)
        pi = self.pi(x).softmax(-1)[..., None]  # (P, K, 1)
        mean_probs = _activate(mu, self.activation)
        p_mean = (pi * mean_probs).sum(1)
        if self.training and self.sample:
            probs = (pi * _activate(mu + var.sqrt() * torch.randn_like(mu), self.activation)).sum(1)
        else:
            probs = p_mean
        # Uncertainties from the means: they describe the model, not this draw of the noise.
        aleatoric = (pi * var).sum(1)
        epistemic = (pi * (mean_probs - p_mean[:, None]) ** 2).sum(1)
        return GMMOutput(probs, aleatoric, epistemic, var)


class LinearHead(nn.Module):
    """The ablation of :class:`GMMHead` (``REL_HEAD`` / ``OBJ_HEAD: "linear"``): one Linear, no sampling, zero
    uncertainties. ``forward(x (P, D)) -> GMMOutput``."""

    def __init__(self, in_dim: int, num_classes: int, activation: str):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> GMMOutput:
        probs = _activate(self.fc(x), self.activation)
        zeros = torch.zeros_like(probs)
        return GMMOutput(probs, zeros, zeros, None)


def _head(kind: str, in_dim: int, num_classes: int, num_mixtures: int, activation: str, sample: bool) -> nn.Module:
    if kind == "gmm":
        return GMMHead(in_dim, num_classes, num_mixtures, activation, sample)
    if kind == "linear":
        return LinearHead(in_dim, num_classes, activation)
    raise ValueError(f"MODEL.TEMPURA.REL_HEAD / OBJ_HEAD must be 'gmm' or 'linear', got {kind!r}.")


# --------------------------------------------------------------------------------------------------- memory
class PredicateMemory(nn.Module):
    """Predicate prototypes ``(num_predicates, dim)`` and their fusion into pair features.

    Buffers (all persistent, so a checkpoint holds the memory and the running epoch's sums):
    ``memory`` ``(C, D)`` the prototypes in use, ``valid`` ``(C,)`` which prototypes exist (a predicate never seen
    in an epoch has none; before the first epoch ends there is no memory), ``sums`` ``(C, D)`` / ``weights``
    ``(C,)`` the weighted feature sums of the epoch so far, ``videos_seen`` the training videos counted.

    ``accumulate(features (P, D), weights (P, C))`` adds one video; :meth:`end_video` counts it and, every
    ``epoch_videos`` videos, swaps the class means ``sums / weights`` in. ``forward(f (P, D))`` returns
    ``lam f + (1 - lam) Attn(f, M, M)`` over the valid prototypes (``f`` unchanged without a memory).
    """

    def __init__(self, *, num_predicates: int, dim: int, epoch_videos: int, lam: float = 0.5,
                 selection: str = "manual"):
        super().__init__()
        if selection not in ("manual", "automated"):
            raise ValueError(f"MODEL.TEMPURA.MEMORY.FEAT_SELECTION must be 'manual' or 'automated', got "
                             f"{selection!r}.")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"MODEL.TEMPURA.MEMORY.FEAT_LAMBDA must be in [0, 1], got {lam}.")
        self.epoch_videos, self.lam, self.selection = int(epoch_videos), float(lam), selection
        self.attention = nn.MultiheadAttention(dim, 1, bias=False, batch_first=True)
        self.gate = nn.Linear(dim, 1) if selection == "automated" else None
        self.register_buffer("memory", torch.zeros(num_predicates, dim))
        self.register_buffer("valid", torch.zeros(num_predicates, dtype=torch.bool))
        self.register_buffer("sums", torch.zeros(num_predicates, dim, dtype=torch.float64))
        self.register_buffer("weights", torch.zeros(num_predicates, dtype=torch.float64))
        self.register_buffer("videos_seen", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def accumulate(self, features: torch.Tensor, weights: torch.Tensor) -> None:
        """Add ``weights.T @ features`` and ``weights.sum(0)`` of one video (``(P, D)``, ``(P, C)``)."""
        sums = weights.double().t() @ features.double()
        totals = weights.double().sum(0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank adds every rank's video, so the (DDP-broadcast) buffers agree across ranks.
            dist.all_reduce(sums)
            dist.all_reduce(totals)
        self.sums += sums
        self.weights += totals

    @torch.no_grad()
    def end_video(self) -> bool:
        """Count one training video (every rank's under DDP); at an epoch boundary swap the class means in and reset
        the sums. Returns True when the memory was refreshed."""
        if self.epoch_videos < 1:  # checked here, not at build time: evaluation needs no epoch size
            raise ValueError("MODEL.TEMPURA.MEMORY.EPOCH_VIDEOS must be the number of training videos per epoch "
                             f"(>= 1; tools/train.py fills it in from the dataset), got {self.epoch_videos}.")
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        before = int(self.videos_seen)
        self.videos_seen += world
        if int(self.videos_seen) // self.epoch_videos == before // self.epoch_videos:
            return False
        seen = self.weights > 0
        self.memory.copy_(torch.where(seen[:, None], self.sums / self.weights.clamp(min=1e-12)[:, None], 0.0))
        self.valid.copy_(seen)
        self.sums.zero_()
        self.weights.zero_()
        logger.info("TEMPURA: predicate memory refreshed after %d training videos (%d / %d prototypes).",
                    int(self.videos_seen), int(seen.sum()), len(seen))
        return True

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not bool(self.valid.any()) or features.shape[0] == 0:
            return features
        keys = self.memory[self.valid].to(features.dtype)[None]
        read, _ = self.attention(features[None], keys, keys, need_weights=False)
        lam = torch.sigmoid(self.gate(features)) if self.gate is not None else self.lam
        return lam * features + (1 - lam) * read[0]


# --------------------------------------------------------------------------------------------------- objects
def _sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encodings ``(N, dim)`` of integer positions ``(N,)`` (Vaswani et al.)."""
    half = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    freq = torch.exp(-math.log(10000.0) * half / dim)
    angles = positions.float()[:, None] * freq[None]
    pe = torch.zeros(len(positions), dim, device=positions.device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe


class TrackingEncoder(nn.Module):
    """TEMPURA's object tracking branch: boxes of a video grouped by class (``groups`` ``(N,)``), each group with
    more than one box a sequence (frames ascending) through a TransformerEncoder with a sinusoidal encoding of the
    frame index; single boxes pass alone. ``forward(x (N, D), groups (N,), frame_idx (N,)) -> (N, D)``."""

    def __init__(self, dim: int, layers: int = 3, heads: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.1):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"MODEL.TEMPURA.TRACKING_HEADS {heads} must divide the object input width {dim} "
                             "(OBJ_FEATURE_DIM + EMBED_DIM + POS_DIM).")
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.dim = dim

    def forward(self, x: torch.Tensor, groups: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        if len(x) == 0:
            return x
        order = torch.argsort(groups * (int(frame_idx.max()) + 1) + frame_idx, stable=True)
        _, counts = torch.unique_consecutive(groups[order], return_counts=True)
        length = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        offs = torch.arange(length, device=x.device)
        index = (starts[:, None] + offs[None]).clamp(max=len(x) - 1)
        pad = offs[None] >= counts[:, None]
        rows = order[index]  # (G, L) rows of x
        h = x[rows] + _sinusoid(frame_idx[rows].flatten(), self.dim).view(*rows.shape, self.dim)
        h = self.encoder(h, src_key_padding_mask=pad)
        out = torch.empty_like(x)
        out[rows[~pad]] = h[~pad]
        return out


class TempuraObjectClassifier(nn.Module):
    """SGCls / SGDet object classifier: ``[RoI feature | p(class) @ embedding | box-position MLP]`` -> (tracking
    branch) -> ``Linear + BN + ReLU`` (the object memory feature) -> linear or GMM head (softmax).

    ``forward(features (N, F), distribution (N, K), boxes_norm (N, 4) xyxy in [0, 1], frame_idx (N,),
    groups (N,) or None) -> (GMMOutput, hidden (N, H), group_logits (N, K) or None)``. With tracking, ``groups`` gives
    each box's track (a class id: the detector's in SGDet); without it (SGCls, where sgg has no detector
    distribution) a linear class predictor on the untracked input decides the tracks (``group_logits``, trained with
    its own cross-entropy by the model).
    """

    def __init__(self, *, feature_dim: int, num_classes: int, embed_dim: int, pos_dim: int, hidden_dim: int,
                 head: str = "linear", num_mixtures: int = 4, sample: bool = True, tracking: bool = False,
                 tracking_layers: int = 3, tracking_heads: int = 8, tracking_ffn: int = 1024,
                 embedding: Optional[torch.Tensor] = None, dropout: float = 0.1):
        super().__init__()
        self.class_embed = nn.Embedding(num_classes, embed_dim)
        if embedding is not None:
            self.class_embed.weight.data.copy_(embedding)
        self.pos_embed = nn.Sequential(nn.BatchNorm1d(4, momentum=0.001), nn.Linear(4, pos_dim), nn.ReLU(),
                                       nn.Dropout(dropout))
        in_dim = feature_dim + embed_dim + pos_dim
        self.tracker = TrackingEncoder(in_dim, tracking_layers, tracking_heads, tracking_ffn, dropout) \
            if tracking else None
        self.group_classifier = nn.Linear(in_dim, num_classes) if tracking else None
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU())
        self.head = _head(head, hidden_dim, num_classes, num_mixtures, "softmax", sample)

    def _inputs(self, features, distribution, boxes_norm):
        pos = self.pos_embed(box_xyxy_to_cxcywh(boxes_norm))
        return torch.cat([features, distribution @ self.class_embed.weight, pos], 1)

    def forward(self, features, distribution, boxes_norm, frame_idx, groups=None):
        x = self._inputs(features, distribution, boxes_norm)
        group_logits = None
        if self.tracker is not None:
            if groups is None:
                group_logits = self.group_classifier(x)
                groups = group_logits.detach().argmax(1)
            x = self.tracker(x, groups, frame_idx)
        hidden = self.hidden(x)
        return self.head(hidden), hidden, group_logits


# --------------------------------------------------------------------------------------------------- losses
def euclidean_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, pos_margin: float = 0.0,
                               neg_margin: float = 1.0) -> torch.Tensor:
    """Contrastive loss on L2-normalised embeddings ``(N, H)`` with labels ``(N,)`` (TEMPURA's ``euc_con``, the
    metric-learning ContrastiveLoss with Euclidean distance): positive pairs (same label, i != j) pay
    ``relu(d - pos_margin)``, negative pairs ``relu(neg_margin - d)``; each part is averaged over its non-zero terms
    and the two parts are summed. Zero (still connected to the graph) when no term is positive."""
    z = F.normalize(embeddings, dim=1)
    # Not torch.cdist: its gradient at d = 0 (the diagonal, duplicates) is NaN; the epsilon keeps it finite.
    d = (((z[:, None] - z[None]) ** 2).sum(-1) + 1e-12).sqrt()
    same = labels[:, None] == labels[None]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    total = embeddings.sum() * 0.0
    for mask, loss in ((same & ~eye, F.relu(d - pos_margin)), (~same, F.relu(neg_margin - d))):
        terms = loss[mask]
        nonzero = terms > 0
        if nonzero.any():
            total = total + terms[nonzero].mean()
    return total


def uncertainty_weights(aleatoric: torch.Tensor, epistemic: torch.Tensor, kind: str) -> Optional[torch.Tensor]:
    """Per-sample loss weights ``(P,)``: ``1 + exp(sum_c u) / sum_batch exp(sum_c u)`` with ``u`` the aleatoric
    (``"al"``), epistemic (``"ep"``) or summed (``"both"``) uncertainty ``(P, C)`` (detached); None for ``"none"``."""
    if kind == "none":
        return None
    u = {"al": aleatoric, "ep": epistemic, "both": aleatoric + epistemic}[kind].detach().sum(1)
    return 1.0 + torch.softmax(u, 0)


def variance_regularization(var: torch.Tensor) -> torch.Tensor:
    """``mean(0.5 (var - 1 - log var))``: KL(N(mu, var) || N(mu, 1)) per class and component, averaged. Zero at unit
    variance; it keeps the mixture variances from collapsing to 0 (a deterministic head whose aleatoric uncertainty
    says nothing). ``MODEL.TEMPURA.GMM_REGULARIZATION`` scales it (seed flag ``-gmm_regularization``)."""
    var = var.clamp(min=1e-6)
    return (0.5 * (var - 1.0 - var.log())).mean()


def _weighted_mean(values: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    return values.mean() if weights is None else (values * weights).sum() / weights.sum()


def _nll(probs: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    """NLL of mixture probabilities ``(P, C)`` against ``target`` ``(P,)`` (-100 = ignored)."""
    keep = target >= 0
    if not keep.any():
        return probs.sum() * 0.0
    nll = -torch.log(probs[keep].gather(1, target[keep, None]).squeeze(1) + 1e-12)
    return _weighted_mean(nll, None if weights is None else weights[keep])


def _multi_label(probs: torch.Tensor, target: torch.Tensor, kind: str, weights: Optional[torch.Tensor]):
    """BCE (TEMPURA's default) or multi-label margin loss (``-mlm``) on mixture probabilities ``(P, C)``."""
    if len(probs) == 0:
        return probs.sum() * 0.0
    if kind == "bce":
        per_pair = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target, reduction="none").mean(1)
    else:
        order = torch.argsort(target, dim=1, descending=True, stable=True)
        idx = torch.where(torch.gather(target, 1, order) > 0, order, torch.full_like(order, -1))
        per_pair = F.multilabel_margin_loss(probs, idx, reduction="none")
    return _weighted_mean(per_pair, weights)


# --------------------------------------------------------------------------------------------------- the model
@META_ARCH_REGISTRY.register()
class TEMPURA(VideoSGGModel):
    """TEMPURA for video SGG in PredCls, SGCls or SGDet (``TEST.RELATION.MODE``); see the module docstring."""

    @configurable
    def __init__(self, *, features: nn.Module, mode: str, num_classes: int = 36,
                 predicate_groups: Sequence[int] = (3, 6, 17), pooler_resolution: int = 7, union_dim: int = 256,
                 visual_dim: int = 512, embed_dim: int = 200, word_vectors: str = "", class_names: Sequence[str] = (),
                 enc_layers: int = 1, dec_layers: int = 3, num_heads: int = 8, dim_feedforward: int = 2048,
                 dropout: float = 0.1, temporal_window: int = 2, mask_size: int = 27,
                 obj_classifier_hidden: int = 1024, pos_dim: int = 128, object_loss_weight: float = 1.0,
                 sgdet_train_boxes: str = "gt", sgdet_supply: bool = True, sgdet_assign_iou: float = 0.5,
                 num_mixtures: int = 6, rel_head: str = "gmm", obj_head: str = "linear", sampling: bool = True,
                 multi_label_loss: str = "bce", gmm_regularization: float = 0.0, uncertainty_threshold: float = 0.5,
                 rel_loss_weighting: str = "none", obj_loss_weighting: str = "none", obj_con_loss: str = "none",
                 lambda_con: float = 1.0, eos_coef: float = 1.0, tracking: bool = False, tracking_layers: int = 3,
                 tracking_heads: int = 8, tracking_ffn: int = 1024, memory_compute: str = "joint",
                 memory_weight_type: str = "simple", memory_fusion: str = "late", memory_selection: str = "manual",
                 memory_lambda: float = 0.5, memory_epoch_videos: int = 0, memory_pass: str = "train",
                 detector: Optional[nn.Module] = None):
        """
        Args (STTran's pipeline, ``MODEL.STTRAN``): see :class:`~sgg.modeling.meta_arch.sttran.STTran`.
        Args (TEMPURA's, ``MODEL.TEMPURA``; docs/tempura.md has the table):
            num_mixtures: K components of every GMM head (upstream 6 PredCls, 4 SGCls / SGDet).
            rel_head / obj_head: ``"gmm"`` or ``"linear"`` (the K = 1 deterministic ablation).
            sampling: draw ``mu + sqrt(var) eps`` in training (False: train on the means).
            multi_label_loss: spatial / contacting loss, ``"bce"`` (upstream default) or ``"margin"`` (``-mlm``).
            gmm_regularization: weight of :func:`variance_regularization` (0 = off).
            uncertainty_threshold: pairs whose ``uncertainty`` (mean over the 26 predicates of aleatoric +
                epistemic) exceeds it are flagged ``uncertain`` in the predictions.
            rel_loss_weighting / obj_loss_weighting: :func:`uncertainty_weights` kind (``none|al|ep|both``).
            obj_con_loss / lambda_con: ``"euc_con"`` adds :func:`euclidean_contrastive_loss` x lambda_con.
            eos_coef: weight of class 0 in the object cross-entropy (upstream's background slot; in sgg's AG label
                space class 0 is the person).
            tracking (+ layers / heads / ffn): the object tracking branch (:class:`TrackingEncoder`).
            memory_compute: ``"joint"`` (one memory of all 26 predicates) or ``"none"`` (no memory).
            memory_weight_type: prototype weights, ``"simple"`` (binary) or ``"al"|"ep"|"both"`` (exp of the
                pair's per-class uncertainty, normalised per class).
            memory_fusion: ``"late"`` (after the temporal decoder, upstream's published setting) or ``"early"``
                (on the relation vector before the spatial encoder).
            memory_selection / memory_lambda: ``"manual"`` lam = memory_lambda, ``"automated"`` lam =
                sigmoid(Linear(f)).
            memory_epoch_videos: training videos per epoch (the memory is refreshed after each epoch).
            memory_pass: features for the prototypes: ``"train"`` (the training forward's, detached) or ``"eval"``
                (upstream: a second no-grad forward in eval mode).
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"TEMPURA: TEST.RELATION.MODE must be one of {MODES}, got {mode!r}.")
        if mode == "sgdet" and detector is None:
            raise ValueError("TEMPURA in sgdet mode needs a detector (MODEL.VIDEO_DETECTOR); none was given.")
        if len(predicate_groups) != 3:
            raise ValueError(f"MODEL.STTRAN.PREDICATE_GROUPS needs 3 sizes (attention, spatial, contacting), "
                             f"got {tuple(predicate_groups)}.")
        choices = {"MULTI_LABEL_LOSS": (multi_label_loss, ("bce", "margin")),
                   "REL_LOSS_WEIGHTING": (rel_loss_weighting, WEIGHTINGS),
                   "OBJ_LOSS_WEIGHTING": (obj_loss_weighting, WEIGHTINGS),
                   "OBJ_CON_LOSS": (obj_con_loss, ("none", "euc_con")),
                   "MEMORY.COMPUTE": (memory_compute, ("none", "joint")),
                   "MEMORY.WEIGHT_TYPE": (memory_weight_type, ("simple", "al", "ep", "both")),
                   "MEMORY.FUSION": (memory_fusion, ("early", "late")),
                   "MEMORY.PASS": (memory_pass, ("train", "eval"))}
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"MODEL.TEMPURA.{key} must be one of {allowed}, got {value!r}.")
        if gmm_regularization < 0:
            raise ValueError(f"MODEL.TEMPURA.GMM_REGULARIZATION must be >= 0, got {gmm_regularization}.")
        self.mode, self.num_classes = mode, num_classes
        self.groups = tuple(int(g) for g in predicate_groups)
        self.multi_label_loss, self.object_loss_weight = multi_label_loss, object_loss_weight
        # SGDet training boxes (MODEL.STTRAN.SGDET_*, as STTran): GT boxes, or the detections assigned to them
        self.sgdet_train_boxes, self.sgdet_supply = sgdet_train_boxes, bool(sgdet_supply)
        self.sgdet_assign_iou = float(sgdet_assign_iou)
        self.gmm_regularization, self.uncertainty_threshold = float(gmm_regularization), float(uncertainty_threshold)
        self.rel_loss_weighting, self.obj_loss_weighting = rel_loss_weighting, obj_loss_weighting
        self.obj_con_loss, self.lambda_con, self.eos_coef = obj_con_loss, float(lambda_con), float(eos_coef)
        self.memory_weight_type, self.memory_fusion, self.memory_pass = memory_weight_type, memory_fusion, memory_pass
        self.features, self.detector = features, detector

        embedding = None
        if word_vectors:
            if len(class_names) != num_classes:
                raise ValueError(f"MODEL.STTRAN.WORD_VECTORS needs {num_classes} class names, got {len(class_names)}.")
            embedding, missing = load_word_vectors(word_vectors, class_names, embed_dim)
            logger.info("TEMPURA: class embeddings from '%s' (%d / %d classes found).", word_vectors,
                        num_classes - len(missing), num_classes)
        self.relation = RelationFeatures(
            object_dim=features.object_dim, union_channels=features.union_channels, union_dim=union_dim,
            visual_dim=visual_dim, embed_dim=embed_dim, num_classes=num_classes, pooler_resolution=pooler_resolution,
            mask_size=mask_size, embedding=embedding)
        self.rel_dim = self.relation.dim
        self.transformer = SpatialTemporalTransformer(
            dim=self.rel_dim, enc_layers=enc_layers, dec_layers=dec_layers, num_heads=num_heads,
            dim_feedforward=dim_feedforward, dropout=dropout, window=temporal_window)
        self.attention_head = _head(rel_head, self.rel_dim, self.groups[0], num_mixtures, "softmax", sampling)
        self.spatial_head = _head(rel_head, self.rel_dim, self.groups[1], num_mixtures, "sigmoid", sampling)
        self.contacting_head = _head(rel_head, self.rel_dim, self.groups[2], num_mixtures, "sigmoid", sampling)
        self.memory = None
        if memory_compute != "none":
            self.memory = PredicateMemory(num_predicates=sum(self.groups), dim=self.rel_dim,
                                          epoch_videos=memory_epoch_videos, lam=memory_lambda,
                                          selection=memory_selection)
        self.object_classifier = None
        if mode != "predcls":
            self.object_classifier = TempuraObjectClassifier(
                feature_dim=features.object_dim, num_classes=num_classes, embed_dim=embed_dim, pos_dim=pos_dim,
                hidden_dim=obj_classifier_hidden, head=obj_head, num_mixtures=num_mixtures, sample=sampling,
                tracking=tracking, tracking_layers=tracking_layers, tracking_heads=tracking_heads,
                tracking_ffn=tracking_ffn, embedding=embedding, dropout=dropout)
        class_weight = torch.ones(num_classes)
        class_weight[0] = self.eos_coef
        self.register_buffer("object_class_weight", class_weight, persistent=False)

    @classmethod
    def from_config(cls, cfg, features: Optional[nn.Module] = None, detector: Optional[nn.Module] = None) -> dict:
        """Keyword arguments from ``MODEL.STTRAN`` (the shared pipeline), ``MODEL.TEMPURA``, ``TEST.RELATION.MODE``."""
        s, t, m = cfg.MODEL.STTRAN, cfg.MODEL.TEMPURA, cfg.MODEL.TEMPURA.MEMORY
        mode = cfg.TEST.RELATION.MODE
        if features is None:
            features = build_video_features(cfg)
        if mode == "sgdet" and detector is None:
            detector = build_video_detector(cfg, features.backbone)
        return {
            "features": features, "mode": mode, "num_classes": s.NUM_CLASSES,
            "predicate_groups": tuple(s.PREDICATE_GROUPS), "pooler_resolution": s.POOLER_RESOLUTION,
            "union_dim": s.UNION_DIM, "visual_dim": s.VISUAL_DIM, "embed_dim": s.EMBED_DIM,
            "word_vectors": s.WORD_VECTORS,
            "class_names": AG_OBJECT_CLASSES if s.NUM_CLASSES == len(AG_OBJECT_CLASSES) else (),
            "enc_layers": s.ENC_LAYERS, "dec_layers": s.DEC_LAYERS, "num_heads": s.NUM_HEADS,
            "dim_feedforward": s.DIM_FEEDFORWARD, "dropout": s.DROPOUT, "temporal_window": s.TEMPORAL_WINDOW,
            "mask_size": s.MASK_SIZE, "obj_classifier_hidden": s.OBJ_CLASSIFIER_HIDDEN, "pos_dim": s.POS_DIM,
            "object_loss_weight": s.OBJECT_LOSS_WEIGHT, **sgdet_training_options(cfg),
            "num_mixtures": t.NUM_MIXTURES, "rel_head": t.REL_HEAD, "obj_head": t.OBJ_HEAD, "sampling": t.SAMPLING,
            "multi_label_loss": t.MULTI_LABEL_LOSS, "gmm_regularization": t.GMM_REGULARIZATION,
            "uncertainty_threshold": t.UNCERTAINTY_THRESHOLD, "rel_loss_weighting": t.REL_LOSS_WEIGHTING,
            "obj_loss_weighting": t.OBJ_LOSS_WEIGHTING, "obj_con_loss": t.OBJ_CON_LOSS,
            "lambda_con": t.LAMBDA_CON, "eos_coef": t.EOS_COEF, "tracking": t.TRACKING,
            "tracking_layers": t.TRACKING_LAYERS, "tracking_heads": t.TRACKING_HEADS,
            "tracking_ffn": t.TRACKING_FFN, "memory_compute": m.COMPUTE, "memory_weight_type": m.WEIGHT_TYPE,
            "memory_fusion": m.FUSION, "memory_selection": m.FEAT_SELECTION, "memory_lambda": m.FEAT_LAMBDA,
            "memory_epoch_videos": m.EPOCH_VIDEOS, "memory_pass": m.PASS, "detector": detector,
        }

    # ------------------------------------------------------------------------------------------ per video

    def _fuse(self, h: torch.Tensor, stage: str) -> torch.Tensor:
        return self.memory(h) if self.memory is not None and self.memory_fusion == stage else h

    def _relation_heads(self, fmap, boxes, frame_idx, obj_feats, labels, pairs, num_frames: int):
        """Relation vector -> [early fusion] -> spatial-temporal transformer -> [late fusion] -> heads.

        Returns the three head outputs and the features the memory stores (the input of the fusion step)."""
        union = self.features.union_features(fmap, union_box(boxes[pairs[:, 0]], boxes[pairs[:, 1]]),
                                             frame_idx[pairs[:, 0]])
        rel = self.relation(obj_feats, union, boxes, labels, pairs)
        frame_of_pair = frame_idx[pairs[:, 1]]
        stored = rel
        h = self.transformer(self._fuse(rel, "early"), frame_of_pair, num_frames)
        if self.memory_fusion == "late":
            stored = h
        h = self._fuse(h, "late")
        return (self.attention_head(h), self.spatial_head(h), self.contacting_head(h)), stored

    def _classify_objects(self, obj_feats, boxes, frame_idx, video, det_dist=None):
        prior = det_dist if det_dist is not None else class_prior(self.features, obj_feats, self.num_classes)
        # Tracks follow the object classifier's trained group predictor in both modes: upstream groups by its frozen
        # detector's class, but sgg trains SGDet on GT boxes (no detector distribution there), and grouping the same
        # way in training and inference keeps the tracking branch's input consistent.
        return self.object_classifier(obj_feats, prior, normalized_boxes(boxes, video), frame_idx)

    def _video_losses(self, video: dict) -> Dict[str, torch.Tensor]:
        images = check_video_images(video, "TEMPURA")
        fmap = self.features.frame_features(images)
        gt = gather_gt_boxes(video, self.device)
        num_frames = len(video["frames"])
        losses: Dict[str, torch.Tensor] = {}
        if self.detector is not None and self.detector.trainable:
            losses.update(self.detector.losses(fmap, images.shape[-2:], gt.boxes, gt.labels, gt.frame_idx))
        if self.mode == "sgdet" and self.sgdet_train_boxes == "detections":
            gt, obj_feats = detected_training_boxes(video, images, fmap, gt, self.detector, self.features,
                                                    iou_threshold=self.sgdet_assign_iou, supply=self.sgdet_supply)
        else:
            obj_feats = self.features.object_features(fmap, gt.boxes, gt.frame_idx)
        variances = []
        if self.object_classifier is not None:
            obj, hidden, group_logits = self._classify_objects(obj_feats, gt.boxes, gt.frame_idx, video)
            w = uncertainty_weights(obj.aleatoric, obj.epistemic, self.obj_loss_weighting)
            nll = -torch.log(obj.probs.gather(1, gt.labels[:, None]).squeeze(1) + 1e-12)
            # Class weights as cross-entropy's (weighted mean), times the uncertainty weights.
            cw = self.object_class_weight[gt.labels] * (w if w is not None else 1.0)
            losses["loss_object"] = self.object_loss_weight * (nll * cw).sum() / cw.sum().clamp(min=1e-12)
            if group_logits is not None:  # the class predictor that decides the SGCls tracks
                losses["loss_object_group"] = self.object_loss_weight * F.cross_entropy(group_logits, gt.labels)
            if self.obj_con_loss == "euc_con":
                losses["loss_object_contrastive"] = self.lambda_con * euclidean_contrastive_loss(hidden, gt.labels)
            if obj.var is not None:
                variances.append(obj.var)
        pairs = training_pairs(gt)
        att_t, spa_t, con_t = video_relation_targets(video, gt, pairs, self.groups)
        (att, spa, con), stored = self._relation_heads(fmap, gt.boxes, gt.frame_idx, obj_feats, gt.labels, pairs,
                                                       num_frames)
        for name, out, target, kind in (("attention", att, att_t, None), ("spatial", spa, spa_t, "ml"),
                                        ("contacting", con, con_t, "ml")):
            w = uncertainty_weights(out.aleatoric, out.epistemic, self.rel_loss_weighting)
            losses[f"loss_{name}"] = _nll(out.probs, target, w) if kind is None else \
                _multi_label(out.probs, target, self.multi_label_loss, w)
            if out.var is not None:
                variances.append(out.var)
        if self.gmm_regularization > 0 and variances:
            reg = torch.stack([variance_regularization(v) for v in variances]).mean()
            losses["loss_gmm_reg"] = self.gmm_regularization * reg
        if self.memory is not None:
            self._update_memory(video, fmap, gt, obj_feats, pairs, (att_t, spa_t, con_t), stored, (att, spa, con))
        return losses

    @torch.no_grad()
    def _update_memory(self, video, fmap, gt, obj_feats, pairs, targets, stored, outs) -> None:
        """Add this video's pair features to the epoch's prototype sums, then count the video."""
        if self.memory_pass == "eval":
            # Upstream's uncertainty pass: the same pairs again, no dropout, no sampling.
            was_training = self.training
            self.eval()
            try:
                outs, stored = self._relation_heads(fmap, gt.boxes, gt.frame_idx, obj_feats.detach(), gt.labels,
                                                    pairs, len(video["frames"]))
            finally:
                self.train(was_training)
        att_t, spa_t, con_t = targets
        labels = torch.cat([F.one_hot(att_t.clamp(min=0), self.groups[0]).float() * (att_t >= 0)[:, None].float(),
                            spa_t, con_t], 1)  # (P, 26) multi-hot over all predicates
        if self.memory_weight_type != "simple":
            al = torch.cat([o.aleatoric for o in outs], 1)
            ep = torch.cat([o.epistemic for o in outs], 1)
            u = {"al": al, "ep": ep, "both": al + ep}[self.memory_weight_type]
            labels = labels * torch.exp(u)  # normalised per class by the running weight sums
        self.memory.accumulate(stored.detach(), labels)
        self.memory.end_video()

    @torch.no_grad()
    def _video_inference(self, video: dict) -> dict:
        images = check_video_images(video, "TEMPURA")
        fmap = self.features.frame_features(images)
        num_frames = len(video["frames"])
        boxes, original, labels, frame_idx, det_dist, det_feats = inference_boxes(
            video, images, fmap, self.mode, self.detector, self.device)
        obj_feats = det_feats if det_feats is not None else self.features.object_features(fmap, boxes, frame_idx)
        if self.mode == "predcls":
            scores = torch.ones(len(boxes), device=self.device)
            person, is_person = predcls_persons(frame_idx, num_frames)
        else:
            probs = self._classify_objects(obj_feats, boxes, frame_idx, video, det_dist)[0].probs if len(boxes) \
                else boxes.new_zeros((0, self.num_classes))
            labels, scores, person, is_person = assign_person_labels(probs, frame_idx, num_frames)
        pairs = pairs_of_persons(person, is_person, frame_idx)
        n = sum(self.groups)
        if len(pairs):
            (att, spa, con), _ = self._relation_heads(fmap, boxes, frame_idx, obj_feats, labels, pairs, num_frames)
            aleatoric = torch.cat([att.aleatoric, spa.aleatoric, con.aleatoric], 1)
            epistemic = torch.cat([att.epistemic, spa.epistemic, con.epistemic], 1)
            att, spa, con = att.probs, spa.probs, con.probs
        else:
            att, spa, con = (boxes.new_zeros((0, g)) for g in self.groups)
            aleatoric = epistemic = boxes.new_zeros((0, n))
        uncertainty = (aleatoric + epistemic).mean(1)
        return {"frames": split_frames(num_frames, frame_idx, original, labels, scores, pairs, attention=att,
                                       spatial=spa, contacting=con, aleatoric=aleatoric, epistemic=epistemic,
                                       uncertainty=uncertainty, uncertain=uncertainty > self.uncertainty_threshold)}
