"""Engine: launch, run setup, training loop, hooks and the default trainer."""

from .defaults import (
    DefaultTrainer,
    ExpectedResultsNotMet,
    OutputDirInUseError,
    add_local_rank_argument,
    create_ddp_model,
    default_argument_parser,
    default_main,
    default_setup,
    default_writers,
    evaluate_weights,
    launch_cli,
    maybe_list_registries,
    setup,
    train,
)
from .hooks import *  # noqa: F401,F403
from .launch import launch
from .predictor import InputError, Predictor
from .train_loop import HookBase, NonFiniteLossError, SimpleTrainer, TrainerBase

__all__ = ["DefaultTrainer", "OutputDirInUseError", "ExpectedResultsNotMet", "create_ddp_model",
           "add_local_rank_argument", "default_argument_parser", "setup", "default_setup", "default_writers",
           "default_main", "evaluate_weights",
           "train", "launch_cli", "maybe_list_registries", "launch", "HookBase", "NonFiniteLossError",
           "SimpleTrainer", "TrainerBase", "Predictor", "InputError"]
