#!/usr/bin/env python
"""Write a tiny random causal language model as a local transformers folder, SceneLLM's stand-in LLM for the demo
and the tests (``MODEL.SCENELLM.LLM_PATH``). Nothing is downloaded: the model is built from a config in code.

The default is a 2-layer Llama (hidden 64, 4 heads, q/k/v/o projections for LoRA), about 0.1 M parameters, with
weights drawn from ``--seed``, so the folder is the same on every machine. Two commands run the SceneLLM demo::

    python tools/make_tiny_llm.py output/tiny_llm
    python tools/train_net.py --config-file configs/quick/scenellm_demo.yaml OUTPUT_DIR output/scenellm_demo

A real model (e.g. a local copy of ``google/gemma-3-270m``) is used by pointing ``MODEL.SCENELLM.LLM_PATH`` at its
folder instead. Bad arguments print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.config import ConfigError  # noqa: E402
from sgg.modeling.layers.language_model import import_llm_libraries  # noqa: E402
from sgg.utils.errors import run_cli  # noqa: E402

__all__ = ["tiny_llm_config", "make_tiny_llm", "build_parser", "main"]

logger = logging.getLogger("sgg.tools.make_tiny_llm")


def tiny_llm_config(*, hidden_size: int = 64, layers: int = 2, heads: int = 4, intermediate_size: int = 128,
                    vocab_size: int = 32, max_positions: int = 512):
    """A ``LlamaConfig`` of the given (small) size; ``vocab_size`` is tiny because SceneLLM feeds embeddings."""
    transformers, _ = import_llm_libraries()
    return transformers.LlamaConfig(hidden_size=hidden_size, intermediate_size=intermediate_size,
                                    num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                                    vocab_size=vocab_size, max_position_embeddings=max_positions)


def make_tiny_llm(out_dir: str, *, seed: int = 0, **sizes) -> str:
    """Build a random ``LlamaModel`` of :func:`tiny_llm_config` ``(**sizes)`` with weights from ``seed`` and save it
    (config.json + safetensors) to ``out_dir``; returns ``out_dir``."""
    transformers, _ = import_llm_libraries()
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"make_tiny_llm: '{out_dir}' exists and is not a folder; give a folder to write to.")
    config = tiny_llm_config(**sizes)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = transformers.LlamaModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    logger.info("Tiny LLM (%d layers, hidden %d, %d parameters) written to %s", config.num_hidden_layers,
                config.hidden_size, n, out_dir)
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    """``OUT_DIR`` and the model's sizes."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder to write (MODEL.SCENELLM.LLM_PATH)")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    def run() -> int:
        args = build_parser().parse_args(argv)
        for name in ("hidden_size", "layers", "heads", "intermediate_size"):
            if getattr(args, name) < 1:
                raise ConfigError(f"make_tiny_llm: --{name.replace('_', '-')} must be >= 1, got "
                                  f"{getattr(args, name)}.")
        if args.hidden_size % args.heads:
            raise ConfigError(f"make_tiny_llm: --heads {args.heads} must divide --hidden-size {args.hidden_size}.")
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        make_tiny_llm(args.out_dir, seed=args.seed, hidden_size=args.hidden_size, layers=args.layers,
                      heads=args.heads, intermediate_size=args.intermediate_size)
        print(args.out_dir)
        return 0
    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
