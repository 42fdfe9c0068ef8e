"""Checkpoint saving/loading (the engine's ``hooks.PeriodicCheckpointer`` decides when)."""

from .checkpointer import CheckpointError, DetectionCheckpointer, NonFiniteWeightsError, load_matching_weights

__all__ = ["CheckpointError", "DetectionCheckpointer", "NonFiniteWeightsError", "load_matching_weights"]
