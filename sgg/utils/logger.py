"""Logging setup: console (rank 0) + ``log.txt`` (``log.txt.rankN`` on other ranks)."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logger"]


def setup_logger(output: str | None = None, distributed_rank: int = 0, *, name: str = "sgg",
                 abbrev_name: str | None = None) -> logging.Logger:
    """Configure the ``name`` logger: INFO to stdout on rank 0, DEBUG to ``output`` (a file or a directory)."""
    log = logging.getLogger(name)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for handler in list(log.handlers):  # a new run in the same process replaces the previous run's handlers
        if getattr(handler, "_sgg_handler", False):
            log.removeHandler(handler)
            handler.close()
    abbrev = abbrev_name or name
    fmt = logging.Formatter(f"[%(asctime)s {abbrev}]: %(message)s", datefmt="%m/%d %H:%M:%S")
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.INFO)
        ch.setFormatter(fmt)
        ch._sgg_handler = True
        log.addHandler(ch)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s",
                                          datefmt="%m/%d %H:%M:%S"))
        fh._sgg_handler = True
        log.addHandler(fh)
    return log
