"""Checkpoint saving/loading."""

from .checkpointer import CheckpointError, DetectionCheckpointer, PeriodicCheckpointer

__all__ = ["CheckpointError", "DetectionCheckpointer", "PeriodicCheckpointer"]
