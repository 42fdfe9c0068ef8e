#!/usr/bin/env python
"""Write the text-to-video demo's stand-in for a pretrained ModelScope folder (and the demo data it is fitted on).

The folder holds the parts described by ``MODEL.T2V.*`` of the config, with the VAE fitted to frames of
``DATASETS.TRAIN[0]`` (the procedural SSv2 twin, generated under ``$SGG_DATASETS/demo/ssv2`` on first use); UNet and
text encoder stay random. It is an ordinary diffusers ``TextToVideoSDPipeline`` folder, so the demo then fine-tunes
from it through ``MODEL.T2V.PRETRAINED_DIR`` exactly as the real recipe fine-tunes ModelScope's weights::

    python tools/make_t2v_base_pipeline.py --config-file configs/quick/t2v_demo.yaml \\
        --base-pipeline output/t2v_demo_base
    python tools/train_net.py --config-file configs/quick/t2v_demo.yaml OUTPUT_DIR output/t2v_demo

Without ``--base-pipeline`` only the demo data is generated (and its number of training clips printed). Trailing
``KEY VALUE`` pairs override config entries. Bad arguments print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.config import ConfigError, get_cfg  # noqa: E402
from sgg.data.catalog import DatasetCatalog  # noqa: E402
from sgg.data.t2v_mapper import TextToVideoMapper  # noqa: E402
from sgg.modeling.diffusion_parts import build_parts_from_config  # noqa: E402
from sgg.modeling.meta_arch.text_to_video import TextToVideoDiffusion  # noqa: E402
from sgg.utils.errors import run_cli  # noqa: E402

__all__ = ["demo_training_frames", "fit_vae_to_frames", "build_demo_base_pipeline", "build_parser", "main"]

logger = logging.getLogger("sgg.tools.make_t2v_base_pipeline")


def demo_training_frames(cfg, dataset_name: str = "demo_ssv2_train", max_clips: int = 64) -> torch.Tensor:
    """uint8 frames (N, 3, H, W) of ``dataset_name`` decoded and resized by the evaluation-mode mapper of ``cfg``."""
    mapper = TextToVideoMapper(cfg, is_train=False)
    clips = [mapper(d)["video"] for d in DatasetCatalog.get(dataset_name)[:max_clips]]
    return torch.cat(clips)


def fit_vae_to_frames(vae, frames, *, iters: int, batch_size: int = 32, lr: float = 2e-3, kl_weight: float = 1e-3,
                      seed: int = 0) -> float:
    """Train an ``AutoencoderKL`` on uint8 ``frames`` (N, 3, H, W): pixel MSE + ``kl_weight`` x per-pixel KL.

    Returns the final reconstruction MSE (on [-1, 1] pixels, posterior mean) over the first ``batch_size`` frames.
    """
    generator = torch.Generator().manual_seed(seed)
    pixels = frames.float() / 127.5 - 1.0
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr)
    vae.train().requires_grad_(True)
    for _ in range(iters):
        batch = pixels[torch.randint(0, len(pixels), (batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        loss = ((recon - batch) ** 2).mean() + kl_weight * posterior.kl().mean() / batch[0].numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        probe = pixels[:batch_size]
        return float(((vae.decode(vae.encode(probe).latent_dist.mode()).sample - probe) ** 2).mean())


def build_demo_base_pipeline(cfg, output_dir: str, *, frames: Optional[torch.Tensor] = None,
                             vae_iters: int = 300) -> str:
    """Write a stand-in for a pretrained ModelScope folder: the parts of ``MODEL.T2V.*`` with the VAE fitted to demo
    frames (UNet and text encoder stay random; the UNet is what the demo then trains).

    A random VAE decodes any latent to colour noise, so without this step demo samples cannot show objects. The
    VAE's ``scaling_factor`` is set to 1 / std of its latents on the frames, the way Stable Diffusion's 0.18215 was
    derived. ``frames``: uint8 (N, 3, H, W); ``None`` = decode ``cfg.DATASETS.TRAIN[0]``. Returns ``output_dir``.
    """
    torch.manual_seed(max(0, cfg.SEED))
    parts = build_parts_from_config(cfg)
    if frames is None:
        frames = demo_training_frames(cfg, cfg.DATASETS.TRAIN[0])
    mse = fit_vae_to_frames(parts["vae"], frames, iters=vae_iters)
    with torch.no_grad():
        latents = parts["vae"].encode(frames[:256].float() / 127.5 - 1.0).latent_dist.mode()
    scaling = float(1.0 / latents.std())
    parts["vae"].register_to_config(scaling_factor=scaling)
    logger.info("Demo VAE fitted on %d frames for %d iterations: reconstruction MSE %.4f, scaling_factor %.4f",
                len(frames), vae_iters, mse, scaling)
    return TextToVideoDiffusion(**parts).save_pretrained(output_dir)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/quick/t2v_demo.yaml",
                        help="a TextToVideoDiffusion config (default: configs/quick/t2v_demo.yaml)")
    parser.add_argument("--base-pipeline", default="",
                        help="output folder of the demo base pipeline (replaced if it exists); "
                             "empty = only generate the demo data")
    parser.add_argument("--vae-iters", type=int, default=300, help="VAE fitting iterations (default 300)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    return parser


def _load_config(parser: argparse.ArgumentParser, args: argparse.Namespace):
    if not os.path.isfile(args.config_file):
        parser.error(f"--config-file '{args.config_file}' does not exist")
    cfg = get_cfg()
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(list(args.opts or []))
    except (ConfigError, KeyError, ValueError) as e:
        parser.error(f"config '{args.config_file}': {e}")
    if cfg.MODEL.META_ARCHITECTURE != "TextToVideoDiffusion":
        parser.error(f"config '{args.config_file}' builds {cfg.MODEL.META_ARCHITECTURE}, not TextToVideoDiffusion")
    if not cfg.DATASETS.TRAIN:
        parser.error(f"config '{args.config_file}' names no DATASETS.TRAIN to fit the VAE on")
    if cfg.DATASETS.TRAIN[0] not in DatasetCatalog:
        parser.error(f"DATASETS.TRAIN[0] '{cfg.DATASETS.TRAIN[0]}' is not a registered dataset")
    DatasetCatalog.configure(cfg)
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status (argument errors exit with status 2 through ``parser.error``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.vae_iters < 0:
        parser.error(f"--vae-iters must be >= 0, got {args.vae_iters}")
    if args.base_pipeline and os.path.isfile(args.base_pipeline):
        parser.error(f"--base-pipeline '{args.base_pipeline}' is a file; give a folder to write")
    cfg = _load_config(parser, args)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    return run_cli(_run, cfg, args)  # data / write errors: one "error:" line and 2 (sgg.utils.errors)


def _run(cfg, args) -> int:
    if args.base_pipeline:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        print(f"demo base pipeline: {build_demo_base_pipeline(cfg, args.base_pipeline, vae_iters=args.vae_iters)}")
    else:
        print(f"demo clips: {len(DatasetCatalog.get(cfg.DATASETS.TRAIN[0]))} train")
    return 0


if __name__ == "__main__":
    sys.exit(main())
