"""Post-training dynamic int8 quantization of a built model (``MODEL.QUANTIZATION: "dynamic"``).

:func:`quantize_model` replaces every ``nn.Linear`` by ``torch.ao.nn.quantized.dynamic.Linear``
(``torch.ao.quantization.quantize_dynamic``): int8 weights with one scale per tensor, activations quantized on the fly
per batch, CPU only. ``nn.MultiheadAttention``'s output projection (a ``NonDynamicallyQuantizableLinear``) and its
packed input projection are not ``nn.Linear`` modules and stay float, as torch leaves them; no sgg model has an
LSTM / GRU, the other layer type ``quantize_dynamic`` handles, so only ``nn.Linear`` is listed.

A quantized Linear keeps its weights in an opaque packed object, which would make its ``state_dict`` hold a tuple
and a dtype — not tensors, so sgg's checkpointer (tensors only, ``torch.load(weights_only=True)``) could neither
write nor read it. :func:`quantize_model` therefore installs two hooks on the root module: ``state_dict()`` lists each
packed pair as ``<name>._packed_params.weight`` (a ``torch.qint8`` tensor with its scale / zero point) and
``<name>._packed_params.bias`` (float), and ``load_state_dict`` packs them back. A quantized checkpoint is thus an
ordinary sgg checkpoint that loads into a model built with the same ``MODEL.QUANTIZATION``
(``build_model`` applies it before the weights are loaded, so ``tools/train_net.py --eval-only`` evaluates it).
"""

from __future__ import annotations

import logging
from typing import Dict

import torch
from torch import nn

from sgg.config.config import ConfigError

__all__ = ["QUANTIZATION_MODES", "quantize_model", "is_quantized", "check_quantization_device"]

logger = logging.getLogger(__name__)

# MODEL.QUANTIZATION values: "" = float model, "dynamic" = int8 dynamic quantization of nn.Linear.
QUANTIZATION_MODES = ("", "dynamic")

_PACKED = "._packed_params._packed_params"
_DTYPE = "._packed_params.dtype"


def _flatten_packed(module: nn.Module, state: Dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: packed (weight, bias) tuples -> two tensors; the constant qint8 dtype entry dropped."""
    for key in [k for k in state if k.endswith(_PACKED)]:
        weight, bias = state.pop(key)
        base = key[: -len(_PACKED)]
        state[f"{base}._packed_params.weight"] = weight
        if bias is not None:
            state[f"{base}._packed_params.bias"] = bias
        state.pop(base + _DTYPE, None)


def _pack_flat(module: nn.Module, state: Dict, prefix: str, local_metadata, strict, missing_keys, unexpected_keys,
               error_msgs) -> None:
    """load_state_dict pre-hook: the inverse of :func:`_flatten_packed` for every quantized Linear of ``module``."""
    for name, child in module.named_modules():
        if not isinstance(child, torch.ao.nn.quantized.dynamic.Linear):
            continue
        base = f"{prefix}{name}._packed_params"
        weight = state.pop(f"{base}.weight", None)
        if weight is None:
            continue  # missing: reported by load_state_dict as the packed key
        state[f"{base}._packed_params"] = (weight, state.pop(f"{base}.bias", None))
        state.setdefault(f"{base}.dtype", torch.qint8)


def _keep_ordinary_path(module: nn.Module, args) -> None:
    """No-op forward pre-hook (see :func:`quantize_model`)."""
    return None


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` holds dynamically quantized Linear layers."""
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def check_quantization_device(mode: str, device: torch.device) -> None:
    """Dynamic int8 kernels run on CPU only: refuse ``MODEL.QUANTIZATION dynamic`` on another device."""
    if mode and torch.device(device).type != "cpu":
        raise ConfigError(f"MODEL.QUANTIZATION '{mode}' runs on CPU only (torch's dynamic int8 kernels), but "
                         f"MODEL.DEVICE resolves to '{device}'; set MODEL.DEVICE cpu.")


def quantize_model(model: nn.Module, mode: str = "dynamic") -> nn.Module:
    """Quantize ``model`` in place (``mode`` = ``MODEL.QUANTIZATION``; ``""`` returns it unchanged) and install the
    tensor-only state-dict hooks (module docstring). The model must be on CPU and in eval mode afterwards."""
    if mode not in QUANTIZATION_MODES:
        raise ConfigError(f"MODEL.QUANTIZATION must be one of {QUANTIZATION_MODES}, got '{mode}'.")
    if not mode:
        return model
    if is_quantized(model):
        return model
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    for layer in model.modules():
        if isinstance(layer, nn.TransformerEncoderLayer):
            # Its fused inference fast path reads linear1.weight as a tensor, which a quantized Linear has as a
            # method (AttributeError); a forward pre-hook is one of the conditions under which torch declines that
            # path and runs the module's ordinary (quantized) layers.
            layer.register_forward_pre_hook(_keep_ordinary_path)
    model.register_state_dict_post_hook(_flatten_packed)
    model.register_load_state_dict_pre_hook(_pack_flat)
    logger.info("MODEL.QUANTIZATION dynamic: %d nn.Linear layers -> int8 dynamic quantized (CPU).", n_linear)
    return model

