"""Checkpoint saving/loading."""

from .checkpointer import CheckpointError, DetectionCheckpointer, NonFiniteWeightsError, PeriodicCheckpointer

__all__ = ["CheckpointError", "DetectionCheckpointer", "NonFiniteWeightsError", "PeriodicCheckpointer"]
