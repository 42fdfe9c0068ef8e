"""Writing, checking and running exported cores: TorchScript (``torch.jit.trace``) and ONNX (``torch.onnx.export``
with ``dynamo=False``, checked by ``onnx.checker`` and run by ONNX Runtime).

**Which ONNX exporter.** torch 2.15's default (``dynamo=True``, through ``torch.export``) needs ``onnxscript`` and
took 58-103 s for one tiny keyframe model on the shared 2-core machine, against 3.5 s for the TorchScript-based
exporter (``dynamo=False``) used here. That exporter has one defect that matters for sgg: when
``nn.MultiheadAttention`` gets the *same* tensor as query, key and value, its packed in-projection is recorded with
the example's sequence length as a constant, so the graph fails on any other length (ONNX Runtime: "Input shape
{13,1,16}, requested shape {8,4,4}"). :func:`export_onnx` therefore passes the value as a distinct tensor
(``clone``) during export, which takes MultiheadAttention's three-projection path: the same weights and arithmetic,
and the length stays symbolic. The fused "fast path" kernels of ``nn.TransformerEncoderLayer`` /
``MultiheadAttention`` (``aten::_transformer_encoder_layer_fwd``, no ONNX symbolic) are switched off while tracing.

``onnx`` / ``onnxruntime`` are the ``deploy`` extra (``pip install -e ".[deploy]" -c constraints.txt``), imported
only here, on first use, with one error line naming the extra when missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from .cores import ExportCore, ExportError

__all__ = ["FORMATS", "ONNX_OPSET", "require_onnx", "export_torchscript", "export_onnx", "check_onnx",
           "TorchScriptRunner", "OnnxRunner", "load_runner", "DeployedModel", "max_abs_diff", "describe",
           "tracing_context"]

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 17
EXTRA_HINT = 'pip install -e ".[deploy]" -c constraints.txt'


def require_onnx():
    """``(onnx, onnxruntime)``, or :class:`ExportError` naming the ``deploy`` extra when either is missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ExportError(f"ONNX export needs the 'deploy' extra (onnx, onnxruntime): {e.name or e} is not "
                          f"installed; run {EXTRA_HINT}.") from e
    return onnx, onnxruntime


def _distinct_value(module, args, kwargs):
    """Forward pre-hook of nn.MultiheadAttention: query is key is value -> value cloned (module docstring)."""
    if len(args) >= 3 and args[0] is args[1] and args[1] is args[2]:
        args = (args[0], args[1], args[2].clone()) + tuple(args[3:])
    return args, kwargs


@contextlib.contextmanager
def tracing_context(core: nn.Module, *, distinct_attention_values: bool = False):
    """No autograd, fused attention kernels off, tracer warnings silenced (the cores' shape-dependent Python is
    intended: the tracer records sizes symbolically); with ``distinct_attention_values`` the MultiheadAttention
    pre-hook above is installed for the duration."""
    handles = []
    if distinct_attention_values:
        handles = [m.register_forward_pre_hook(_distinct_value, with_kwargs=True) for m in core.modules()
                   if isinstance(m, nn.MultiheadAttention)]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()


def export_torchscript(core: ExportCore, inputs: Sequence[torch.Tensor], path: str) -> str:
    """Trace ``core`` on ``inputs`` and save the TorchScript module to ``path`` (loads with ``torch.jit.load``; the
    RoIAlign of the video core is torchvision's op: ``import torchvision`` before loading that one elsewhere)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tracing_context(core):
        traced = torch.jit.trace(core, tuple(inputs), check_trace=False)
    torch.jit.save(traced, path)
    return path


def export_onnx(core: ExportCore, inputs: Sequence[torch.Tensor], path: str, *, opset: int = ONNX_OPSET) -> str:
    """Export ``core`` on ``inputs`` to the ONNX file ``path`` (``dynamo=False``, ``core.dynamic_axes`` dynamic,
    opset ``opset``) and check it with ``onnx.checker``. Raises :class:`ExportError` for a graph the exporter cannot
    write (e.g. a dynamically quantized model: torch has no ONNX form for its int8 Linear)."""
    onnx, _ = require_onnx()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    axes = {k: v for k, v in core.dynamic_axes.items() if k in core.input_names + core.output_names}
    try:
        with tracing_context(core, distinct_attention_values=True):
            torch.onnx.export(core, tuple(inputs), path, dynamo=False, input_names=list(core.input_names),
                              output_names=list(core.output_names), dynamic_axes=axes, opset_version=opset)
    except (torch.onnx.errors.UnsupportedOperatorError, torch.onnx.errors.SymbolicValueError, RuntimeError) as e:
        if os.path.exists(path):
            os.remove(path)
        raise ExportError(f"torch.onnx.export could not write the {core.family} core: "
                          f"{str(e).splitlines()[0][:200]}") from e
    check_onnx(path)
    return path


def check_onnx(path: str) -> None:
    """``onnx.checker.check_model`` on the file (full check, with shape inference)."""
    onnx, _ = require_onnx()
    onnx.checker.check_model(path, full_check=True)


class TorchScriptRunner:
    """Runs a TorchScript file: ``runner(*tensors) -> list of tensors``."""

    def __init__(self, path: str):
        self.path = path
        self.module = torch.jit.load(path, map_location="cpu").eval()

    def __call__(self, *inputs: torch.Tensor) -> List[torch.Tensor]:
        with torch.no_grad():
            out = self.module(*inputs)
        return list(out) if isinstance(out, (list, tuple)) else [out]


class OnnxRunner:
    """Runs an ONNX file in ONNX Runtime (CPU unless ``providers`` says otherwise): ``runner(*tensors) -> list of
    tensors``; inputs the exporter dropped as unused are skipped by name."""

    def __init__(self, path: str, input_names: Sequence[str], providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 0):
        _, ort = require_onnx()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(path, options, providers=list(providers))
        self.input_names = list(input_names)
        self.used = {i.name for i in self.session.get_inputs()}

    def __call__(self, *inputs: torch.Tensor) -> List[torch.Tensor]:
        feed = {name: t.detach().cpu().numpy() for name, t in zip(self.input_names, inputs) if name in self.used}
        return [torch.from_numpy(o) for o in self.session.run(None, feed)]


def load_runner(fmt: str, path: str, core: ExportCore, **kwargs) -> Callable:
    """A runner of the exported file ``path`` in format ``fmt`` (:data:`FORMATS`)."""
    if fmt == "torchscript":
        return TorchScriptRunner(path)
    if fmt == "onnx":
        return OnnxRunner(path, core.input_names, **kwargs)
    raise ExportError(f"Unknown export format '{fmt}'; choose one of {FORMATS}.")


class DeployedModel(nn.Module):
    """An exported core behind the model's own interface: ``forward(batched_inputs) -> [prediction dict]`` =
    ``core.postprocess(runner(*core.inputs(x)), x)`` per input, so the normal evaluators (and
    ``inference_on_dataset``) score the exported graph exactly as they score the eager model. ``runner`` is a
    :class:`TorchScriptRunner`, :class:`OnnxRunner`, or the eager core itself."""

    def __init__(self, core: ExportCore, runner: Callable):
        super().__init__()
        self.core = core
        self.runner = runner

    def forward(self, batched_inputs: List[dict]) -> List[dict]:
        with torch.no_grad():
            return [self.core.postprocess(_as_list(self.runner(*self.core.inputs(x))), x) for x in batched_inputs]


def _as_list(out) -> List[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference between two equally long lists of same-shaped tensors (inf if shapes differ)."""
    a, b = _as_list(a), _as_list(b)
    if len(a) != len(b):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if tuple(x.shape) != tuple(y.shape):
            return float("inf")
        if x.numel():
            worst = max(worst, float((x.detach().cpu().float() - y.detach().cpu().float()).abs().max()))
    return worst


def describe(core: ExportCore, inputs: Sequence[torch.Tensor]) -> Dict[str, Tuple]:
    """``{input name: (shape, dtype)}`` of the example inputs (for ``export.json``)."""
    return {n: (list(t.shape), str(t.dtype).replace("torch.", "")) for n, t in zip(core.input_names, inputs)}
