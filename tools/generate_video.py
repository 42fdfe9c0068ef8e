#!/usr/bin/env python
"""Sample a video from a text prompt with a trained text-to-video model; write an mp4/webm/GIF + a PNG contact sheet.

Weights are either a diffusers folder (``OUTPUT_DIR/diffusers/final``, a ModelScope download, anything
``TextToVideoSDPipeline.from_pretrained`` reads) or an sgg checkpoint (``model_final.pth``, with ``--config-file``;
the EMA weights stored in it are used unless ``--no-ema``)::

    python tools/generate_video.py --weights output/t2v_demo/diffusers/final \\
        --prompt "Pushing red ball from left to right" --frames 8 --steps 50 --guidance 9 --seed 0 \\
        --output output/t2v_demo/samples/red_ball.mp4

Nothing is downloaded: a missing folder or file is an error that names it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.checkpoint.checkpointer import CheckpointError, load_checkpoint_file  # noqa: E402
from sgg.config import ConfigError, get_cfg  # noqa: E402
from sgg.evaluation.video_generation import save_video_gif  # noqa: E402
from sgg.modeling import build_model  # noqa: E402
from sgg.modeling.diffusion_parts import load_diffusers_parts  # noqa: E402
from sgg.modeling.meta_arch.text_to_video import TextToVideoDiffusion  # noqa: E402
from sgg.utils.errors import one_line, run_cli  # noqa: E402
from sgg.utils.video_io import write_video  # noqa: E402
from sgg.utils.visualizer import save_contact_sheet  # noqa: E402

logger = logging.getLogger("sgg.tools.generate_video")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="diffusers folder, or an sgg .pth checkpoint (with --config-file)")
    p.add_argument("--config-file", default="", help="the training config (needed for a .pth checkpoint)")
    p.add_argument("--prompt", required=True, help="text prompt, e.g. 'Pushing red ball from left to right'")
    p.add_argument("--negative-prompt", default="", help="unconditional prompt for classifier-free guidance")
    p.add_argument("--frames", type=int, default=16, help="number of frames (default 16)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--guidance", type=float, default=9.0, help="classifier-free guidance scale; 1 = off (default 9)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0 = deterministic)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    p.add_argument("--height", type=int, default=0, help="pixels; 0 = the UNet's native size")
    p.add_argument("--width", type=int, default=0, help="pixels; 0 = the UNet's native size")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the written video (default 8)")
    p.add_argument("--output", default="", help="output .mp4 / .webm / .gif (default: output/t2v_samples/<prompt>.mp4)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-ema", action="store_true", help="with a .pth checkpoint: use the live, not the EMA, weights")
    p.add_argument("--export-diffusers", default="", help="with a .pth checkpoint: also write a diffusers folder here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE (with --config-file)")
    return p.parse_args(argv)


def load_from_diffusers_folder(folder: str, device: str):
    """``TextToVideoDiffusion`` from a local diffusers folder."""
    return TextToVideoDiffusion(**load_diffusers_parts(folder)).to(device).eval()


def load_from_checkpoint(path: str, config_file: str, opts, device: str, use_ema: bool):
    """``TextToVideoDiffusion`` built from ``config_file`` with weights (and EMA weights) from an sgg checkpoint."""
    if not config_file:
        raise ConfigError(f"--weights '{path}' is an sgg checkpoint: also pass --config-file (the config it was "
                          "trained with, e.g. OUTPUT_DIR/config.yaml).")
    data = load_checkpoint_file(path, "--weights")  # missing / corrupt / code-carrying files: CheckpointError
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts or []))
    cfg.MODEL.DEVICE = device
    model = build_model(cfg)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as e:  # missing / unexpected / mis-shaped tensors
        raise CheckpointError(f"Checkpoint '{path}' (--weights) does not fit the model built from '{config_file}' "
                              f"({one_line(e)[:300]}); pass the config it was trained with.") from None
    ema = data.get("trainer", {}).get("hooks", {}).get("EMAHook")
    if use_ema and ema:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in ema["shadow"].items():
                params[name].copy_(value.to(params[name].dtype))
        logger.info("Using the EMA weights of %d tensors (%d updates)", len(ema["shadow"]), ema["num_updates"])
    elif use_ema:
        logger.info("Checkpoint has no EMA state; using the trained weights.")
    return model.to(device).eval()


def _default_output(prompt: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:60] or "sample"
    return os.path.join("output", "t2v_samples", slug + ".mp4")


def write_outputs(video_uint8: torch.Tensor, output: str, fps: float, prompt: str) -> tuple:
    """Write the clip (T, 3, H, W) uint8 to ``output`` and a contact sheet beside it; returns both paths."""
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if output.lower().endswith(".gif"):
        save_video_gif(output, video_uint8, fps)
    else:
        write_video(output, video_uint8.permute(0, 2, 3, 1).contiguous().numpy(), fps)
    sheet = os.path.splitext(output)[0] + "_contact_sheet.png"
    frames = list(video_uint8)
    captions = [f"t={i}" for i in range(len(frames))]
    captions[0] = prompt if len(prompt) <= 20 else prompt[:19] + "~"  # a 128 px cell holds ~20 characters
    save_contact_sheet(sheet, frames, captions, columns=min(8, len(frames)))
    return output, sheet


def main(argv=None) -> int:
    """Entry point; returns the exit status (user errors: one ``error:`` line and 2, see sgg.utils.errors)."""
    return run_cli(_run, parse_args(argv))


def _run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)) if args.device == "cpu" else torch.get_num_threads())
    weights = os.path.expanduser(args.weights)
    if not os.path.exists(weights):
        raise ConfigError(f"--weights '{weights}' does not exist: give a local diffusers folder (e.g. "
                          "OUTPUT_DIR/diffusers/final) or an sgg .pth checkpoint; nothing is downloaded.")
    if os.path.isdir(weights):
        model = load_from_diffusers_folder(weights, args.device)
    elif weights.endswith((".pth", ".pt")):
        model = load_from_checkpoint(weights, args.config_file, args.opts, args.device, not args.no_ema)
        if args.export_diffusers:
            print(f"diffusers folder: {model.save_pretrained(args.export_diffusers)}")
    else:
        raise ConfigError(f"--weights '{weights}' is neither a diffusers folder nor a .pth checkpoint.")
    generator = torch.Generator().manual_seed(args.seed)
    video = model.generate([args.prompt], num_frames=args.frames, height=args.height or None,
                           width=args.width or None, num_inference_steps=args.steps, guidance_scale=args.guidance,
                           eta=args.eta, negative_prompt=args.negative_prompt, generator=generator)[0]
    video_uint8 = (video * 255).round().to(torch.uint8).cpu()
    out, sheet = write_outputs(video_uint8, args.output or _default_output(args.prompt), args.fps, args.prompt)
    print(f"video: {out}\ncontact sheet: {sheet}\nframes: {tuple(video_uint8.shape)} (T, C, H, W), "
          f"mean frame-to-frame change {video.diff(dim=0).abs().mean().item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
