"""Hyper-parameter search (sgg/engine/tuning.py, tools/tune.py): search-space checks, a tiny study on the toy model
that prunes, is resumed from its database after a simulated kill, and writes a best config that trains to the same
value."""

import contextlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from sgg.config import get_cfg
from sgg.engine.tuning import OptunaPruningHook, SearchSpaceError, grid_search_space, parse_search_space

from .helpers import REPO, TOY_CFG, run_cli

optuna = pytest.importorskip("optuna", reason="the tune extra (pip install -e '.[tune]')")


def _tool():
    spec = importlib.util.spec_from_file_location("sgg_tools_tune", os.path.join(REPO, "tools", "tune.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tune = _tool()


def _toy_cfg():
    cfg = get_cfg()
    cfg.merge_from_file(TOY_CFG)
    return cfg


@pytest.mark.parametrize("space, message", [
    ({"SOLVER.BASE_LRR": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}, "Did you mean 'SOLVER.BASE_LR'"),
    ({"SOLVER.BASE_LR": {"type": "logunifrom", "low": 1e-4, "high": 1e-2}}, "Did you mean 'loguniform'"),
    ({"SOLVER.BASE_LR": {"type": "loguniform", "low": 0, "high": 1e-2}}, "log-scale, so low must be > 0"),
    ({"SOLVER.BASE_LR": {"type": "uniform", "low": 0.1, "high": 0.01}}, "needs low < high"),
    ({"SOLVER.BASE_LR": {"type": "uniform", "low": 0.1}}, "needs 'high'"),
    ({"SOLVER.BASE_LR": {"type": "uniform", "low": "abc", "high": 1}}, "low must be a number"),
    ({"SOLVER.BASE_LR": {"type": "uniform", "low": 0, "high": 1, "scale": 2}}, "unknown fields ['scale']"),
    ({"SOLVER.BASE_LR": 0.01}, "must map to a distribution"),
    ({"SOLVER.MAX_ITER": {"type": "float", "low": 1, "high": 5}}, "expects type int"),
    ({"SOLVER.MAX_ITER": {"type": "int", "low": 1.5, "high": 5}}, "must be an integer"),
    ({"SOLVER.OPTIMIZER": {"type": "categorical", "choices": []}}, "non-empty list"),
    ({"SOLVER.OPTIMIZER": {"type": "categorical", "choices": [["a"]]}}, "write a tuple value as a string"),
    ({"SOLVER.OPTIMIZER": {"type": "categorical", "choices": ["AdamW", 3]}}, "expects type str"),
    ({"SOLVER.AMP": {"type": "categorical", "choices": [True]}}, "is a config section"),
    ({"OUTPUT_DIR": {"type": "categorical", "choices": ["a"]}}, "cannot be tuned"),
    ({}, "non-empty mapping"),
])
def test_search_space_errors_name_the_key_and_the_fix(space, message):
    with pytest.raises(SearchSpaceError) as e:
        parse_search_space(space, _toy_cfg(), "space.yaml")
    assert message in str(e.value) and "space.yaml" in str(e.value)


def test_search_space_parsing_and_grid():
    space = parse_search_space({
        "SOLVER.BASE_LR": {"type": "loguniform", "low": "1e-4", "high": 1e-2},  # YAML reads 1e-4 as a string
        "SOLVER.WEIGHT_DECAY": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.05},
        "SOLVER.MAX_ITER": {"type": "int", "low": 10, "high": 30, "step": 10},
        "SOLVER.OPTIMIZER": {"type": "categorical", "choices": ["AdamW", "SGD"]},
        "SOLVER.STEPS": {"type": "categorical", "choices": ["(5,)", "(10, 15)"]},  # tuples as strings
    }, _toy_cfg())
    assert space["SOLVER.BASE_LR"].log and space["SOLVER.BASE_LR"].low == 1e-4
    assert space["SOLVER.BASE_LR"].describe() == "loguniform[0.0001, 0.01]"
    with pytest.raises(SearchSpaceError, match="needs a finite list of values for SOLVER.BASE_LR"):
        grid_search_space(space)
    del space["SOLVER.BASE_LR"]
    assert grid_search_space(space) == {"SOLVER.WEIGHT_DECAY": [0.0, 0.05, 0.1], "SOLVER.MAX_ITER": [10, 20, 30],
                                        "SOLVER.OPTIMIZER": ["AdamW", "SGD"], "SOLVER.STEPS": ["(5,)", "(10, 15)"]}


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tune.cli(argv)
    return code, out.getvalue(), err.getvalue()


def test_tiny_study_prunes_resumes_after_a_kill_and_writes_a_best_config_that_trains(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text("SOLVER.BASE_LR: {type: loguniform, low: 1e-5, high: 0.1}\n")
    out = tmp_path / "study"
    storage = f"sqlite:///{out / 'study.db'}"
    argv = ["--config-file", TOY_CFG, "--space", str(space_file), "--output", str(out), "--study-name", "toy",
            "--metric", "toy/neg_mse", "--pruner-startup-trials", "1", "--no-plots",
            "SOLVER.MAX_ITER", "10", "TEST.EVAL_PERIOD", "5", "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.STEPS", "(8,)"]
    # A good learning rate first, then a hopeless one, which the median pruner must stop at the first evaluation.
    study = tune.open_study(storage, "toy", direction="maximize", metric="toy/neg_mse")
    study.enqueue_trial({"SOLVER.BASE_LR": 0.05})
    study.enqueue_trial({"SOLVER.BASE_LR": 1e-5})
    code, stdout, _ = _run(["--trials", "2", *argv])
    assert code == 0, stdout
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[1].user_attrs["sgg_pruned_at"] == 5 and sorted(trials[1].intermediate_values) == [5]
    assert sorted(trials[0].intermediate_values) == [5, 10]
    assert len([line for line in stdout.splitlines() if line.startswith("trial ")]) == 2
    assert "PRUNED" in stdout and "(pruned at iter 5)" in stdout
    # each trial is a normal run with its own folder and config
    trial_cfg = yaml.safe_load((out / "trial_0001" / "config.yaml").read_text())
    assert trial_cfg["SOLVER"]["BASE_LR"] == 1e-5 and trial_cfg["OUTPUT_DIR"] == str(out / "trial_0001")
    assert trials[1].user_attrs["sgg_iterations"] == 5 and trials[0].user_attrs["sgg_iterations"] == 10
    losses = [json.loads(line) for line in (out / "trial_0001" / "metrics.json").read_text().splitlines()]
    assert max(r["iteration"] for r in losses if "total_loss" in r) == 4  # the pruned run stopped after 5 steps

    # Simulated kill: a trial left RUNNING by a process that no longer exists. The resumed search fails it, runs
    # its parameters again, and reaches the target of 3 finished trials.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study.enqueue_trial({"SOLVER.BASE_LR": 1e-3})
    orphan = study.ask({"SOLVER.BASE_LR": optuna.distributions.FloatDistribution(1e-5, 0.1, log=True)})
    orphan.set_user_attr("sgg_worker", f"{socket.gethostname()}:{dead.pid}")
    lr = orphan.params["SOLVER.BASE_LR"]
    assert lr == 1e-3
    code, stdout, _ = _run(["--trials", "3", *argv])
    assert code == 0, stdout
    assert "failed 1 trial(s) of a killed search ([2])" in stdout
    trials = study.get_trials()
    assert [t.state.name for t in trials[:3]] == ["COMPLETE", "PRUNED", "FAIL"]
    assert len(trials) == 4 and trials[3].params == {"SOLVER.BASE_LR": lr}
    assert trials[3].user_attrs["sgg_retry_of"] == 2 and trials[3].state.name in ("COMPLETE", "PRUNED")
    assert "#  state" in stdout  # the summary table

    # The best config is a plain config file that train_net runs, to the trial's value (fixed seed).
    best = study.best_trial
    assert best.number == 0
    best_file = out / "best_config.yaml"
    assert f"best trial 0: toy/neg_mse = {best.value:.4f}" in stdout
    best_cfg = yaml.safe_load(best_file.read_text())
    assert best_cfg["SOLVER"]["BASE_LR"] == 0.05 and best_cfg["OUTPUT_DIR"] == str(out / "best")
    r = run_cli("--config-file", str(best_file))
    assert r.returncode == 0, r.stderr
    with open(out / "best" / "inference" / "toy_test" / "results.json") as f:
        assert json.load(f)["toy"]["neg_mse"] == pytest.approx(best.value, rel=1e-6)

    # The study is finished: running again trains nothing; the plots are written from the database.
    code, stdout, _ = _run(["--trials", "3", *[a for a in argv if a != "--no-plots"]])
    assert code == 0 and "trial " not in stdout.replace("best trial", "")
    assert (out / "plots" / "optimization_history.png").stat().st_size > 1000
    assert (out / "plots" / "param_importances.png").exists()


def test_study_mismatch_and_missing_metric_are_one_line_errors(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text("SOLVER.BASE_LR: {type: loguniform, low: 1e-4, high: 0.1}\n")
    base = ["--config-file", TOY_CFG, "--output", str(tmp_path / "s"), "--trials", "1", "--no-plots"]
    opts = ["SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0"]
    code, _, err = _run([*base, "--space", str(space_file), "--metric", "toy/nse", *opts])
    assert code == 2 and "--metric 'toy/nse' is not reported" in err and "Did you mean 'toy/mse'" in err
    code, _, err = _run([*base, "--space", str(space_file), "--metric", "toy/mse", *opts])
    assert code == 2 and "optimises 'toy/nse', not 'toy/mse'" in err
    code, _, err = _run([*base, "--space", str(space_file), "--metric", "toy/nse", "--direction", "min", *opts])
    assert code == 2 and "maximises/minimises differently" in err
    code, _, err = _run([*base, "--space", str(tmp_path / "nope.yaml"), "--metric", "toy/mse", *opts])
    assert code == 2 and "Search space file not found" in err


def test_pruning_hook_prunes_only_during_training():
    """An evaluation during training may prune (the trainer is asked to stop); the final one is reported only."""
    reports = []
    trial = SimpleNamespace(number=0, report=lambda v, s: reports.append((s, v)), should_prune=lambda: True)
    stops = []
    trainer = SimpleNamespace(iter=9, completed=True, latest_eval=(9, {"toy/mse": 2.0}),
                              request_stop=lambda: stops.append(trainer.iter))
    hook = OptunaPruningHook(trial, "toy/mse")
    hook.trainer = trainer
    hook.after_step()
    assert reports == [(10, 2.0)] and stops == [9] and hook.pruned_at == 10
    hook = OptunaPruningHook(trial, "toy/mse")
    hook.trainer = trainer
    trainer.iter, trainer.latest_eval = 20, (20, {"toy/mse": 1.0})
    hook.after_train()
    assert reports[-1] == (20, 1.0) and hook.pruned_at is None and stops == [9] and hook.last_value == 1.0
