"""Printing and checking evaluation results (``copypaste:`` lines, ``TEST.EXPECTED_RESULTS``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Dict

__all__ = ["print_csv_format", "verify_results", "flatten_results_dict", "format_results_table"]

logger = logging.getLogger(__name__)


def format_results_table(task: str, metrics: Dict[str, float]) -> str:
    """A two-row text table of one task's metrics."""
    names = list(metrics)
    values = [f"{metrics[k]:.4f}" if isinstance(metrics[k], (int, float)) else str(metrics[k]) for k in names]
    widths = [max(len(a), len(b)) for a, b in zip(names, values)]
    head = " | ".join(n.ljust(w) for n, w in zip(names, widths))
    row = " | ".join(v.ljust(w) for v, w in zip(values, widths))
    return f"{task}:\n| {head} |\n| {row} |"


def print_csv_format(results: Dict[str, Dict[str, float]]) -> str:
    """Log each task's metrics as a table plus ``copypaste:`` CSV lines; returns the text."""
    lines = []
    for task, metrics in results.items():
        if task.startswith("_") or not isinstance(metrics, Mapping):
            continue
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        lines.append(format_results_table(task, scalars))
        lines.append(f"copypaste: Task: {task}")
        lines.append("copypaste: " + ",".join(scalars))
        lines.append("copypaste: " + ",".join(f"{v:.4f}" for v in scalars.values()))
    text = "\n".join(lines)
    for line in lines:
        logger.info(line)
    return text


def verify_results(cfg, results: Dict[str, Dict[str, float]]) -> bool:
    """Check ``cfg.TEST.EXPECTED_RESULTS`` ([[task, metric, expected, tolerance], ...]); log every failure."""
    expected = cfg.TEST.EXPECTED_RESULTS
    if not expected:
        return True
    ok = True
    for item in expected:
        if len(item) != 4:
            raise ValueError(f"TEST.EXPECTED_RESULTS entries must be [task, metric, value, tolerance]; got {item!r}")
        task, metric, value, tol = item
        actual = results.get(task, {}).get(metric)
        if actual is None:
            logger.error("Expected result %s/%s not reported by any evaluator.", task, metric)
            ok = False
            continue
        if not math.isfinite(actual) or abs(actual - value) > tol:
            logger.error("Result %s/%s = %.4f, expected %.4f +- %.4f", task, metric, actual, value, tol)
            ok = False
    if ok:
        logger.info("All TEST.EXPECTED_RESULTS met.")
    return ok


def flatten_results_dict(results: Mapping, prefix: str = "") -> Dict[str, float]:
    """``{"sgg": {"R@50": x}}`` -> ``{"sgg/R@50": x}`` (scalars only)."""
    flat = {}
    for k, v in results.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(flatten_results_dict(v, key))
        elif isinstance(v, (int, float)):
            flat[key] = float(v)
    return flat
