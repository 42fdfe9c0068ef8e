"""detectron2-format weights (model-zoo ``.pkl`` / ``.pth``) loaded into sgg modules by detectron2's checkpointer.

detectron2's ``DetectionCheckpointer`` does the format work (Detectron/Caffe2 names, numpy arrays, name-matching
heuristics for backbone-only ImageNet files); sgg adds what its own checkpoints promise: local files only, ``.pth``
read with ``torch.load(weights_only=True)``, ``.pkl`` read only when it holds data (a pickle naming any global other
than numpy's array constructors is refused before detectron2 unpickles it), and a clear error when nothing in the
file fits the module.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Sequence

from torch import nn

from sgg.config.detectron2 import import_detectron2
from sgg.utils.pickles import DataOnlyUnpickler, RefusedPickleError

from .checkpointer import CheckpointError, load_checkpoint_file

__all__ = ["load_detectron2_weights", "check_data_only_pickle"]

logger = logging.getLogger(__name__)


class _WeightsUnpickler(DataOnlyUnpickler):
    allowed = "detectron2 weight files hold only dicts, strings, numbers and numpy arrays"


def check_data_only_pickle(path: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` unpickles with data-only globals (numpy arrays, builtins)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        _WeightsUnpickler(io.BytesIO(data), source=path, encoding="latin1").load()  # Detectron's py2 pickles
    except RefusedPickleError as e:
        raise CheckpointError(str(e)) from None
    except Exception as e:  # truncated / corrupt
        raise CheckpointError(f"'{path}' is not a readable pickle ({type(e).__name__}: {e}).") from e


def _checkpointer_class(d2_checkpoint):
    class _Checkpointer(d2_checkpoint.DetectionCheckpointer):
        """detectron2's checkpointer with sgg's safe ``.pth`` reading; remembers the incompatible keys."""

        incompatible = None

        def _torch_load(self, f):
            return load_checkpoint_file(f, key="the detectron2 weights")

        def _load_model(self, checkpoint):
            self.incompatible = super()._load_model(checkpoint)
            return self.incompatible

    return _Checkpointer


def load_detectron2_weights(module: nn.Module, path: str, *, key: str, prefixes: Sequence[str] = ()) -> int:
    """Load the detectron2 checkpoint ``path`` into ``module`` (its state-dict names as in a detectron2 model,
    e.g. ``backbone.bottom_up.res2.0.conv1.weight``) and return how many of ``module``'s tensors it set.

    ``key``: the config key that named the file (for messages). ``prefixes``: when given, at least one parameter
    under one of them must be loaded, otherwise :class:`CheckpointError` (the file does not fit the module).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{key}: detectron2 weights not found: '{path}' (weights load from local files only).")
    if path.endswith(".pkl"):
        check_data_only_pickle(path)
    d2_checkpoint = import_detectron2(f"{key} '{path}'", "detectron2.checkpoint")
    checkpointer = _checkpointer_class(d2_checkpoint)(module)
    checkpointer.load(path)
    incompatible = checkpointer.incompatible
    names = list(module.state_dict())
    missing = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
    loaded = [n for n in names if n not in missing]
    # Parameters only: detectron2's FrozenBatchNorm2d fills absent running statistics itself, so buffers always "load".
    loaded_parameters = [n for n, _ in module.named_parameters() if n not in missing]
    if prefixes and not any(n.startswith(tuple(prefixes)) for n in loaded_parameters):
        raise CheckpointError(f"{key}: no tensor of '{path}' fits {type(module).__name__} (expected detectron2 names "
                              f"under {', '.join(prefixes)}; e.g. {names[:2]}).")
    logger.info("Loaded %d of %d tensors of %s from detectron2 weights '%s'%s.", len(loaded), len(names),
                type(module).__name__, path, f" ({len(missing)} not in the file)" if missing else "")
    return len(loaded)
