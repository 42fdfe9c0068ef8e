"""Engine: launch, training loop, hooks and the default trainer."""

from .defaults import (
    DefaultTrainer,
    OutputDirInUseError,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
    maybe_list_registries,
)
from .hooks import *  # noqa: F401,F403
from .launch import launch
from .train_loop import HookBase, NonFiniteLossError, SimpleTrainer, TrainerBase

__all__ = ["DefaultTrainer", "OutputDirInUseError", "create_ddp_model", "default_argument_parser", "default_setup",
           "default_writers", "maybe_list_registries", "launch", "HookBase", "NonFiniteLossError", "SimpleTrainer",
           "TrainerBase"]
