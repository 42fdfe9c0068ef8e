"""tools/benchmark.py train_step / loader / finite_check on the engine's toy config: every figure is printed and
consistent (no timing assertions: performance is measured by the benchmarks, not by tests)."""

import json
import os

from tests.tools.tool_loader import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = os.path.join(ROOT, "tests", "engine", "toy.yaml")


def test_train_step_prints_every_figure(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = load_tool("benchmark").main(["train_step", "--config-file", TOY, "--iters", "3", "--warmup", "1",
                                      "--quick-limits", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for field in ("step time (median)", "samples/s", "data", "forward", "backward", "optimizer", "FLOPs per step",
                  "2 x forward rule", "achieved:", "matmul GFLOP/s fp32", "copy bandwidth",
                  "fraction of the matmul_fp32 peak", "peak memory", "profile (1 step", "top operators",
                  "load average"):
        assert field in text, field
    r = json.loads(out.read_text())
    assert r["steps_timed"] == 3 and r["samples_per_step"] == 8
    ph = r["phases"]
    assert all(ph[k] >= 0 for k in ("data", "forward", "optimizer")) and ph["total"] > 0
    # Each step's phases add up to its total (they are cut from one timeline).
    mean = r["phases_mean"]
    assert abs(sum(mean[k] for k in ("data", "forward", "backward", "optimizer")) - mean["total"]) < 1e-9
    f = r["flops"]
    assert f["forward_source"] == "fvcore" and f["forward"] > 0
    # The toy's input needs no gradient, so its first layer's input gradient is never computed: the measured
    # backward is below the 2 x forward rule, and above the weight gradients alone (= forward).
    assert f["forward_measured"] <= f["backward_measured"] < 2 * f["forward_measured"]
    assert f["total"] == f["forward"] + f["backward_measured"]
    assert abs(r["achieved_flops_per_s"] - f["total"] / r["step_s"]) < 1e-6 * r["achieved_flops_per_s"]
    assert 0 < r["fraction_of_peak"] == r["achieved_flops_per_s"] / r["peak_flops_per_s"]
    assert r["peak_memory"] >= r["rss_before"] > 0
    assert r["profile"]["calls"] > 0 and r["profile"]["top"]


def test_loader_prints_both_rates_and_the_verdict(capsys):
    rc = load_tool("benchmark").main(["loader", "--config-file", TOY, "--batches", "4", "--steps", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "loader delivers:" in text and "step consumes:" in text
    verdict = [line for line in text.splitlines() if line.startswith("margin:")]
    assert verdict and ("OK" in verdict[0] or "LOADER-BOUND" in verdict[0])


def test_finite_check_compares_identical_values(capsys):
    rc = load_tool("benchmark").main(["finite_check", "--config-file", TOY, "--repeat", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith(("gradients", "weights + buffers", "with "))]
    assert len(rows) == 4 and all(line.rstrip().endswith("True") for line in rows)


def test_train_step_refuses_an_unknown_key(capsys):
    rc = load_tool("benchmark").main(["train_step", "--config-file", TOY, "SOLVER.NOT_A_KEY", "1"])
    assert rc == 2
    assert "SOLVER.NOT_A_KEY" in capsys.readouterr().err
