"""Converting checkpoints released by upstream codebases into sgg's state-dict names.

A converter is a function ``convert(state, *, source) -> ConversionResult`` registered in
:data:`CHECKPOINT_CONVERTERS` under the name ``tools/convert_checkpoint.py --from NAME`` uses. It receives the
upstream model's state dict (already unwrapped from ``{"model": ...}`` / ``{"state_dict": ...}`` containers and a DDP
``module.`` prefix by :func:`unwrap_state_dict`) and returns sgg's state dict plus the source keys it could not map.
A converter given a file of another kind raises :class:`WrongCheckpointKindError` saying what it expected.

Upstream files are read by :func:`load_upstream_file`: ``torch.load(weights_only=True)`` first; a file that also
pickles the few harmless objects training scripts store beside the weights (an ``argparse.Namespace`` of the run's
options, numpy arrays/scalars) is read again with exactly those classes allowed (torch's restricted unpickler with
:data:`EXTRA_SAFE_GLOBALS`); any other global (a function, ``os.system`` ...) is refused and nothing in the file runs.

The result is written by :func:`save_converted` as ``{"model": state_dict, "converted_from": {...}}`` atomically,
never over an existing file unless asked; ``MODEL.WEIGHTS`` loads it with the strict load of
:class:`~sgg.checkpoint.DetectionCheckpointer`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import torch

from sgg.utils.registry import Registry

from .checkpointer import CheckpointError, _short, atomic_torch_save

__all__ = [
    "CHECKPOINT_CONVERTERS", "ConversionResult", "WrongCheckpointKindError", "EXTRA_SAFE_GLOBALS",
    "load_upstream_file", "unwrap_state_dict", "convert_checkpoint", "save_converted", "rename_keys",
    "require_prefix",
]

logger = logging.getLogger(__name__)

CHECKPOINT_CONVERTERS = Registry("CHECKPOINT_CONVERTERS")
CHECKPOINT_CONVERTERS.__doc__ = """Functions ``convert(state: Dict[str, Tensor], *, source: str) -> ConversionResult``
that rename an upstream model's state dict into sgg's; the registered name is ``--from`` of
tools/convert_checkpoint.py."""


class WrongCheckpointKindError(CheckpointError):
    """A converter was given a file whose keys are not of the kind it converts (message: what it expected and the
    converter that probably fits)."""


@dataclass
class ConversionResult:
    """What a converter returns.

    Attributes:
        state_dict: sgg's names -> tensors, ready for ``model.load_state_dict``.
        unmapped: source keys the converter could not map (they are not in ``state_dict``).
        notes: human-readable remarks (e.g. tensors reshaped, keys deliberately dropped and why).
    """

    state_dict: Dict[str, torch.Tensor]
    unmapped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _numpy_globals() -> List[Any]:
    """numpy's array / scalar / dtype constructors, also under the ``numpy.core`` names numpy 1.x wrote (most upstream
    files) when numpy 2 (``numpy._core``) is installed: ``(object, "pickled name")`` entries of torch's allow-list."""
    core = importlib.import_module("numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2
                                   else "numpy.core.multiarray")
    out: List[Any] = [np.ndarray, np.dtype, core._reconstruct, core.scalar]
    if core.__name__.startswith("numpy._core"):
        out += [(core._reconstruct, "numpy.core.multiarray._reconstruct"),
                (core.scalar, "numpy.core.multiarray.scalar")]
    # numpy >= 1.25 pickles dtypes as numpy.dtypes.Float32DType etc.
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out.extend(getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType"))
    return out


# Objects upstream training scripts pickle beside the weights that are plain data: the run's argparse options and
# numpy arrays / scalars. torch's weights_only unpickler rebuilds them without calling any of their methods' code.
EXTRA_SAFE_GLOBALS: List[Any] = [argparse.Namespace, *_numpy_globals()]


def _unsafe_globals(path: str) -> List[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # an old (non-zip) file: torch cannot list them; the error message says so
        return []


def load_upstream_file(path: str) -> Any:
    """Safely read an upstream checkpoint ``.pth`` / ``.tar`` / ``.pt`` -> whatever it holds (usually a dict).

    ``torch.load(weights_only=True)``; if the file also holds an ``argparse.Namespace`` or numpy objects, read again
    allowing exactly :data:`EXTRA_SAFE_GLOBALS`. Raises :class:`CheckpointError` (one line, naming the file) for a
    missing / unreadable / truncated file or one that references any other global (it is not run).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint to convert not found: '{path}'.")
    cpu = torch.device("cpu")
    try:
        return torch.load(path, map_location=cpu, weights_only=True)
    except pickle.UnpicklingError as first:
        if "global" not in str(first).lower():
            raise CheckpointError(f"'{path}' is not a readable checkpoint (the unpickler stopped: {_short(first)}; "
                                  "nothing in it was run).") from first
    except MemoryError:
        raise
    except Exception as e:  # random bytes / truncation fail in many ways (RuntimeError, EOFError, KeyError ...)
        raise CheckpointError(f"'{path}' is not a readable checkpoint ({type(e).__name__}: {_short(e)}).") from e
    try:
        with torch.serialization.safe_globals(EXTRA_SAFE_GLOBALS):
            data = torch.load(path, map_location=cpu, weights_only=True)
    except pickle.UnpicklingError as e:
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in EXTRA_SAFE_GLOBALS}
        # zip files list their globals; for old-format files torch's message names the first one ("GLOBAL x.y")
        refused = ([g for g in _unsafe_globals(path) if g not in allowed]
                   or re.findall(r"GLOBAL ([\w.]+)", str(e))[:1])
        what = (f"references {', '.join(refused[:3])}" if refused
                else f"needs a global that is not allowed ({_short(e)})")
        raise CheckpointError(f"Refusing to load '{path}': it {what}; upstream checkpoints hold only tensors, "
                              "numbers, strings, containers, numpy arrays and argparse options (nothing was run). "
                              "Re-save its state dict with torch.save(model.state_dict(), ...).") from None
    except MemoryError:
        raise
    except Exception as e:
        raise CheckpointError(f"'{path}' is not a readable checkpoint ({type(e).__name__}: {_short(e)}).") from e
    logger.info("'%s' holds non-tensor objects (argparse options / numpy); read with them allowed.", path)
    return data


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, (torch.Tensor, np.ndarray)) for k, v in obj.items())


# Containers upstream scripts wrap the state dict in: detectron2 / fvcore ("model"), STTran & most ("state_dict"),
# faster-rcnn.pytorch ("model"), others ("net", "module").
_CONTAINER_KEYS = ("model", "state_dict", "net", "module")


def unwrap_state_dict(data: Any, *, source: str = "<checkpoint>") -> Dict[str, torch.Tensor]:
    """The model state dict inside ``data``: ``data`` itself if it maps names to tensors, else the first of
    ``data["model"]``, ``data["state_dict"]``, ``data["net"]``, ``data["module"]`` that does (searched recursively);
    numpy arrays become tensors and a ``module.`` prefix on every key (DDP / DataParallel) is stripped.

    Raises :class:`CheckpointError` naming ``source`` and its top-level keys if no state dict is found.
    """
    found: Optional[Mapping] = None
    stack = [data]
    while stack and found is None:
        obj = stack.pop(0)
        if _is_state_dict(obj):
            found = obj
        elif isinstance(obj, Mapping):
            stack.extend(obj[k] for k in _CONTAINER_KEYS if k in obj)
    if found is None:
        keys = sorted(map(str, data))[:8] if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"'{source}' holds no model state dict (names -> tensors) at its top level or under "
                              f"{'/'.join(_CONTAINER_KEYS)}; found: {keys}.")
    state = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
             for k, v in found.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def require_prefix(state: Mapping[str, Any], prefixes, *, source: str, expected: str, hint: str = "") -> None:
    """Raise :class:`WrongCheckpointKindError` unless some key of ``state`` starts with one of ``prefixes``.

    ``expected``: what such a file is (e.g. "a faster-rcnn.pytorch Action Genome detector"); ``hint``: e.g.
    "did you mean --from sttran?".
    """
    prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    if not any(k.startswith(prefixes) for k in state):
        sample = ", ".join(sorted(state)[:3]) or "(no keys)"
        shown = ", ".join(f"'{p}*'" for p in prefixes)
        raise WrongCheckpointKindError(f"'{source}': no {shown} keys: this is not {expected} (its keys: {sample} "
                                       f"...){'; ' + hint if hint else ''}.")


def rename_keys(state: Mapping[str, torch.Tensor], rename: Callable[[str], Optional[str]]) -> ConversionResult:
    """Apply ``rename(source_key) -> sgg key or None`` to every key; None marks the key unmapped.

    Two source keys renamed to one sgg key is a converter bug (ValueError)."""
    out: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    for key, value in state.items():
        new = rename(key)
        if new is None:
            unmapped.append(key)
            continue
        if new in out:
            raise ValueError(f"Converter bug: two source keys map to '{new}' (the second is '{key}').")
        out[new] = value
    return ConversionResult(out, unmapped)


def convert_checkpoint(name: str, src: str) -> ConversionResult:
    """Read ``src`` safely, unwrap its state dict and convert it with the converter registered as ``name``."""
    converter = CHECKPOINT_CONVERTERS.get(name)
    state = unwrap_state_dict(load_upstream_file(src), source=src)
    result = converter(state, source=src)
    bad = [k for k, v in result.state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"Converter '{name}' bug: non-tensor entries {bad[:3]}.")
    return result


def save_converted(result: ConversionResult, dst: str, *, converter: str, source: str,
                   overwrite: bool = False) -> None:
    """Write ``{"model": result.state_dict, "converted_from": {...}}`` to ``dst`` atomically.

    ``converted_from`` records the converter name, the source file and the unmapped keys. Refuses
    (:class:`CheckpointError`) an existing ``dst`` unless ``overwrite``, and a ``dst`` that is ``source`` itself.
    """
    if os.path.abspath(dst) == os.path.abspath(source):
        raise CheckpointError(f"The converted checkpoint '{dst}' would replace its source; choose another DST.")
    if os.path.exists(dst) and not overwrite:
        raise CheckpointError(f"'{dst}' exists; not overwriting it (pass --overwrite, or choose another DST).")
    if os.path.isdir(dst):
        raise CheckpointError(f"'{dst}' is a folder; DST must be a file path such as converted.pth.")
    data = {"model": {k: v.contiguous() for k, v in result.state_dict.items()},
            "converted_from": {"converter": converter, "source": os.path.abspath(source),
                               "unmapped": list(result.unmapped), "notes": list(result.notes)}}
    try:
        atomic_torch_save(data, dst)
    except OSError as e:
        raise CheckpointError(f"Could not write '{dst}' ({e.strerror or e}).") from e
