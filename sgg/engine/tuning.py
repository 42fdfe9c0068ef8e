"""Hyper-parameter search with Optuna: search-space files, one sgg run per trial, pruning, a study in a database.

The pieces behind ``tools/tune.py`` (docs/tuning.md):

* :func:`load_search_space` reads a YAML file mapping config keys to distributions and checks every key, bound and
  choice against the config (unknown key, wrong type, empty range -> :class:`SearchSpaceError`, one line);
* :func:`run_trial` trains one normal sgg run (its own ``OUTPUT_DIR`` with ``config.yaml``, ``log.txt``, checkpoints)
  with the trial's overrides; :class:`OptunaPruningHook` reports every evaluation of the objective metric to the
  trial and, when the pruner says so, stops the run through the trainer (``request_stop``, no traceback);
* :func:`open_study` opens / creates the study in any SQLAlchemy database (SQLite by default), with heartbeats so that
  trials of a killed process are failed and retried (:func:`fail_orphaned_trials` does it at once for processes of
  this machine that are gone), and several processes or machines can work on one study;
* :func:`write_best_config`, :func:`summary_table`, :func:`save_plots` report the result.

Optuna is an optional dependency (``pip install -e ".[tune]"``); it is imported only when a study is used.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import math
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml

from sgg.config import ConfigError, get_cfg, import_user_modules
from sgg.config.config import all_config_keys
from sgg.data.catalog import DatasetCatalog
from sgg.utils.errors import SGGError

from .defaults import DefaultTrainer, default_setup
from .hooks import _fresh_metric
from .output_dir import pid_alive, release_output_dir_lock
from .train_loop import HookBase

__all__ = [
    "SearchSpaceError", "TuneError", "ParamSpec", "require_optuna", "load_search_space", "parse_search_space",
    "grid_search_space", "suggest_params", "apply_params", "OptunaPruningHook", "TrialResult", "run_trial",
    "open_study", "fail_orphaned_trials", "finished_trials", "write_best_config", "summary_table", "save_plots",
    "trial_line", "worker_id", "DISTRIBUTIONS", "WORKER_ATTR",
]

logger = logging.getLogger(__name__)

# Distribution names of a search-space file -> (Optuna kind, log scale).
DISTRIBUTIONS = {
    "loguniform": ("float", True),
    "uniform": ("float", False),
    "float": ("float", None),  # ``log`` field, default False
    "int": ("int", None),
    "categorical": ("categorical", False),
}
_FIELDS = {"float": {"type", "low", "high", "step", "log"}, "int": {"type", "low", "high", "step", "log"},
           "categorical": {"type", "choices"}}
_NOT_TUNABLE = {"OUTPUT_DIR"}  # each trial has its own


class SearchSpaceError(SGGError, ValueError):
    """A search-space file that cannot be used (unknown config key, bad distribution, value of the wrong type)."""


class TuneError(SGGError, RuntimeError):
    """A hyper-parameter search that cannot go on (missing metric, study of another metric / direction)."""


def require_optuna():
    """Import Optuna, or raise a one-line error naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise TuneError("Hyper-parameter search needs Optuna, which is not installed: pip install -e \".[tune]\" "
                        "-c constraints.txt (or pip install 'optuna>=4').") from None
    return optuna


@dataclass
class ParamSpec:
    """One tuned config key: ``kind`` float / int / categorical, bounds (``low``/``high``, optional ``step``, ``log``)
    or ``choices``."""

    key: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    choices: List[Any] = field(default_factory=list)

    def describe(self) -> str:
        """``loguniform[1e-05, 0.001]``-style text for logs and docs."""
        if self.kind == "categorical":
            return f"categorical{self.choices}"
        name = ("log" if self.log else "") + ("int" if self.kind == "int" else "uniform")
        step = f" step {self.step:g}" if self.step else ""
        return f"{name}[{self.low:g}, {self.high:g}{step}]"


def _number(path: str, key: str, name: str, value, kind: str):
    """``value`` as int / float; YAML reads ``1e-4`` (no dot) as a string, which is accepted here."""
    if isinstance(value, bool):
        value = None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SearchSpaceError(f"Search space {path}: {key}.{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise SearchSpaceError(f"Search space {path}: {key}.{name} must be finite, got {value!r}.")
    if kind == "int":
        if number != int(number):
            raise SearchSpaceError(f"Search space {path}: {key}.{name} must be an integer for type int, got "
                                   f"{value!r}.")
        return int(number)
    return number


def _parse_one(path: str, key: str, spec) -> ParamSpec:
    if not isinstance(spec, dict) or "type" not in spec:
        raise SearchSpaceError(
            f"Search space {path}: {key} must map to a distribution such as {{type: loguniform, low: 1.0e-5, "
            f"high: 1.0e-3}}, {{type: int, low: 1, high: 4}} or {{type: categorical, choices: [a, b]}}; got {spec!r}.")
    dist = str(spec["type"]).lower()
    if dist not in DISTRIBUTIONS:
        close = difflib.get_close_matches(dist, list(DISTRIBUTIONS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SearchSpaceError(f"Search space {path}: {key} has unknown distribution type '{spec['type']}'.{hint} "
                               f"Use one of: {', '.join(DISTRIBUTIONS)}.")
    kind, log = DISTRIBUTIONS[dist]
    extra = sorted(set(spec) - _FIELDS[kind])
    if extra:
        raise SearchSpaceError(f"Search space {path}: {key} ({dist}) has unknown fields {extra}; allowed: "
                               f"{sorted(_FIELDS[kind])}.")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"Search space {path}: {key}.choices must be a non-empty list, got {choices!r}.")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise SearchSpaceError(
                    f"Search space {path}: {key}.choices holds {c!r}; choices must be numbers, strings, booleans or "
                    "null (write a tuple value as a string, e.g. \"(300, 400)\").")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"Search space {path}: {key}.choices has duplicates: {choices}.")
        return ParamSpec(key, "categorical", choices=list(choices))
    for name in ("low", "high"):
        if name not in spec:
            raise SearchSpaceError(f"Search space {path}: {key} ({dist}) needs '{name}'.")
    low, high = _number(path, key, "low", spec["low"], kind), _number(path, key, "high", spec["high"], kind)
    if not low < high:
        raise SearchSpaceError(f"Search space {path}: {key} needs low < high, got low={low:g}, high={high:g}.")
    if log is None:
        log = bool(spec.get("log", False))
    step = spec.get("step")
    if step is not None:
        step = _number(path, key, "step", step, kind)
        if step <= 0:
            raise SearchSpaceError(f"Search space {path}: {key}.step must be > 0, got {step:g}.")
        if log:
            raise SearchSpaceError(f"Search space {path}: {key}: a log-scale distribution takes no step.")
    if log and low <= 0:
        raise SearchSpaceError(f"Search space {path}: {key} is log-scale, so low must be > 0, got {low:g}.")
    return ParamSpec(key, kind, low=low, high=high, step=step, log=bool(log))


def _check_against_config(path: str, spec: ParamSpec, cfg) -> None:
    """Every key must exist in ``cfg`` and accept the distribution's values (the overrides' own type checks)."""
    if spec.key in _NOT_TUNABLE:
        raise SearchSpaceError(f"Search space {path}: {spec.key} cannot be tuned (every trial gets its own).")
    keys = all_config_keys(cfg)
    if spec.key not in keys:
        close = difflib.get_close_matches(spec.key, keys, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SearchSpaceError(f"Search space {path}: '{spec.key}' is not a config key.{hint} (Keys are written "
                               "as in overrides, e.g. SOLVER.BASE_LR.)")
    values = spec.choices if spec.kind == "categorical" else [spec.low, spec.high]
    for value in values:
        trial_cfg = cfg.clone()
        trial_cfg.defrost()
        try:
            trial_cfg.merge_from_list([spec.key, value])
        except ConfigError as e:
            message = str(e).replace(" (from command line)", "")
            if "is a section" in message:
                message = f"'{spec.key}' is a config section; name one of its keys"
            raise SearchSpaceError(f"Search space {path}: {spec.key} = {value!r} does not fit the config: "
                                   f"{message}") from None


def parse_search_space(data, cfg, path: str = "<search space>") -> Dict[str, ParamSpec]:
    """Parse a loaded search-space mapping (``{config key: distribution}``) and check it against ``cfg``."""
    if not isinstance(data, dict) or not data:
        raise SearchSpaceError(f"Search space {path} must be a non-empty mapping of config keys to distributions, "
                               f"e.g. 'SOLVER.BASE_LR: {{type: loguniform, low: 1.0e-5, high: 1.0e-3}}'.")
    out: Dict[str, ParamSpec] = {}
    for key, spec in data.items():
        param = _parse_one(path, str(key), spec)
        _check_against_config(path, param, cfg)
        out[param.key] = param
    return out


def load_search_space(path: str, cfg) -> Dict[str, ParamSpec]:
    """Read and check the search-space YAML file ``path`` against ``cfg`` (see :func:`parse_search_space`)."""
    if not os.path.isfile(path):
        raise SearchSpaceError(f"Search space file not found: '{path}' (give a YAML file with --space).")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise SearchSpaceError(f"Search space {path} is not valid YAML: {' '.join(str(e).split())}") from None
    return parse_search_space(data, cfg, path)


def grid_search_space(space: Dict[str, ParamSpec]) -> Dict[str, list]:
    """The value lists Optuna's GridSampler walks: choices, every int in range (by step), floats by their step."""
    grid = {}
    for key, p in space.items():
        if p.kind == "categorical":
            grid[key] = list(p.choices)
        elif p.kind == "int" and not p.log:
            grid[key] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        elif p.kind == "float" and p.step:
            n = int(math.floor((p.high - p.low) / p.step + 1e-9))
            grid[key] = [float(round(p.low + i * p.step, 12)) for i in range(n + 1)]
        else:
            raise SearchSpaceError(f"--sampler grid needs a finite list of values for {key} ({p.describe()}): use "
                                   "categorical choices, an int range, or a float with a step.")
    return grid


def suggest_params(trial, space: Dict[str, ParamSpec]) -> Dict[str, Any]:
    """Ask ``trial`` for a value of every key of ``space``; returns ``{config key: value}``."""
    params = {}
    for key, p in space.items():
        if p.kind == "categorical":
            params[key] = trial.suggest_categorical(key, p.choices)
        elif p.kind == "int":
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def apply_params(cfg, params: Dict[str, Any], output_dir: Optional[str] = None):
    """An unfrozen copy of ``cfg`` with ``params`` (config key -> value) and ``OUTPUT_DIR`` set."""
    out = cfg.clone()
    out.defrost()
    out.merge_from_list([x for kv in params.items() for x in kv])
    if output_dir is not None:
        out.OUTPUT_DIR = output_dir
    return out


class OptunaPruningHook(HookBase):
    """Reports every fresh evaluation of ``metric`` to the Optuna ``trial`` (step = iterations done); when the
    trial's pruner says so (``prune``) after an evaluation during training, stops training after this iteration
    through ``trainer.request_stop()`` (the final evaluation is reported but does not prune: the run is over).

    After training: ``values`` (step -> value), ``last_value``, ``pruned_at`` (iterations done, or None).
    """

    def __init__(self, trial, metric: str, *, prune: bool = True):
        self.trial, self.metric, self.prune = trial, metric, bool(prune)
        self.values: Dict[int, float] = {}
        self.last_value: Optional[float] = None
        self.pruned_at: Optional[int] = None

    def _check(self, step: int, *, may_prune: bool = True) -> None:
        try:
            value = _fresh_metric(self.trainer, self.metric)
        except KeyError:
            reported = sorted(self.trainer.latest_eval[1])
            close = difflib.get_close_matches(self.metric, reported, n=1, cutoff=0.4)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise TuneError(f"--metric '{self.metric}' is not reported by this config's evaluators.{hint} Reported: "
                            f"{', '.join(reported)}.") from None
        if value is None or step in self.values:
            return
        value = float(value)
        self.values[step] = value
        self.last_value = value
        if not math.isfinite(value):
            return  # Optuna refuses to store NaN intermediate values; the objective fails the trial instead
        self.trial.report(value, step)
        if may_prune and self.prune and self.pruned_at is None and self.trial.should_prune():
            self.pruned_at = step
            logger.info("Trial %d pruned after %d iterations (%s = %.4f).", self.trial.number, step, self.metric,
                        value)
            self.trainer.request_stop()

    def after_step(self):
        self._check(self.trainer.iter + 1)

    def after_train(self):
        # The final evaluation is reported, but never prunes: the run is over, its value is the trial's objective.
        if self.trainer.completed:
            self._check(self.trainer.iter, may_prune=False)


@dataclass
class TrialResult:
    """What :func:`run_trial` measured: the last evaluation of the metric, every evaluation, the prune point."""

    value: Optional[float]
    values: Dict[int, float]
    pruned_at: Optional[int]
    iterations: int
    seconds: float
    output_dir: str


class _QuietTrainer(DefaultTrainer):
    """A trial's trainer without the evaluation progress bar (the search prints one line per trial)."""

    show_progress = False


def _quiet_setup(cfg, args) -> None:
    """:func:`default_setup` with the console kept to warnings: the trial's log goes to its log.txt in full."""
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(io.StringIO()):  # the setup's own INFO lines (environment, config)
        default_setup(cfg, args)
    for handler in logging.getLogger("sgg").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(real_stdout)
            handler.setLevel(logging.WARNING)


def run_trial(cfg, params: Dict[str, Any], output_dir: str, trial, metric: str, *, prune: bool = True,
              verbose: bool = False) -> TrialResult:
    """Train one sgg run: ``cfg`` + ``params`` into ``output_dir`` (config.yaml, log.txt, metrics.json,
    checkpoints as any run), reporting ``metric`` to ``trial``. OUTPUT_DIR's lock is released when it ends."""
    trial_cfg = apply_params(cfg, params, output_dir)
    trial_cfg.freeze()
    import_user_modules(trial_cfg)
    DatasetCatalog.configure(trial_cfg)
    start = time.perf_counter()
    try:
        args = SimpleNamespace(config_file="", resume=False, eval_only=False, opts=[])
        (default_setup if verbose else _quiet_setup)(trial_cfg, args)
        trainer = (DefaultTrainer if verbose else _QuietTrainer)(trial_cfg)
        hook = OptunaPruningHook(trial, metric, prune=prune)
        trainer.register_hooks([hook])
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        release_output_dir_lock()
    return TrialResult(value=hook.last_value, values=dict(hook.values), pruned_at=hook.pruned_at,
                       iterations=int(trainer.iter), seconds=time.perf_counter() - start, output_dir=output_dir)


# ---------------------------------------------------------------------------------------------- study / database
WORKER_ATTR = "sgg_worker"  # "host:pid" of the process running a trial, to fail it at once when that process is gone


def _storage(url: str, heartbeat_interval: int, grace_period: int):
    optuna = require_optuna()
    if url.startswith("sqlite:///"):
        folder = os.path.dirname(os.path.abspath(url[len("sqlite:///"):]))
        os.makedirs(folder, exist_ok=True)
    # SQLite: wait for a lock instead of failing when several processes share the file.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # Stale trials (no heartbeat for grace_period s) are failed by Optuna and retried once with the same parameters;
    # the callback's name changed in Optuna 4.9.
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry_kw = "heartbeat_stale_trial_callback"
    if retry_cls is None:
        retry_cls, retry_kw = optuna.storages.RetryFailedTrialCallback, "failed_trial_callback"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period, **{retry_kw: retry_cls(max_retry=1)})
    except Exception as e:  # SQLAlchemy's errors name the URL problem
        raise TuneError(f"--storage '{url}' cannot be opened: {' '.join(str(e).split())[:300]}") from None


def open_study(storage_url: str, study_name: str, *, direction: str, sampler=None, pruner=None, metric: str = "",
               heartbeat_interval: int = 30, grace_period: int = 120):
    """Create or load the study ``study_name`` in the database ``storage_url`` (any SQLAlchemy URL).

    A loaded study must have the same direction and objective metric (else :class:`TuneError`). Trials keep a
    heartbeat every ``heartbeat_interval`` s; a RUNNING trial silent for ``grace_period`` s (its process was killed,
    on any machine) is failed and retried once with the same parameters by the next process that works on the study.
    """
    optuna = require_optuna()
    if direction not in ("maximize", "minimize"):
        raise TuneError(f"--direction must be max or min, got '{direction}'.")
    storage = _storage(storage_url, heartbeat_interval, grace_period)
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise TuneError(f"Study '{study_name}' in {storage_url} maximises/minimises differently "
                        f"({study.direction.name.lower()}); use --direction accordingly or another --study-name.")
    known = study.user_attrs.get("sgg_metric")
    if known and metric and known != metric:
        raise TuneError(f"Study '{study_name}' in {storage_url} optimises '{known}', not '{metric}'; pass --metric "
                        f"{known} or another --study-name.")
    if metric and not known:
        study.set_user_attr("sgg_metric", metric)
    return study


def fail_orphaned_trials(study, *, retry: bool = True) -> List[int]:
    """Fail the study's RUNNING trials whose process on this machine is gone (killed search); with ``retry`` each
    one's parameters are queued again (once). Trials of other machines are left to the heartbeat check. Returns the
    failed trial numbers."""
    optuna = require_optuna()
    state = optuna.trial.TrialState
    storage = study._storage  # noqa: SLF001  (the public Study API has no way to change another trial's state)
    study_id = storage.get_study_id_from_name(study.study_name)
    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        worker = str(t.user_attrs.get(WORKER_ATTR, ""))
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "sgg_failed", f"process {worker} was gone (killed search)")
        storage.set_trial_state_values(trial_id, state=state.FAIL)
        failed.append(t.number)
        if retry and "sgg_retry_of" not in t.user_attrs:
            study.enqueue_trial(dict(t.params), user_attrs={"sgg_retry_of": t.number})
        logger.info("Trial %d was RUNNING in a process that is gone (%s): failed%s.", t.number, worker,
                    ", its parameters queued again" if retry else "")
    return failed


def finished_trials(study) -> int:
    """Trials that ran to the end or were pruned (what ``--trials`` counts; failed / killed ones do not)."""
    optuna = require_optuna()
    state = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_line(trial, metric: str) -> str:
    """One progress line: number, state, value, prune point, seconds, parameters."""
    state = trial.state.name
    value = trial.value if trial.value is not None else trial.user_attrs.get("sgg_last_value")
    text = f"trial {trial.number:3d} {state:8s} {metric}=" + (_fmt(value) if value is not None else "-")
    if trial.user_attrs.get("sgg_pruned_at") is not None:
        text += f" (pruned at iter {trial.user_attrs['sgg_pruned_at']})"
    if trial.user_attrs.get("sgg_seconds") is not None:
        text += f" {trial.user_attrs['sgg_seconds']:.1f}s"
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    return f"{text}  {params}"


def summary_table(study, metric: str) -> str:
    """A plain-text table of every trial (number, state, value, prune point, seconds, parameters)."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    header = ["#", "state", metric, "pruned@", "s"] + keys
    rows = []
    for t in trials:
        value = t.value if t.value is not None else t.user_attrs.get("sgg_last_value")
        rows.append([str(t.number), t.state.name, _fmt(value) if value is not None else "-",
                     str(t.user_attrs.get("sgg_pruned_at") or "-"),
                     f"{t.user_attrs['sgg_seconds']:.0f}" if "sgg_seconds" in t.user_attrs else "-"]
                    + [_fmt(t.params[k]) if k in t.params else "-" for k in keys])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_best_config(study, cfg, path: str, metric: str, *, output_dir: str) -> Tuple[str, Any]:
    """Write the best COMPLETE trial's config (``cfg`` + its parameters, ``OUTPUT_DIR`` = ``output_dir``) to ``path``
    as a YAML file ``tools/train_net.py --config-file`` runs. Returns (path, best trial)."""
    optuna = require_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise TuneError(f"Study '{study.study_name}' has no completed trial yet, so there is no best config.")
    best = study.best_trial
    best_cfg = apply_params(cfg, dict(best.params), output_dir)
    header = [f"# Best trial {best.number} of study '{study.study_name}': {metric} = {best.value:.6g} "
              f"({study.direction.name.lower()}).",
              "# Parameters: " + ", ".join(f"{k}={v!r}" for k, v in best.params.items()),
              f"#   python tools/train_net.py --config-file {path}"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(header) + "\n" + best_cfg.dump())
    os.replace(path + ".tmp", path)
    # Parse it back as the run will: the written file must load into a fresh config.
    check = get_cfg()
    check.merge_from_file(path)
    return path, best


def save_plots(study, folder: str) -> Dict[str, str]:
    """Optuna's optimisation history and parameter importances as PNG (matplotlib) and, when plotly is installed,
    HTML. Returns ``{name: path}``; a plot that cannot be drawn yet (e.g. importances of fewer than two completed
    trials) is skipped with a log line."""
    optuna = require_optuna()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis_mpl

    os.makedirs(folder, exist_ok=True)
    out: Dict[str, str] = {}
    plots = {"optimization_history": (vis_mpl.plot_optimization_history, "plot_optimization_history"),
             "param_importances": (vis_mpl.plot_param_importances, "plot_param_importances")}
    try:
        import plotly  # noqa: F401
        have_plotly = True
    except ImportError:
        have_plotly = False
    for name, (mpl_fn, plotly_name) in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = mpl_fn(study)
                fig = (ax if isinstance(ax, np.ndarray) else np.array([ax])).flat[0].figure
                fig.savefig(os.path.join(folder, f"{name}.png"), dpi=110, bbox_inches="tight")
                plt.close(fig)
                out[f"{name}.png"] = os.path.join(folder, f"{name}.png")
                if have_plotly:
                    getattr(optuna.visualization, plotly_name)(study).write_html(
                        os.path.join(folder, f"{name}.html"), include_plotlyjs="cdn")
                    out[f"{name}.html"] = os.path.join(folder, f"{name}.html")
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            logger.info("Plot %s skipped: %s", name, " ".join(str(e).split()))
            plt.close("all")
    return out


def worker_id() -> str:
    """``host:pid`` of this process (stored on each trial it runs, see :func:`fail_orphaned_trials`)."""
    return f"{socket.gethostname()}:{os.getpid()}"
