#!/usr/bin/env python
"""Benchmarks: ``python tools/benchmark.py NAME [options]``; ``python tools/benchmark.py --list`` lists them.

Each benchmark lives in ``tools/benchmarks/NAME.py`` and defines ``add_arguments(parser)`` and ``run(args)``.
Every benchmark measures sgg against a baseline implementation *in the same run* and prints the ratio.
"""

import argparse
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.join(HERE, "benchmarks")
sys.path.insert(0, os.path.dirname(HERE))

from sgg.utils.errors import run_cli  # noqa: E402


def available() -> dict:
    """name -> path of every benchmark module."""
    return {f[:-3]: os.path.join(BENCH_DIR, f) for f in sorted(os.listdir(BENCH_DIR))
            if f.endswith(".py") and not f.startswith("_")}


def load(name: str):
    """Import ``tools/benchmarks/NAME.py``."""
    spec = importlib.util.spec_from_file_location(f"sgg_benchmark_{name}", available()[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    benches = available()
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(__doc__)
        for name in benches:
            doc = (load(name).__doc__ or "").strip().splitlines()
            print(f"  {name:<20} {doc[0] if doc else ''}")
        return 0
    name = argv[0]
    if name not in benches:
        print(f"Unknown benchmark '{name}'. Available: {', '.join(benches)}", file=sys.stderr)
        return 2
    module = load(name)
    parser = argparse.ArgumentParser(prog=f"tools/benchmark.py {name}", description=module.__doc__)
    module.add_arguments(parser)
    return run_cli(module.run, parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
