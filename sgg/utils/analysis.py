"""Counting a model's FLOPs on a real input with fvcore's ``FlopCountAnalysis``.

sgg's models take lists of dicts that mix tensors with strings and numbers (file names, ids, frame keys), which
``torch.jit`` tracing (what fvcore runs on) cannot take. :class:`TensorsOnlyAdapter` holds the non-tensor part of one
batch and exposes a forward over the batch's tensors only, rebuilding the dicts inside (detectron2's
``TracingAdapter`` idea); outputs are flattened to their tensors the same way.

FLOPs follow fvcore's convention: one fused multiply-add counts as one flop, and only the operators fvcore has
handles for are counted (matmul / linear / conv / einsum / batch-norm / upsample ...), plus
the fused attention kernels fvcore has no handle for: ``scaled_dot_product_attention`` (``QK^T`` + ``softmax(.)V`` =
``batch x L x S x (E + Ev)`` multiply-adds) and ``_native_multi_head_attention`` (``nn.MultiheadAttention``'s
inference fast path: the same plus the q / k / v / output projections). The rest are listed as not counted.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore.nn scripts its focal losses at import; torch 2.15 deprecates torch.jit.script with a FutureWarning that
    # every sgg CLI would otherwise print (nothing of sgg's uses those losses).
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

__all__ = ["flatten_tensors", "TensorsOnlyAdapter", "sdpa_flop_handle", "native_mha_flop_handle", "count_flops"]

logger = logging.getLogger(__name__)


def flatten_tensors(obj: Any) -> Tuple[List[torch.Tensor], Callable[[List[torch.Tensor]], Any]]:
    """Tensors of a nested list / tuple / dict structure, in a fixed order, and the function that puts a list of
    tensors (of the same length) back into that structure (non-tensor leaves are kept as they were)."""
    tensors: List[torch.Tensor] = []

    def collect(x):
        if isinstance(x, torch.Tensor):
            tensors.append(x)
            return len(tensors) - 1
        if isinstance(x, dict):
            return {k: collect(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(collect(v) for v in x)
        return _Leaf(x)

    skeleton = collect(obj)

    def rebuild(values: List[torch.Tensor]):
        def fill(x):
            if isinstance(x, int) and not isinstance(x, bool):
                return values[x]
            if isinstance(x, _Leaf):
                return x.value
            if isinstance(x, dict):
                return {k: fill(v) for k, v in x.items()}
            return type(x)(fill(v) for v in x)

        return fill(skeleton)

    return tensors, rebuild


class _Leaf:
    """A non-tensor value kept in a skeleton (so that ints in the data are not taken for tensor positions)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class TensorsOnlyAdapter(nn.Module):
    """``forward(*tensors)`` = ``model(batch)`` with the batch's tensors replaced by ``tensors``; returns the output's
    tensors as a tuple."""

    def __init__(self, model: nn.Module, batch: Any):
        super().__init__()
        self.model = model
        self.inputs, self._rebuild = flatten_tensors(batch)

    def forward(self, *tensors: torch.Tensor):
        out = self.model(self._rebuild(list(tensors)))
        flat, _ = flatten_tensors(out)
        return tuple(flat)


def sdpa_flop_handle(inputs, outputs) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention(q (..., L, E), k (..., S, E), v (..., S, Ev))``."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def native_mha_flop_handle(inputs, outputs) -> int:
    """fvcore handle for ``aten::_native_multi_head_attention(q (B, L, E), k (B, S, E), v (B, S, E), ...)``, the fast
    path ``nn.MultiheadAttention`` takes in inference: q / k / v and output projections + attention."""
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch = 1
    for d in q[:-2]:
        batch *= d
    length, source, dim = q[-2], k[-2], q[-1]
    return batch * (2 * length * dim * dim + 2 * source * dim * dim + 2 * length * source * dim)


def count_flops(model: nn.Module, batch: Any) -> Dict[str, Any]:
    """fvcore FLOPs of ``model(batch)`` (inference mode, no gradients): ``{"total", "by_operator",
    "by_module", "unsupported"}`` (``by_module``: top-level children)."""
    adapter = TensorsOnlyAdapter(model, batch).eval()
    with torch.no_grad():
        analysis = FlopCountAnalysis(adapter, tuple(adapter.inputs)).set_op_handle(
            "aten::scaled_dot_product_attention", sdpa_flop_handle,
            "aten::_native_multi_head_attention", native_mha_flop_handle)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        total = int(analysis.total())
        by_module = {k[len("model."):]: int(v) for k, v in analysis.by_module().items()
                     if k.startswith("model.") and k.count(".") == 1}
        return {"total": total, "by_operator": {k: int(v) for k, v in analysis.by_operator().items()},
                "by_module": by_module, "unsupported": dict(analysis.unsupported_ops())}
