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
from fvcore.common.checkpoint import Checkpointer, _strip_prefix_if_present

from sgg.utils import comm
from sgg.utils.errors import SGGError, one_line

__all__ = ["DetectionCheckpointer", "CheckpointError", "NonFiniteWeightsError", "atomic_write_bytes",
           "atomic_torch_save", "load_checkpoint_file", "load_matching_weights", "nonfinite_tensors",
           "fold_pruning_masks", "partial_load_report"]

logger = logging.getLogger(__name__)


class CheckpointError(SGGError, RuntimeError):
    """A checkpoint is missing, truncated/corrupt, not loadable safely, does not fit the model, or cannot be written."""


class NonFiniteWeightsError(SGGError, FloatingPointError):
    """The model's weights hold NaN/Inf; no checkpoint is written from them."""


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


def _short(error: BaseException, limit: int = 160) -> str:
    text = one_line(error)
    if "WeightsUnpickler error:" in text:  # torch's long preamble says nothing about this file: keep the cause
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0].strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def load_checkpoint_file(filename: str, key: str = "MODEL.WEIGHTS") -> Dict[str, Any]:
    """Safely load a checkpoint (``torch.load(weights_only=True)``) -> a dict with a ``model`` state dict (a bare
    state dict is wrapped); :class:`CheckpointError` with the file (and the config ``key`` that named it) for a
    missing, corrupt, truncated, random-bytes or code-carrying file."""
    if not os.path.isfile(filename):
        raise CheckpointError(f"Checkpoint not found: '{filename}'. Check {key}.")
    try:
        data = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e) or "Unsupported global" in str(e):  # a pickled callable/class: refused, not run
            raise CheckpointError(
                f"Checkpoint '{filename}' contains Python objects that cannot be loaded safely "
                f"(torch.load(weights_only=True) refused it). Re-save it as a plain state dict of tensors."
            ) from e
        raise CheckpointError(f"Checkpoint '{filename}' is corrupt or truncated (the unpickler stopped: {_short(e)}; "
                              f"nothing in it was run). Point {key} at an intact file.") from e
    except MemoryError:
        raise
    except Exception as e:  # random bytes make torch.load fail in many ways (IndexError, KeyError, RuntimeError ...)
        raise CheckpointError(f"Checkpoint '{filename}' is corrupt or truncated ({type(e).__name__}: {_short(e)}). "
                              f"Point {key} at an intact file.") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint '{filename}' holds a {type(data).__name__}, expected a dict. "
                              f"Point {key} at a checkpoint written by sgg (or a state dict).")
    if "model" not in data:
        # A bare state dict (e.g. exported weights): treat the whole thing as the model's.
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            data = {"model": data}
        else:
            raise CheckpointError(f"Checkpoint '{filename}' has no 'model' entry; keys: {sorted(map(str, data))[:10]}. "
                                  f"Point {key} at a checkpoint written by sgg (or a state dict).")
    if not isinstance(data["model"], dict):
        raise CheckpointError(f"Checkpoint '{filename}': 'model' holds a {type(data['model']).__name__}, expected a "
                              "state dict (name -> tensor).")
    return data


def _first(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" ... (+{len(items) - n})" if len(items) > n else "")


def _module_counts(keys) -> str:
    counts: Dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        prefix = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        counts[prefix] = counts.get(prefix, 0) + 1
    return ", ".join(f"{p} ({n})" for p, n in counts.items()) or "-"


def _shape_mismatches(state: Dict[str, Any], model_state: Dict[str, Any]) -> list:
    return [k for k in state if k in model_state and hasattr(state[k], "shape")
            and not isinstance(model_state[k], torch.nn.parameter.UninitializedParameter)
            and tuple(state[k].shape) != tuple(model_state[k].shape)]


def _partial_module_keys(state: Dict[str, Any], model_state: Dict[str, Any]) -> list:
    """Tensors that fit but belong to a module (same name up to the last '.') with a tensor of another shape."""
    shapes = _shape_mismatches(state, model_state)
    modules = {k.rsplit(".", 1)[0] for k in shapes}
    return [k for k in state if k in model_state and k not in shapes and k.rsplit(".", 1)[0] in modules]


def partial_load_report(state: Dict[str, Any], model_state: Dict[str, Any]) -> str:
    """What a partial load (``MODEL.ALLOW_PARTIAL_WEIGHTS``) takes from a checkpoint, as one block of lines: the
    loaded tensors and those skipped (another shape, not in the checkpoint, unused), grouped by module prefix, with
    the first few shape mismatches spelled out — e.g. an Action Genome STTran checkpoint loaded into STTran-EASG,
    whose class heads and relation width differ."""
    shapes = _shape_mismatches(state, model_state)
    partial = _partial_module_keys(state, model_state)
    loaded = [k for k in model_state if k in state and k not in set(shapes) | set(partial)]
    missing = [k for k in model_state if k not in state]
    unused = [k for k in state if k not in model_state]
    examples = "; ".join(f"{k} {tuple(state[k].shape)} -> {tuple(model_state[k].shape)}" for k in shapes[:3])
    return "\n".join([
        f"  loaded ({len(loaded)}): {_module_counts(loaded)}",
        f"  skipped, other shape ({len(shapes)}): {_module_counts(shapes)}" + (f" [e.g. {examples}]" if shapes else ""),
        f"  skipped, same shape but in a module that does not fit ({len(partial)}): {_module_counts(partial)}",
        f"  skipped, not in the checkpoint ({len(missing)}; initialised fresh): {_module_counts(missing)}",
        f"  unused checkpoint tensors ({len(unused)}): {_module_counts(unused)}",
    ])


def fold_pruning_masks(state: Dict[str, Any], model_state: Dict[str, Any]) -> list:
    """In place: ``torch.nn.utils.prune`` saves a pruned ``name`` as ``name_orig`` + ``name_mask``; where the model
    has a plain ``name`` (it is not pruned itself), replace the pair by ``name = name_orig * name_mask`` so the
    pruned weights load exactly (not as missing tensors). Returns the folded names."""
    folded = []
    for key in [k for k in state if k.endswith("_orig")]:
        name, mask = key[: -len("_orig")], key[: -len("_orig")] + "_mask"
        if mask in state and name not in state and name in model_state and key not in model_state:
            state[name] = state.pop(key) * state.pop(mask)
            folded.append(name)
    return folded


def nonfinite_tensors(state: Dict[str, Any]) -> list:
    """Names of the floating-point tensors of a state dict holding NaN or Inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


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
    architecture the checkpoint was trained as — the strict load of :meth:`DetectionCheckpointer.load`.
    """
    DetectionCheckpointer(model, save_to_disk=False).load(filename, checkpointables=[], strict=True, key=key)


class DetectionCheckpointer(Checkpointer):
    """fvcore ``Checkpointer`` with atomic saves, safe loads, strict weight checks and clear errors.

    Args:
        model: the (unwrapped) model.
        save_dir: where checkpoints go (usually ``OUTPUT_DIR``).
        save_to_disk: False on non-main ranks.
        allow_partial: default of :meth:`load`'s ``strict`` (``MODEL.ALLOW_PARTIAL_WEIGHTS``): with False a
            checkpoint must fill every model tensor with the right shape.
        checkpointables: objects with ``state_dict``/``load_state_dict`` saved alongside (optimizer, scheduler...).

    Saving refuses non-finite model weights (:class:`NonFiniteWeightsError`), so every checkpoint on disk is usable;
    a failed write (disk full, ...) raises :class:`CheckpointError` and leaves the previous checkpoint and
    ``last_checkpoint`` as they were.
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, save_to_disk: Optional[bool] = None,
                 allow_partial: bool = False, **checkpointables: Any):
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logger  # sgg's logger, so that loading reports reach OUTPUT_DIR/log.txt
        self.allow_partial = bool(allow_partial)
        self._strict = not self.allow_partial
        self._key = "MODEL.WEIGHTS"
        self._path = ""

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` atomically and point ``last_checkpoint`` at it.

        Refuses (before writing) a model whose weights hold NaN/Inf; an OS error while writing (ENOSPC, EFBIG, EIO)
        becomes :class:`CheckpointError` and the previous checkpoint and ``last_checkpoint`` stay intact.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        model_state = self.model.state_dict()
        bad = nonfinite_tensors(model_state)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if bad:
            raise NonFiniteWeightsError(
                f"Refusing to write checkpoint '{save_file}': the model weights hold NaN/Inf ({_first(bad, 3)}). "
                f"{self.last_checkpoint_message()} Lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS."
            )
        data: Dict[str, Any] = {"model": model_state}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        self.logger.info(f"Saving checkpoint to {save_file}")
        try:
            atomic_torch_save(data, save_file)
            self.tag_last_checkpoint(basename)
        except OSError as e:
            raise CheckpointError(
                f"Could not write checkpoint '{save_file}' ({e.strerror or e}); nothing was replaced. "
                f"{self.last_checkpoint_message()} Free disk space (or choose another OUTPUT_DIR) and continue "
                "with --resume."
            ) from e

    def last_checkpoint_message(self) -> str:
        """One sentence naming the newest checkpoint on disk (what ``--resume`` would continue from)."""
        last = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(last) as f:
                name = f.read().strip()
        except OSError:
            return "No checkpoint of this run is on disk yet."
        return f"The last good checkpoint is '{os.path.join(self.save_dir, name)}' (last_checkpoint -> {name})."

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically record the newest checkpoint's basename in ``last_checkpoint``."""
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename.encode())

    def load(self, path: str, checkpointables=None, *, strict: Optional[bool] = None,
             key: str = "MODEL.WEIGHTS") -> Dict[str, Any]:
        """Load ``path`` (model + the named checkpointables, all of them when None).

        ``strict`` (default: not ``allow_partial``): every model tensor must be in the checkpoint with the same
        shape; otherwise :class:`CheckpointError` lists the first mismatches. A checkpoint that matches none of the
        model's tensors is an error even when partial loading is allowed. ``key`` names the setting that gave
        ``path`` in messages. Restoring a checkpointable that does not fit (an optimizer of another model, ...) is a
        :class:`CheckpointError` too.
        """
        if not path:
            self.logger.info("No checkpoint given (%s is empty): the model keeps its initialisation.", key)
            return {}
        if not os.path.isfile(path):
            raise CheckpointError(
                f"Checkpoint not found: '{path}'. Check {key} (or the file named in "
                f"{os.path.join(self.save_dir, 'last_checkpoint')} when resuming)."
            )
        self._strict = (not self.allow_partial) if strict is None else bool(strict)
        self._key, self._path = key, path
        self.logger.info(f"[Checkpointer] Loading from {path} ...")
        checkpoint = load_checkpoint_file(path, key)
        incompatible = self._load_model(checkpoint)
        self._log_incompatible_keys(incompatible)
        for name in self.checkpointables if checkpointables is None else checkpointables:
            if name not in checkpoint:
                continue
            self.logger.info(f"Loading {name} from {path} ...")
            try:
                self.checkpointables[name].load_state_dict(checkpoint.pop(name))
            except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as e:
                raise CheckpointError(
                    f"Cannot restore the {name} state from '{path}' ({type(e).__name__}: {one_line(e)}). The "
                    "checkpoint was written with a different config; resume with the config of that run "
                    "(OUTPUT_DIR/config.yaml) or start a new run in a new OUTPUT_DIR."
                ) from e
        return checkpoint

    def _load_model(self, checkpoint: Any):
        """Check the checkpoint's tensors against the model's (module docstring of :meth:`load`), then load."""
        state = checkpoint["model"]
        self._convert_ndarray_to_tensor(state)
        _strip_prefix_if_present(state, "module.")
        model_state = self.model.state_dict()
        folded = fold_pruning_masks(state, model_state)
        if folded:
            self.logger.info("Checkpoint '%s': %d pruned tensor(s) (torch.nn.utils.prune's *_orig x *_mask) folded "
                             "into plain weights, e.g. %s.", self._path, len(folded), folded[0])
        non_tensor = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
        if non_tensor:
            raise CheckpointError(f"Checkpoint '{self._path}' ({self._key}): model entries that are not tensors: "
                                  f"{_first(non_tensor)}.")
        matched = [k for k in state if k in model_state]
        arch = type(self.model).__name__
        recorded = _recorded_architecture(self._path)
        origin = f" It was trained as {recorded} (config.yaml beside it)." if recorded and recorded != arch else ""
        if model_state and not matched:
            raise CheckpointError(
                f"Checkpoint '{self._path}' ({self._key}) is not a checkpoint of the {arch} model this config builds: "
                f"it matches none of the model's {len(model_state)} tensors (checkpoint keys: "
                f"{_first(sorted(state), 3) or '(none)'}; model keys: {_first(list(model_state), 3)}).{origin} Point "
                f"{self._key} at a checkpoint of this model and config."
            )
        missing = [k for k in model_state if k not in state]
        shapes = [f"{k} {tuple(state[k].shape)} in the checkpoint vs {tuple(model_state[k].shape)} in the model"
                  for k in matched if not isinstance(model_state[k], torch.nn.parameter.UninitializedParameter)
                  and tuple(state[k].shape) != tuple(model_state[k].shape)]
        if self._strict and (missing or shapes):
            parts = []
            if missing:
                parts.append(f"{len(missing)} model tensor(s) missing from it ({_first(missing, 3)})")
            if shapes:
                parts.append(f"{len(shapes)} with another shape ({_first(shapes, 2)})")
            hint = ("Resume with the config of that run (OUTPUT_DIR/config.yaml) or start a new run in a new "
                    "OUTPUT_DIR" if self._key.startswith("--resume") else
                    f"Point {self._key} at a checkpoint of this model and config, or set MODEL.ALLOW_PARTIAL_WEIGHTS "
                    "True to load only the matching tensors")
            raise CheckpointError(f"Checkpoint '{self._path}' ({self._key}) is not a checkpoint of the {arch} model "
                                  f"this config builds: {'; '.join(parts)}.{origin} {hint}.")
        if missing or shapes:
            report = partial_load_report(state, model_state)
            # A module whose tensors do not all fit keeps its initialisation whole: a bias without its weight (an
            # FFN's hidden bias of another model's transformer, say) is no transfer.
            for k in _partial_module_keys(state, model_state):
                del state[k]
            self.logger.warning("Partial load of '%s' (MODEL.ALLOW_PARTIAL_WEIGHTS): %d of %d model tensors loaded; "
                                "%d keep their initialisation.\n%s", self._path, sum(k in model_state for k in state)
                                - len(shapes), len(model_state), len(model_state) - sum(k in model_state for k in state)
                                + len(shapes), report)
        return super()._load_model(checkpoint)

    def get_checkpoint_file(self) -> str:
        """The newest checkpoint named by ``last_checkpoint``; error if it names a file that is gone."""
        path = super().get_checkpoint_file()
        if path and not os.path.isfile(path):
            raise CheckpointError(
                f"{os.path.join(self.save_dir, 'last_checkpoint')} names '{os.path.basename(path)}', which does not "
                "exist. Restore the file, or edit last_checkpoint to name an existing model_*.pth."
            )
        return path
