"""Command-line arguments, run setup and ``DefaultTrainer`` (the standard training/evaluation logic)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import weakref
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

import sgg.data  # noqa: F401  (registers the datasets, mappers and samplers)
import sgg.evaluation  # noqa: F401  (registers the evaluators)
import sgg.modeling  # noqa: F401  (registers the models and their parts)
from sgg.checkpoint import DetectionCheckpointer
from sgg.checkpoint.checkpointer import atomic_write_bytes
from sgg.config import ConfigError, get_cfg, import_user_modules
from sgg.data.build import build_test_loader, build_train_loader
from sgg.data.catalog import DatasetCatalog
from sgg.evaluation import (
    DatasetEvaluator,
    build_evaluator,
    inference_on_dataset,
    print_csv_format,
    verify_results,
)
from sgg.model_zoo import resolve_config_file
from sgg.modeling import build_model, resolve_device
from sgg.solver import build_lr_scheduler, build_optimizer
from sgg.utils import comm
from sgg.utils.env import collect_env_info, get_rng_state, seed_all_rng, set_deterministic, set_rng_state
from sgg.utils.errors import InterruptedRun, run_cli
from sgg.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from sgg.utils.logger import setup_logger
from sgg.utils.registry import all_registries

from . import hooks
from .ema import EMAHook
from .launch import launch
from .output_dir import (
    OutputDirInUseError,
    acquire_output_dir_lock,
    check_output_dir,
    existing_checkpoints,
    release_output_dir_lock,
)
from .train_loop import NonFiniteLossError, SimpleTrainer, TrainerBase

__all__ = ["default_argument_parser", "add_local_rank_argument", "setup", "default_setup", "save_config",
           "default_writers", "create_ddp_model",
           "DefaultTrainer", "OutputDirInUseError", "ExpectedResultsNotMet", "evaluate_weights", "train",
           "default_main", "launch_cli", "maybe_list_registries"]

logger = logging.getLogger(__name__)


class ExpectedResultsNotMet(SystemExit):
    """The evaluation results missed ``TEST.EXPECTED_RESULTS`` (the CLIs exit with code 1)."""


def add_local_rank_argument(parser: argparse.ArgumentParser) -> None:
    """Accept ``--local-rank N`` / ``--local_rank N``, which ``python -m torch.distributed.launch`` passes to every
    worker. The value itself is not needed: the launcher also sets ``LOCAL_RANK`` / ``RANK`` / ``WORLD_SIZE``, from
    which :func:`sgg.engine.launch.launch` joins its process group (as under ``torchrun``)."""
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """The arguments of ``tools/train_net.py`` (detectron2's names)."""
    parser = argparse.ArgumentParser(
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train or evaluate an sgg model. Trailing 'KEY VALUE' pairs override config entries.",
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration, "
                             "hooks, data position, RNG); without it MODEL.WEIGHTS is loaded as initial weights")
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS on DATASETS.TEST and exit")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="worker processes per machine: one per GPU (NCCL); on a machine without CUDA, "
                             "N CPU worker processes communicating over gloo")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines-1)")
    parser.add_argument("--dist-url", default="auto",
                        help="torch.distributed init URL; 'auto' = a free loopback port (single machine); "
                             "multi-machine: tcp://IP_OF_MACHINE_0:PORT")
    parser.add_argument("--list", action="store_true", help="print every registry's contents and the datasets")
    add_local_rank_argument(parser)
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.001")
    return parser


def resolve_run_config_file(path: str) -> str:
    """``--config-file``: a file path, or the name of a config shipped with sgg (``quick/sttran_demo.yaml``, see
    :mod:`sgg.model_zoo`) when no such file exists here, so installed commands run from any folder."""
    resolved = resolve_config_file(path)
    if resolved is None:
        raise ConfigError(f"Config file not found: '{path}'. Check the path passed to --config-file (a name of a "
                          "config sgg ships, e.g. quick/sttran_demo.yaml, works too; list them with python -c "
                          "'from sgg.model_zoo import list_config_files as f; print(f())').")
    if resolved != path:
        logger.info("--config-file '%s': using the config shipped with sgg, %s", path, resolved)
    return resolved


def setup(args):
    """The run's setup, in every worker: config = defaults + ``args.config_file`` + ``args.opts`` (frozen), the
    config's ``IMPORTS``, the dataset options fixed from it (``DatasetCatalog.configure``), then
    :func:`default_setup`. Returns the config."""
    cfg = get_cfg()
    if args.config_file:
        args.config_file = resolve_run_config_file(args.config_file)
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    import_user_modules(cfg)
    DatasetCatalog.configure(cfg)
    default_setup(cfg, args)
    return cfg


def default_setup(cfg, args) -> None:
    """Check and lock OUTPUT_DIR, set up logging, log environment/args/config, save ``config.yaml``, seed RNGs.

    Nothing is written before the checks pass: ``MODEL.DEVICE`` must exist on this machine, OUTPUT_DIR must be a
    writable folder and, for a training run without ``--resume``, must not hold checkpoints
    (:func:`~sgg.engine.output_dir.check_output_dir`); then the main process takes OUTPUT_DIR's lock file
    (a second run into the same folder is refused naming the holder's pid). ``config.yaml`` is written atomically;
    a ``--resume`` run writes it only once the checkpoint has loaded (:meth:`DefaultTrainer.resume_or_load`), and an
    ``--eval-only`` run into a training run's folder writes ``inference/config.yaml`` instead, so the run's own
    ``config.yaml`` (read by ``tools/keyframes.py`` and ``tools/generate_video.py``) is never replaced.
    """
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    resume, eval_only = bool(getattr(args, "resume", False)), bool(getattr(args, "eval_only", False))
    resolve_device(cfg.MODEL.DEVICE)
    holds_run = bool(existing_checkpoints(output_dir)) if output_dir else False
    lock = None
    if comm.is_main_process() and output_dir:
        check_output_dir(output_dir, resume=resume, eval_only=eval_only)
        os.makedirs(output_dir, exist_ok=True)
        lock = acquire_output_dir_lock(output_dir)
        check_output_dir(output_dir, resume=resume, eval_only=eval_only)  # again, now that no other run can start
    comm.synchronize()
    setup_logger(output_dir, distributed_rank=rank, name="sgg")
    log = logging.getLogger("sgg")
    if lock is not None and lock.describe_takeover():
        log.warning(lock.describe_takeover())
    log.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    log.info("Environment info:\n%s", collect_env_info())
    log.info("Command line arguments: %s", args)
    if getattr(args, "config_file", ""):
        with open(args.config_file, encoding="utf-8") as f:
            log.info("Contents of args.config_file=%s:\n%s", args.config_file, f.read())
    if output_dir and not (resume and holds_run):
        save_config(cfg, os.path.join("inference", "config.yaml") if eval_only and holds_run else "config.yaml")
    seed = cfg.SEED if cfg.SEED >= 0 else -1
    used = seed_all_rng(None if seed < 0 else seed + rank)
    log.info("Using RNG seed %d on rank %d", used, rank)
    set_deterministic(cfg.DETERMINISTIC)
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK) and not cfg.DETERMINISTIC


def save_config(cfg, name: str = "config.yaml") -> Optional[str]:
    """Write ``cfg`` to ``OUTPUT_DIR/<name>`` atomically (main process only); returns the path."""
    if not comm.is_main_process() or not cfg.OUTPUT_DIR:
        return None
    path = os.path.join(cfg.OUTPUT_DIR, name)
    atomic_write_bytes(path, cfg.dump().encode("utf-8"))
    logging.getLogger("sgg").info("Full config saved to %s", path)
    return path


def default_writers(output_dir: str, max_iter: int, iters_per_epoch: int = 0):
    """Console printer (with the epoch when ``iters_per_epoch`` > 0), ``metrics.json`` and TensorBoard writers."""
    return [
        CommonMetricPrinter(max_iter, iters_per_epoch=iters_per_epoch),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


def create_ddp_model(model: torch.nn.Module, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when running on more than one process."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if torch.cuda.is_available() and next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False,
                                   find_unused_parameters=find_unused_parameters)


def _clip_fn(cfg):
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    if c.CLIP_TYPE in ("full_model", "norm"):
        return lambda params: torch.nn.utils.clip_grad_norm_(params, c.CLIP_VALUE, c.NORM_TYPE)
    if c.CLIP_TYPE == "value":
        return lambda params: torch.nn.utils.clip_grad_value_(params, c.CLIP_VALUE)
    raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE '{c.CLIP_TYPE}' unknown; use full_model, norm or value.")


def _amp_dtype(cfg) -> Optional[torch.dtype]:
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    if resolve_device(cfg.MODEL.DEVICE).type != "cuda":
        logger.warning("SOLVER.AMP.ENABLED is set but training runs on CPU; AMP is disabled.")
        return None
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    if cfg.SOLVER.AMP.DTYPE not in dtypes:
        raise ValueError(f"SOLVER.AMP.DTYPE must be float16 or bfloat16, got '{cfg.SOLVER.AMP.DTYPE}'.")
    return dtypes[cfg.SOLVER.AMP.DTYPE]


class DefaultTrainer(TrainerBase):
    """Builds model, optimizer, scheduler, data, evaluators and hooks from a config and trains.

    Override the ``build_*`` classmethods to customise a part. Typical use::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        self._raw_model = model
        self.model = create_ddp_model(model, find_unused_parameters=cfg.SOLVER.FIND_UNUSED_PARAMETERS)
        self.optimizer = optimizer
        self._trainer = SimpleTrainer(
            self.model, None, optimizer, accumulate_steps=cfg.SOLVER.ACCUMULATE_GRAD_STEPS, clip_fn=_clip_fn(cfg),
            amp_dtype=_amp_dtype(cfg), max_nonfinite_steps=cfg.SOLVER.MAX_NONFINITE_STEPS,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self),
                                                  scheduler=self.scheduler,
                                                  allow_partial=cfg.MODEL.ALLOW_PARTIAL_WEIGHTS)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        # The data stream's seed is shared by all ranks and stored in checkpoints, so a resumed run (even with
        # SEED < 0) continues the same stream.
        self.data_seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        self._pending_rng_state = None
        self._rng_states: Optional[List[dict]] = None
        self.latest_eval = None
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ checkpoint / resume
    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR: restore everything; else load ``MODEL.WEIGHTS`` only.

        Refuses to start a fresh run in an OUTPUT_DIR that already has checkpoints (it would overwrite them).
        Resuming is always strict (the checkpoint must fit this model, optimizer and schedule); ``MODEL.WEIGHTS``
        must fill every model tensor unless ``MODEL.ALLOW_PARTIAL_WEIGHTS`` is set. After a successful resume the
        run's ``config.yaml`` is rewritten (:func:`default_setup` leaves it alone until the checkpoint has loaded).
        """
        if resume and self.checkpointer.has_checkpoint():
            path = self.checkpointer.get_checkpoint_file()
            self.checkpointer.load(path, strict=True, key="--resume")
            self.start_iter = self.iter + 1
            logger.info("Resumed from %s at iteration %d", path, self.start_iter)
            save_config(self.cfg)
            return
        if resume:
            logger.info("--resume given but OUTPUT_DIR has no last_checkpoint; starting a new run.")
        elif self.checkpointer.has_checkpoint() and comm.is_main_process():
            raise OutputDirInUseError(
                f"OUTPUT_DIR '{self.cfg.OUTPUT_DIR}' already holds checkpoints (last_checkpoint -> "
                f"{os.path.basename(self.checkpointer.get_checkpoint_file())}). Pass --resume to continue that run, "
                "or set OUTPUT_DIR to a new folder; nothing was overwritten."
            )
        if self.cfg.MODEL.WEIGHTS:
            if self.cfg.MODEL.ALLOW_PARTIAL_WEIGHTS:
                logger.info("MODEL.ALLOW_PARTIAL_WEIGHTS is set: tensors of %s that do not fit the model are skipped "
                            "(they keep their initialisation).", self.cfg.MODEL.WEIGHTS)
            self.checkpointer.load(self.cfg.MODEL.WEIGHTS, checkpointables=[])
        self.start_iter = 0

    def _gather_rng_states(self, _trainer=None) -> None:
        self._rng_states = comm.all_gather(get_rng_state())

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(self._trainer.state_dict())
        state["iteration"] = self.iter
        state["data"] = {"seed": self.data_seed, "consumed_batches": (self.iter + 1) * self._trainer.accumulate_steps,
                         "world_size": comm.get_world_size()}
        if getattr(self, "data_loader", None) is not None and hasattr(self.data_loader, "state_dict"):
            state["data"]["loader"] = self.data_loader.state_dict()
        if self._rng_states is not None:
            state["rng"] = self._rng_states
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._trainer.load_state_dict(state)
        data = state.get("data", {})
        if "seed" in data:
            self.data_seed = int(data["seed"])
        if data.get("world_size", comm.get_world_size()) != comm.get_world_size():
            logger.warning("Checkpoint was written with world size %s, now %d: the data stream will differ.",
                           data["world_size"], comm.get_world_size())
        rng = state.get("rng")
        if rng is not None and len(rng) == comm.get_world_size():
            self._pending_rng_state = rng[comm.get_rank()]

    # ------------------------------------------------------------------ training
    def before_train(self) -> None:
        if self._pending_rng_state is not None:
            set_rng_state(self._pending_rng_state)
            self._pending_rng_state = None
        super().before_train()

    def train(self) -> Optional[Dict]:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``; returns the last evaluation results (main process)."""
        start_batch = self.start_iter * self._trainer.accumulate_steps
        self.data_loader = self.build_train_loader(self.cfg, seed=self.data_seed, start_batch=start_batch)
        self._trainer.reset_data_loader(self.data_loader)
        _ = self._trainer._data_loader_iter  # create the iterator before RNG states are restored
        try:
            super().train(self.start_iter, self.max_iter)
        except KeyboardInterrupt:
            raise InterruptedRun(f"Training interrupted (Ctrl-C) at iteration {self.iter}. "
                                 f"{self.checkpointer.last_checkpoint_message()} Continue with --resume.") from None
        except NonFiniteLossError as e:
            if comm.is_main_process() and self.cfg.OUTPUT_DIR:
                raise NonFiniteLossError(f"{e} {self.checkpointer.last_checkpoint_message()}") from e
            raise
        if self.latest_eval is not None and comm.is_main_process():
            return self.latest_eval[1]
        return None

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def rewrap_model(self, _trainer=None) -> None:
        """Rebuild the DDP wrapper (after parameters were unfrozen)."""
        if isinstance(self.model, DistributedDataParallel):
            self.model = create_ddp_model(self._raw_model,
                                          find_unused_parameters=self.cfg.SOLVER.FIND_UNUSED_PARAMETERS)
            self._trainer.model = self.model

    def build_hooks(self) -> List[hooks.HookBase]:
        """Timer, LR, two-stage, EMA, eval, best/early-stop/plateau, checkpoints, diffusers export
        (``MODEL.T2V.EXPORT_DIFFUSERS``), writers (in that order)."""
        cfg = self.cfg
        out: List[Optional[hooks.HookBase]] = [
            hooks.IterationTimer(),
            hooks.LRScheduler(self.optimizer, self.scheduler),
        ]
        if cfg.SOLVER.STAGE2.ENABLED:
            s2 = cfg.SOLVER.STAGE2
            out.append(hooks.TwoStageTraining(start_iter=s2.START_ITER, prefixes=s2.UNFREEZE, lr_factor=s2.LR_FACTOR,
                                              scheduler=self.scheduler, on_unfreeze=self.rewrap_model))
        ema_hook = self.build_ema_hook(cfg)
        if ema_hook is not None:
            out.append(ema_hook)
        if cfg.DATASETS.TEST:
            out.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.cfg, self.model)))
            if cfg.SOLVER.BEST_CHECKPOINT.METRIC:
                out.append(hooks.BestCheckpointer(self.checkpointer, cfg.SOLVER.BEST_CHECKPOINT.METRIC,
                                                  cfg.SOLVER.BEST_CHECKPOINT.MODE, before_save=self._gather_rng_states,
                                                  extra_metrics=tuple(cfg.SOLVER.BEST_CHECKPOINT.EXTRA_METRICS)))
            if cfg.SOLVER.EARLY_STOPPING.ENABLED:
                e = cfg.SOLVER.EARLY_STOPPING
                out.append(hooks.EarlyStopping(e.METRIC, e.MODE, e.PATIENCE, e.MIN_DELTA))
            if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPlateau" and cfg.SOLVER.PLATEAU.METRIC:
                out.append(hooks.PlateauLR(self.scheduler, cfg.SOLVER.PLATEAU.METRIC))
        if cfg.VIS_PERIOD > 0:
            out.append(hooks.VisualizationHook(cfg, cfg.VIS_PERIOD, num_samples=cfg.VIS_SAMPLES))
        out.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                              before_save=self._gather_rng_states))
        if cfg.MODEL.T2V.EXPORT_DIFFUSERS:
            out.append(hooks.DiffusersExportHook(cfg))
        # Writers run on every rank (metrics are reduced collectively) but only rank 0 writes files.
        if comm.is_main_process():
            out.append(hooks.PeriodicWriter(default_writers(cfg.OUTPUT_DIR, self.max_iter, cfg.SOLVER.ITERS_PER_EPOCH),
                                            period=cfg.LOG_PERIOD))
        return [h for h in out if h is not None]

    # ------------------------------------------------------------------ overridable builders
    @classmethod
    def build_model(cls, cfg) -> torch.nn.Module:
        """``build_model(cfg)``; logs the architecture and parameter count."""
        model = build_model(cfg)
        n = sum(p.numel() for p in model.parameters())
        logger.info("Model %s: %.3fM parameters", cfg.MODEL.META_ARCHITECTURE, n / 1e6)
        logger.debug("Model:\n%s", model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg, *, seed: int, start_batch: int = 0):
        return build_train_loader(cfg, seed=seed, start_batch=start_batch)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return build_test_loader(cfg, dataset_name, batch_size=cfg.TEST.IMS_PER_BATCH)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, folder)

    @classmethod
    def build_ema_hook(cls, cfg) -> Optional[hooks.HookBase]:
        """An EMA hook when a model section asks for one (``MODEL.EMA.ENABLED``); None otherwise."""
        ema = cfg.MODEL.get("EMA", None)
        if ema is None or not ema.get("ENABLED", False):
            return None
        return EMAHook(cfg)

    @classmethod
    def test(cls, cfg, model, evaluators: Optional[List[DatasetEvaluator]] = None) -> Dict:
        """Evaluate ``model`` on every dataset of ``DATASETS.TEST``; writes ``inference/<name>/results.json``.

        Returns ``{task: {metric: value}}`` for a single dataset, ``{dataset: {...}}`` for several (main process).
        """
        if not cfg.DATASETS.TEST:
            raise ValueError("DATASETS.TEST is empty: name at least one dataset to evaluate on.")
        results = OrderedDict()
        for idx, name in enumerate(cfg.DATASETS.TEST):
            loader = cls.build_test_loader(cfg, name)
            folder = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            if comm.is_main_process():
                os.makedirs(folder, exist_ok=True)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name, folder)
            res = inference_on_dataset(model, loader, evaluator)
            results[name] = res
            if comm.is_main_process():
                logger.info("Evaluation results for %s:", name)
                print_csv_format(res)
                with open(os.path.join(folder, "results.json"), "w") as f:
                    json.dump(res, f, indent=2, default=float)
        if len(results) == 1:
            return list(results.values())[0]
        return results


def evaluate_weights(cfg):
    """The ``--eval-only`` path: build the model, load ``MODEL.WEIGHTS``, evaluate on ``DATASETS.TEST``.

    A model with parameters needs ``MODEL.WEIGHTS`` unless its class sets ``requires_weights = False`` (models with
    nothing trained, such as the frequency baselines, whose statistics are counted at build time). The weights must
    fit the model (:meth:`DetectionCheckpointer.load`; ``MODEL.ALLOW_PARTIAL_WEIGHTS`` relaxes that). Raises
    :class:`ExpectedResultsNotMet` when ``TEST.EXPECTED_RESULTS`` is missed.
    """
    model = DefaultTrainer.build_model(cfg)
    if getattr(model, "requires_weights", True) and not cfg.MODEL.WEIGHTS and any(True for _ in model.parameters()):
        raise ConfigError("--eval-only needs MODEL.WEIGHTS (a checkpoint path), e.g. MODEL.WEIGHTS "
                          f"{os.path.join(cfg.OUTPUT_DIR, 'model_final.pth')}")
    if cfg.MODEL.WEIGHTS:  # strict unless MODEL.ALLOW_PARTIAL_WEIGHTS: a checkpoint of another model is an error
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, allow_partial=cfg.MODEL.ALLOW_PARTIAL_WEIGHTS).load(
            cfg.MODEL.WEIGHTS, checkpointables=[])
    model.eval()
    results = DefaultTrainer.test(cfg, model)
    _check_expected_results(cfg, results)
    return results


def train(cfg, *, resume: bool = False):
    """Train with :class:`DefaultTrainer` (``resume``: continue ``OUTPUT_DIR/last_checkpoint``); with
    ``TEST.EXPECTED_RESULTS`` the final model is evaluated and checked against them."""
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    results = trainer.train()
    # The trainer returns results on the main process only, which then evaluates the final model by itself.
    if comm.is_main_process() and results is not None and cfg.TEST.EXPECTED_RESULTS:
        _check_expected_results(cfg, trainer.test(cfg, trainer.model))
    return results


def _check_expected_results(cfg, results) -> None:
    if comm.is_main_process() and not verify_results(cfg, results):
        raise ExpectedResultsNotMet(1)


def default_main(args):
    """What one worker of ``tools/train_net.py`` runs: :func:`setup`, then evaluate (``--eval-only``) or train.
    OUTPUT_DIR's lock (taken by :func:`default_setup`) is released when it ends."""
    try:
        cfg = setup(args)
        if args.eval_only:
            return evaluate_weights(cfg)
        return train(cfg, resume=args.resume)
    finally:
        release_output_dir_lock()


def launch_cli(main_func, args) -> int:
    """Run ``main_func(args)`` on ``args.num_gpus`` workers (:func:`launch`) and return the exit code: 0, 1 when
    ``TEST.EXPECTED_RESULTS`` is missed, 2 with one ``error:`` line for a user error — raised here, in a worker or in
    a DataLoader worker — and 130 for Ctrl-C (:func:`sgg.utils.errors.run_cli`; ``SGG_DEBUG=1`` adds tracebacks)."""
    return run_cli(_launch, main_func, args)


def _launch(main_func, args) -> int:
    try:
        launch(main_func, args.num_gpus, num_machines=getattr(args, "num_machines", 1),
               machine_rank=getattr(args, "machine_rank", 0), dist_url=getattr(args, "dist_url", "auto"),
               args=(args,))
    except ExpectedResultsNotMet:
        print("error: evaluation results do not meet TEST.EXPECTED_RESULTS (see the log above)", file=sys.stderr)
        return 1
    return 0


def maybe_list_registries(args) -> bool:
    """Handle ``--list``: print registries and datasets; returns True if it printed."""
    if not getattr(args, "list", False):
        return False
    for name, reg in sorted(all_registries().items()):
        print(f"{name}: {', '.join(reg.names()) or '(none)'}")
    print(f"DATASETS: {', '.join(DatasetCatalog.list()) or '(none)'}")
    sys.stdout.flush()
    return True
