"""Checkpoint saving/loading (the engine's ``hooks.PeriodicCheckpointer`` decides when), and converting checkpoints
released by upstream codebases (:mod:`sgg.checkpoint.convert`, ``tools/convert_checkpoint.py``)."""

from . import converters  # noqa: F401  (registers the upstream-checkpoint converters)
from .checkpointer import CheckpointError, DetectionCheckpointer, NonFiniteWeightsError, load_matching_weights
from .convert import CHECKPOINT_CONVERTERS, ConversionResult, WrongCheckpointKindError

__all__ = ["CheckpointError", "DetectionCheckpointer", "NonFiniteWeightsError", "load_matching_weights",
           "CHECKPOINT_CONVERTERS", "ConversionResult", "WrongCheckpointKindError"]
