"""Checkpoint saving/loading (the engine's ``hooks.PeriodicCheckpointer`` decides when)."""

from .checkpointer import CheckpointError, DetectionCheckpointer, NonFiniteWeightsError

__all__ = ["CheckpointError", "DetectionCheckpointer", "NonFiniteWeightsError"]
