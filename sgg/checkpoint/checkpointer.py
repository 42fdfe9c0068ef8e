"""Checkpointing in fvcore's format, written atomically and loaded safely.

Files: ``OUTPUT_DIR/model_0004999.pth``, ``model_final.pth`` and ``last_checkpoint`` (the basename of the newest).
Every file is written to a temporary name in the same folder, flushed, fsync'ed and renamed into place, so a run killed
mid-write never leaves a truncated checkpoint or a ``last_checkpoint`` naming one. Loading uses
``torch.load(weights_only=True)``: checkpoints can hold tensors, numbers, strings and containers, never code.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from typing import Any, Dict, Optional

import torch
import yaml
from fvcore.common.checkpoint import Checkpointer

from sgg.utils import comm

__all__ = ["DetectionCheckpointer", "CheckpointError", "atomic_write_bytes",
           "atomic_torch_save", "load_checkpoint_file", "load_matching_weights"]

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated/corrupt, or not loadable safely."""


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write_fn) -> None:
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + rename (readers see the old or the new file, never a partial)."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint_file(filename: str, key: str = "MODEL.WEIGHTS") -> Dict[str, Any]:
    """Safely load a checkpoint (``torch.load(weights_only=True)``) -> a dict with a ``model`` state dict (a bare
    state dict is wrapped); :class:`CheckpointError` with the file (and the config ``key`` that named it) for a
    missing, corrupt, truncated or code-carrying file."""
    if not os.path.isfile(filename):
        raise CheckpointError(f"Checkpoint not found: '{filename}'. Check {key}.")
    try:
        data = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise CheckpointError(
                f"Checkpoint '{filename}' contains Python objects that cannot be loaded safely "
                f"(torch.load(weights_only=True) refused it). Re-save it as a plain state dict of tensors."
            ) from e
        raise CheckpointError(f"Checkpoint '{filename}' is corrupt or truncated ({e}). "
                              f"Point {key} at an intact file.") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint '{filename}' is corrupt or truncated ({type(e).__name__}: {e}). "
                              f"Point {key} at an intact file.") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint '{filename}' holds a {type(data).__name__}, expected a dict.")
    if "model" not in data:
        # A bare state dict (e.g. exported weights): treat the whole thing as the model's.
        if all(isinstance(v, torch.Tensor) for v in data.values()):
            data = {"model": data}
        else:
            raise CheckpointError(f"Checkpoint '{filename}' has no 'model' entry; keys: {sorted(data)[:10]}")
    return data


def _recorded_architecture(filename: str) -> str:
    """``MODEL.META_ARCHITECTURE`` of the ``config.yaml`` a training run saved beside ``filename`` ("" if none)."""
    path = os.path.join(os.path.dirname(os.path.abspath(filename)), "config.yaml")
    try:
        with open(path) as f:
            return str((yaml.safe_load(f) or {}).get("MODEL", {}).get("META_ARCHITECTURE", ""))
    except (OSError, yaml.YAMLError, AttributeError):
        return ""


def load_matching_weights(model: torch.nn.Module, filename: str, key: str = "MODEL.WEIGHTS") -> None:
    """Load ``filename`` into ``model`` only if it is a checkpoint of that model: every parameter and buffer of the
    model must be in it with the same shape (a DDP ``module.`` prefix is stripped; extra entries are logged).

    Raises :class:`CheckpointError` naming what does not fit and, when a ``config.yaml`` beside the file says so, the
    architecture the checkpoint was trained as (training tolerates partial loads; inference must not).
    """
    state = load_checkpoint_file(filename, key)["model"]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        arch = type(model).__name__
        recorded = _recorded_architecture(filename)
        origin = f"; it was trained as {recorded} (config.yaml beside it)" if recorded and recorded != arch else ""
        detail = (f"{len(missing)} of the model's {len(own)} tensors are missing (e.g. {missing[0]})" if missing else
                  f"{len(wrong)} tensors have other shapes (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} in the "
                  f"file, {tuple(own[wrong[0]].shape)} in the model)")
        raise CheckpointError(f"{key}='{filename}' is not a checkpoint of the {arch} model this config builds: "
                              f"{detail}{origin}. Use the config the checkpoint was trained with.")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        logger.info("%s: %d entries not used by %s (e.g. %s)", filename, len(unexpected), type(model).__name__,
                    unexpected[0])
    model.load_state_dict({k: state[k] for k in own}, strict=True)


class DetectionCheckpointer(Checkpointer):
    """fvcore ``Checkpointer`` with atomic saves, safe loads and clear errors.

    Args:
        model: the (unwrapped) model.
        save_dir: where checkpoints go (usually ``OUTPUT_DIR``).
        save_to_disk: False on non-main ranks.
        checkpointables: objects with ``state_dict``/``load_state_dict`` saved alongside (optimizer, scheduler...).
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, save_to_disk: Optional[bool] = None,
                 **checkpointables: Any):
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` atomically and point ``last_checkpoint`` at it."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically record the newest checkpoint's basename in ``last_checkpoint``."""
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename.encode())

    def load(self, path: str, checkpointables=None) -> Dict[str, Any]:
        """Load ``path`` (model + the named checkpointables); raise :class:`CheckpointError` if it is missing."""
        if path and not os.path.isfile(path):
            raise CheckpointError(
                f"Checkpoint not found: '{path}'. Check MODEL.WEIGHTS (or the file named in "
                f"{os.path.join(self.save_dir, 'last_checkpoint')} when resuming)."
            )
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        return load_checkpoint_file(filename)

    def get_checkpoint_file(self) -> str:
        """The newest checkpoint named by ``last_checkpoint``; error if it names a file that is gone."""
        path = super().get_checkpoint_file()
        if path and not os.path.isfile(path):
            raise CheckpointError(
                f"{os.path.join(self.save_dir, 'last_checkpoint')} names '{os.path.basename(path)}', which does not "
                "exist. Restore the file, or edit last_checkpoint to name an existing model_*.pth."
            )
        return path
