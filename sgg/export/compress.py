"""Model compression for deployment: global L1 unstructured pruning (``torch.nn.utils.prune``, made permanent) and
dynamic int8 quantization (:func:`sgg.modeling.quantization.quantize_model`, the structure ``MODEL.QUANTIZATION``
rebuilds), plus the measures the deploy benchmark reports (sparsity, serialized size)."""

from __future__ import annotations

import io
import logging
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn.utils import prune

from sgg.modeling.quantization import quantize_model

from .cores import ExportError

__all__ = ["PRUNE_METHODS", "prunable_parameters", "prune_global_l1", "apply_zero_masks", "make_pruning_permanent",
           "sparsity", "quantize_model", "state_dict_bytes"]

logger = logging.getLogger(__name__)

PRUNE_METHODS = ("l1",)
# Layers whose weights are pruned: the matrices and kernels that hold nearly all parameters. Norms, embeddings and
# biases stay dense (pruning a LayerNorm scale or a class embedding zeroes whole features).
_PRUNED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_parameters(model: nn.Module) -> List[Tuple[nn.Module, str]]:
    """``(module, "weight")`` of every Linear / Conv layer of ``model`` (MultiheadAttention's output projection is a
    Linear and included; its packed input projection is a bare parameter and is not)."""
    return [(m, "weight") for m in model.modules() if isinstance(m, _PRUNED_TYPES)
            and isinstance(getattr(m, "weight", None), nn.Parameter)]


def prune_global_l1(model: nn.Module, amount: float) -> Dict[str, float]:
    """Zero the ``amount`` fraction (0 < amount < 1) of the Linear / Conv weights with the smallest magnitude, ranked
    over all those layers together (``prune.global_unstructured`` with ``L1Unstructured``), and make it permanent
    (``prune.remove``: plain ``weight`` tensors with zeros, no masks left). Returns :func:`sparsity`."""
    if not 0.0 < float(amount) < 1.0:
        raise ExportError(f"--amount must be a fraction in (0, 1), got {amount}.")
    params = prunable_parameters(model)
    if not params:
        raise ExportError(f"{type(model).__name__} has no Linear / Conv weights to prune.")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(amount))
    make_pruning_permanent(model)
    stats = sparsity(model)
    logger.info("Pruned %.1f%% of %d Linear / Conv weights (global L1, %d layers).", 100 * stats["pruned_fraction"],
                int(stats["prunable"]), len(params))
    return stats


def apply_zero_masks(model: nn.Module) -> int:
    """Re-attach pruning masks (``prune.custom_from_mask``) where the Linear / Conv weights are exactly zero, so that
    fine-tuning keeps the pruned weights at zero; returns the number of layers masked. :func:`make_pruning_permanent`
    (or the checkpointer's ``fold_pruning_masks`` on load) removes them again."""
    n = 0
    for module, name in prunable_parameters(model):
        mask = getattr(module, name) != 0
        if not bool(mask.all()):
            prune.custom_from_mask(module, name, mask)
            n += 1
    return n


def make_pruning_permanent(model: nn.Module) -> int:
    """``prune.remove`` on every re-parametrised weight (``weight_orig`` x ``weight_mask`` -> ``weight``)."""
    n = 0
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
                n += 1
    return n


def sparsity(model: nn.Module) -> Dict[str, float]:
    """``prunable`` (Linear / Conv weight count), ``zeros`` among them, ``pruned_fraction`` = zeros / prunable, and
    ``total_fraction`` = zeros / all parameters."""
    weights = [getattr(m, n) for m, n in prunable_parameters(model)]
    prunable = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(p.numel() for p in model.parameters())
    return {"prunable": float(prunable), "zeros": float(zeros), "pruned_fraction": zeros / max(prunable, 1),
            "total_fraction": zeros / max(total, 1)}


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (the checkpoint's model part)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()
