"""Deployment: tensor-in / tensor-out export cores per model family, TorchScript / ONNX export and runners, pruning
and dynamic quantization (docs/deploy.md). Layer: above ``sgg.modeling`` and ``sgg.checkpoint``; nothing in sgg
below it imports it (``tools/export_model.py`` and ``tools/benchmarks/deploy.py`` do)."""

from .compress import (  # noqa: F401
    PRUNE_METHODS,
    apply_zero_masks,
    make_pruning_permanent,
    prune_global_l1,
    quantize_model,
    sparsity,
    state_dict_bytes,
)
from .cores import (  # noqa: F401
    FAMILIES,
    ExportCore,
    ExportError,
    ImageSGGCore,
    KeyframeCore,
    UNetCore,
    VideoSGGCore,
    build_core,
)
from .formats import (  # noqa: F401
    FORMATS,
    DeployedModel,
    OnnxRunner,
    TorchScriptRunner,
    check_onnx,
    describe,
    export_onnx,
    export_torchscript,
    load_runner,
    max_abs_diff,
    require_onnx,
)

__all__ = ["PRUNE_METHODS", "apply_zero_masks", "make_pruning_permanent", "prune_global_l1", "quantize_model",
           "sparsity", "state_dict_bytes", "FAMILIES", "ExportCore", "ExportError", "ImageSGGCore", "KeyframeCore",
           "UNetCore", "VideoSGGCore", "build_core", "FORMATS", "DeployedModel", "OnnxRunner", "TorchScriptRunner",
           "check_onnx", "describe", "export_onnx", "export_torchscript", "load_runner", "max_abs_diff",
           "require_onnx"]
