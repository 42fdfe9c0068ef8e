"""VQ-VAE over feature vectors (van den Oord et al., 2017): discrete codes with a straight-through estimator.

SceneLLM (sgg/modeling/meta_arch/scenellm.py) maps each object's RoI feature to one of ``K`` codebook vectors, its
"visual word". The pieces here are generic::

    x (N, in_dim) --encoder MLP--> z_e (N, D) --nearest code (L2)--> z_q (N, D), codes (N,)
    z_q_st = z_e + sg(z_q - z_e)                      (forward: z_q; backward: identity to z_e)
    x_hat = decoder MLP(z_q_st) (N, in_dim)
    losses: reconstruction  MSE(x_hat, x)
            codebook        MSE(z_q, sg(z_e))        (moves the chosen codes towards the encoder outputs)
            commitment      beta * MSE(sg(z_q), z_e) (keeps the encoder close to its codes)

Each loss is returned once, under its own key, so a trainer that sums a loss dict counts each exactly once (the
m3sgg version returned their sum *and* the parts, counting every term twice). Codebook usage (fraction of codes
chosen at least once) and perplexity (``exp`` of the entropy of the code histogram) are returned with every call.

Codebook collapse (all inputs on one or a few codes, the others never chosen again) is the classic VQ failure; the
SceneLLM demo showed it (3 of 128 codes used, perplexity 1). ``restart_dead_codes`` is the usual remedy: in training,
a running average of every code's share of the assignments is kept (a persistent buffer, so it survives checkpoints),
and codes whose share falls below ``dead_threshold / K`` are moved onto randomly drawn encoder outputs of the current
batch before assignment — which also initialises the whole codebook from data at the first training call.

``normalize`` (ViT-VQGAN's l2-normalised codes) projects encoder outputs and codes onto the unit sphere before the
assignment and the losses: nearest code = largest cosine, codebook / commitment losses bounded by 4, so growing
encoder outputs (the straight-through gradient of a downstream loss pushes them) cannot run away from the codebook.
"""

from __future__ import annotations

import logging
from typing import Dict, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VectorQuantizer", "VQVAE", "QuantizerOutput", "code_statistics"]

logger = logging.getLogger(__name__)


class QuantizerOutput(NamedTuple):
    """What :class:`VectorQuantizer` / :class:`VQVAE` return for ``N`` input vectors."""

    quantized: torch.Tensor  # (N, D) straight-through codes: values of the codes, gradient to the encoder output
    codes: torch.Tensor  # (N,) int64 codebook indices
    losses: Dict[str, torch.Tensor]  # scalar losses, each term once
    perplexity: torch.Tensor  # 0-d: exp(entropy of the code histogram of this call), in [1, K]
    usage: torch.Tensor  # 0-d: fraction of the K codes used by this call


def code_statistics(codes: torch.Tensor, num_codes: int):
    """``(perplexity, usage)`` of the code indices ``codes`` ``(N,)`` over a codebook of ``num_codes`` entries
    (both 0-d floats; 1 and 0 for an empty input)."""
    if codes.numel() == 0:
        return torch.ones(()), torch.zeros(())
    hist = torch.bincount(codes.reshape(-1), minlength=num_codes).float()
    p = hist / hist.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return entropy.exp(), (hist > 0).float().mean()


class VectorQuantizer(nn.Module):
    """Codebook of ``num_codes`` x ``dim`` vectors; nearest-code assignment with the straight-through estimator.

    ``forward(z_e (N, dim)) -> QuantizerOutput`` with ``losses`` = ``{codebook, commitment}`` (keys prefixed by
    ``prefix``). The codebook is learned by the codebook loss (gradient), initialised U(-1/K, 1/K) as the VQ-VAE paper.
    """

    def __init__(self, *, num_codes: int, dim: int, commitment_cost: float = 0.25, prefix: str = "loss_vq",
                 restart_dead_codes: bool = False, usage_decay: float = 0.9, dead_threshold: float = 0.01,
                 normalize: bool = False):
        super().__init__()
        self.normalize = bool(normalize)
        if num_codes < 1 or dim < 1:
            raise ValueError(f"VectorQuantizer: num_codes and dim must be >= 1, got {num_codes}, {dim}.")
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.commitment_cost = float(commitment_cost)
        self.prefix = prefix
        self.codebook = nn.Embedding(self.num_codes, self.dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / self.num_codes, 1.0 / self.num_codes)
        self.restart_dead_codes = bool(restart_dead_codes)
        self.usage_decay, self.dead_threshold = float(usage_decay), float(dead_threshold)
        if self.restart_dead_codes:
            # running share of the assignments per code; 0 at the start = every code "dead": data initialisation
            self.register_buffer("usage_ema", torch.zeros(self.num_codes))

    @torch.no_grad()
    def _restart(self, z: torch.Tensor) -> None:
        """Move the dead codes onto random rows of ``z`` (N, dim) (a little noise keeps duplicates apart)."""
        dead = torch.nonzero(self.usage_ema < self.dead_threshold / self.num_codes).squeeze(1)
        if len(dead):
            picks = z[torch.randint(len(z), (len(dead),), device=z.device)]
            noise = torch.randn_like(picks) * (z.std() * 1e-2 + 1e-6)
            self.codebook.weight[dead] = picks + noise

    @torch.no_grad()
    def _count(self, codes: torch.Tensor) -> None:
        share = torch.bincount(codes, minlength=self.num_codes).to(self.usage_ema) / max(len(codes), 1)
        self.usage_ema.mul_(self.usage_decay).add_(share, alpha=1.0 - self.usage_decay)

    def codes_weight(self) -> torch.Tensor:
        """The codebook ``(K, dim)`` as used (unit rows with ``normalize``)."""
        w = self.codebook.weight
        return F.normalize(w, dim=1) if self.normalize else w

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index ``(N,)`` of the closest code (squared L2) of every row of ``z`` ``(N, dim)`` (already normalised
        when ``normalize``)."""
        w = self.codes_weight()
        dist = z.pow(2).sum(1, keepdim=True) - 2 * z @ w.t() + w.pow(2).sum(1)[None]
        return dist.argmin(1)

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        if z_e.ndim != 2 or z_e.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer: expected (N, {self.dim}) inputs, got {tuple(z_e.shape)}.")
        if self.normalize:
            z_e = F.normalize(z_e, dim=1)
        learning = self.restart_dead_codes and self.training and torch.is_grad_enabled() and len(z_e) > 0
        if learning:
            self._restart(z_e.detach())
        codes = self.nearest(z_e.detach())
        if learning:
            self._count(codes)
        z_q = self.codes_weight()[codes]
        if len(z_e):
            losses = {f"{self.prefix}_codebook": F.mse_loss(z_q, z_e.detach()),
                      f"{self.prefix}_commitment": self.commitment_cost * F.mse_loss(z_e, z_q.detach())}
        else:  # zero that still depends on the parameters, so the graph stays connected
            zero = self.codebook.weight.sum() * 0.0
            losses = {f"{self.prefix}_codebook": zero, f"{self.prefix}_commitment": zero}
        quantized = z_e + (z_q - z_e).detach()
        perplexity, usage = code_statistics(codes.detach().cpu(), self.num_codes)
        return QuantizerOutput(quantized, codes, losses, perplexity, usage)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class VQVAE(nn.Module):
    """Encoder MLP -> :class:`VectorQuantizer` -> decoder MLP over vectors of width ``in_dim``.

    ``forward(x (N, in_dim)) -> QuantizerOutput`` whose ``losses`` add ``{prefix}_reconstruction``
    (``MSE(decoder(z_q_st), x)``) to the quantizer's codebook and commitment losses, each once.
    """

    def __init__(self, *, in_dim: int, dim: int, num_codes: int, hidden_dim: int = 0, commitment_cost: float = 0.25,
                 prefix: str = "loss_vq", restart_dead_codes: bool = False, normalize: bool = False):
        super().__init__()
        hidden = hidden_dim or dim
        self.encoder = _mlp(in_dim, hidden, dim)
        self.quantizer = VectorQuantizer(num_codes=num_codes, dim=dim, commitment_cost=commitment_cost, prefix=prefix,
                                         restart_dead_codes=restart_dead_codes, normalize=normalize)
        self.decoder = _mlp(dim, hidden, in_dim)
        self.prefix = prefix

    @property
    def num_codes(self) -> int:
        """Codebook size ``K``."""
        return self.quantizer.num_codes

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        out = self.quantizer(self.encoder(x))
        losses = dict(out.losses)
        if len(x):
            losses[f"{self.prefix}_reconstruction"] = F.mse_loss(self.decoder(out.quantized), x)
        else:
            losses[f"{self.prefix}_reconstruction"] = sum(p.sum() for p in self.decoder.parameters()) * 0.0
        return out._replace(losses=losses)
