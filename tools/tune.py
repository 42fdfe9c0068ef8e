#!/usr/bin/env python
"""Hyper-parameter search with Optuna: every trial is a normal sgg run; the study lives in a database.

Examples::

    python tools/tune.py --config-file configs/quick/sttran_demo.yaml --space configs/tune/sttran_demo_space.yaml \\
        --trials 6 --output output/tune/sttran_demo SOLVER.MAX_ITER 120 TEST.EVAL_PERIOD 40
    # the same command again continues the study (killed trials are failed and their parameters retried)
    python tools/tune.py ... --storage postgresql://user@host/db --study-name s --n-jobs 2   # shared study
    python tools/train_net.py --config-file output/tune/sttran_demo/best_config.yaml          # train the best

``--trials N`` is the number of finished (complete or pruned) trials the study should hold; a resumed search runs only
the missing ones. Each trial writes ``<output>/trial_NNNN/`` (config.yaml, log.txt, metrics.json, checkpoints); the
search prints one line per trial, then a summary table, writes ``<output>/best_config.yaml`` and Optuna's plots
(``<output>/plots/``). The search-space file format: docs/tuning.md. Trailing ``KEY VALUE`` pairs override the config
for every trial.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sgg.config import get_cfg, import_user_modules  # noqa: E402
from sgg.engine.defaults import resolve_run_config_file  # noqa: E402
from sgg.engine.train_loop import NonFiniteLossError  # noqa: E402
from sgg.engine.tuning import (  # noqa: E402
    WORKER_ATTR,
    TuneError,
    fail_orphaned_trials,
    finished_trials,
    grid_search_space,
    load_search_space,
    open_study,
    require_optuna,
    run_trial,
    save_plots,
    suggest_params,
    summary_table,
    trial_line,
    worker_id,
    write_best_config,
)
from sgg.model_zoo import resolve_config_file  # noqa: E402
from sgg.utils.errors import run_cli  # noqa: E402

logger = logging.getLogger("sgg")

DIRECTIONS = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/tune.py`` / ``sgg-tune``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--config-file", required=True, metavar="FILE", help="the config every trial starts from")
    a("--space", required=True, metavar="YAML", help="search space: config key -> distribution (docs/tuning.md)")
    a("--trials", type=int, required=True, help="finished (complete + pruned) trials the study should hold")
    a("--output", default="", help="folder of the trials, best_config.yaml and plots (default output/tune/<study>)")
    a("--storage", default="", help="SQLAlchemy URL of the study database (default sqlite:///<output>/study.db)")
    a("--study-name", default="", help="study name (default: the config file's name)")
    a("--sampler", default="tpe", choices=("tpe", "random", "grid"), help="Optuna sampler")
    a("--startup-trials", type=int, default=None,
      help="TPE: random trials before the model is used (default min(10, max(1, trials // 2)))")
    a("--pruner", default="median", choices=("median", "none"), help="prune trials below the median (or never)")
    a("--pruner-startup-trials", type=int, default=2, help="median pruner: finished trials before it prunes")
    a("--pruner-warmup-steps", type=int, default=0, help="median pruner: iterations before a trial can be pruned")
    a("--metric", default="", help="objective: an evaluation key, e.g. video_sgg/with/R@20 (default: "
      "SOLVER.BEST_CHECKPOINT.METRIC, else SOLVER.PLATEAU.METRIC, else SOLVER.EARLY_STOPPING.METRIC)")
    a("--direction", default="max", choices=tuple(DIRECTIONS), help="maximise or minimise the metric")
    a("--n-jobs", type=int, default=1, help="worker processes sharing the study (each runs one trial at a time)")
    a("--seed", type=int, default=None, help="sampler seed (default: the config's SEED, or 0)")
    a("--heartbeat", type=int, default=30, help="seconds between a running trial's heartbeats in the database")
    a("--grace", type=int, default=120, help="a RUNNING trial without heartbeat for this long is failed and retried")
    a("--no-plots", action="store_true", help="skip Optuna's plots")
    a("--verbose", action="store_true", help="show each trial's training log on the console")
    a("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    a("opts", nargs=argparse.REMAINDER, help="config overrides for every trial (KEY VALUE ...)")
    return p


def _base_config(args):
    config_file = resolve_run_config_file(args.config_file)
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    opts = list(args.opts or [])
    if opts and opts[0] == "--":
        opts = opts[1:]
    cfg.merge_from_list(opts)
    import_user_modules(cfg)
    return cfg, config_file, opts


def _default_metric(cfg) -> str:
    for key in ("BEST_CHECKPOINT", "PLATEAU", "EARLY_STOPPING"):
        metric = cfg.SOLVER[key].METRIC
        if metric:
            return metric
    raise TuneError("No objective metric: pass --metric (an evaluation key such as video_sgg/with/R@20 or sgg/R@50; "
                    "a run's inference/<dataset>/results.json lists them).")


def _sampler(optuna, args, space, seed: int):
    if args.sampler == "grid":
        return optuna.samplers.GridSampler(grid_search_space(space), seed=seed)
    if args.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = args.startup_trials if args.startup_trials is not None else min(10, max(1, args.trials // 2))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _pruner(optuna, args):
    if args.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=args.pruner_startup_trials,
                                       n_warmup_steps=args.pruner_warmup_steps)


def _worker_argv(argv: List[str], index: int) -> List[str]:
    """This command line for worker ``index`` of ``--n-jobs``: one job each."""
    out, skip = [], False
    for i, item in enumerate(argv):
        if skip:
            skip = False
            continue
        if item == "--n-jobs":
            skip = True
            continue
        if item.startswith("--n-jobs="):
            continue
        out.append(item)
    # options go before the trailing KEY VALUE overrides (argparse REMAINDER)
    return ["--n-jobs", "1", "--worker-index", str(index)] + out


def main(argv: Optional[List[str]] = None) -> int:
    """Run (or continue) the search; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.trials < 1 or args.n_jobs < 1:
        raise TuneError(f"--trials and --n-jobs must be >= 1, got {args.trials} and {args.n_jobs}.")
    cfg, config_file, _ = _base_config(args)
    space = load_search_space(resolve_config_file(args.space) or args.space, cfg)  # a file, or one sgg ships
    metric = args.metric or _default_metric(cfg)
    study_name = args.study_name or os.path.splitext(os.path.basename(config_file))[0]
    output = args.output or os.path.join("output", "tune", study_name)
    storage = args.storage or f"sqlite:///{os.path.join(output, 'study.db')}"
    seed = args.seed if args.seed is not None else (cfg.SEED if cfg.SEED >= 0 else 0)

    study = open_study(storage, study_name, direction=DIRECTIONS[args.direction], metric=metric,
                       heartbeat_interval=args.heartbeat, grace_period=args.grace)
    # A resumed search must not replay the first draws: the sampler seed moves on with the study's trial count.
    sampler_seed = seed + len(study.get_trials(deepcopy=False)) + 7919 * (args.worker_index or 0)
    study.sampler, study.pruner = _sampler(optuna, args, space, sampler_seed), _pruner(optuna, args)
    worker = args.worker_index is not None
    if not worker:
        orphaned = fail_orphaned_trials(study)
        done = finished_trials(study)
        print(f"tune: study '{study_name}' in {storage}: {done} finished trial(s), target {args.trials}; "
              f"objective {metric} ({DIRECTIONS[args.direction]}); {len(space)} parameter(s); output {output}"
              + (f"; failed {len(orphaned)} trial(s) of a killed search ({orphaned}), their parameters queued again"
                 if orphaned else ""), flush=True)
    remaining = args.trials - finished_trials(study)
    if remaining > 0 and args.n_jobs > 1:
        procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *_worker_argv(argv, i)])
                 for i in range(args.n_jobs)]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"error: tune workers exited with {codes}", file=sys.stderr)
            return max(codes)
    elif remaining > 0:
        state = optuna.trial.TrialState

        def objective(trial):
            trial.set_user_attr(WORKER_ATTR, worker_id())
            params = suggest_params(trial, space)
            out = os.path.join(output, f"trial_{trial.number:04d}")
            trial.set_user_attr("sgg_output_dir", out)
            try:
                result = run_trial(cfg, params, out, trial, metric, prune=args.pruner != "none",
                                   verbose=args.verbose)
            except NonFiniteLossError as e:
                trial.set_user_attr("sgg_error", str(e)[:300])
                raise
            trial.set_user_attr("sgg_seconds", round(result.seconds, 2))
            trial.set_user_attr("sgg_iterations", result.iterations)
            if result.value is None:
                raise TuneError(f"Trial {trial.number} finished without an evaluation of {metric}: the config needs "
                                "DATASETS.TEST (and TEST.EVAL_PERIOD > 0 for pruning).")
            trial.set_user_attr("sgg_last_value", result.value)
            if result.pruned_at is not None:
                trial.set_user_attr("sgg_pruned_at", result.pruned_at)
                raise optuna.TrialPruned(f"pruned after {result.pruned_at} iterations")
            return result.value

        def report(study_, trial):
            line = trial_line(trial, metric)
            if trial.state == state.FAIL and trial.user_attrs.get("sgg_error"):
                line += f"  [{trial.user_attrs['sgg_error'][:120]}]"
            print(line, flush=True)

        stop = optuna.study.MaxTrialsCallback(args.trials, states=(state.COMPLETE, state.PRUNED))
        study.optimize(objective, n_trials=remaining, catch=(NonFiniteLossError,), callbacks=[report, stop],
                       gc_after_trial=True)
    if worker:
        return 0
    print(summary_table(study, metric), flush=True)
    best_path = os.path.join(output, "best_config.yaml")
    try:
        path, best = write_best_config(study, cfg, best_path, metric, output_dir=os.path.join(output, "best"))
    except TuneError as e:
        print(f"tune: {e}", flush=True)
    else:
        params = ", ".join(f"{k}={v}" for k, v in best.params.items())
        print(f"tune: best trial {best.number}: {metric} = {best.value:.4f} ({params}) -> {path}\n"
              f"tune: train it with: python tools/train_net.py --config-file {path}", flush=True)
    if not args.no_plots:
        plots = save_plots(study, os.path.join(output, "plots"))
        if plots:
            print(f"tune: plots: {', '.join(sorted(plots.values()))}", flush=True)
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    """Console-script entry (``sgg-tune``): user errors print one ``error:`` line and return 2."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
