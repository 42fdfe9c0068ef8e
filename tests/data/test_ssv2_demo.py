"""The demo base pipeline: a VAE fitted to demo frames, saved as a loadable diffusers folder."""

import json
import os

import numpy as np
import torch

from sgg.data.demo.ssv2_demo import DEMO_TEMPLATES, build_demo_base_pipeline, fit_vae_to_frames, render_clip
from sgg.modeling.meta_arch.text_to_video import build_parts_from_config, load_diffusers_parts
from tests.modeling.t2v_tiny import tiny_t2v_cfg


def _frames():
    clips = [render_clip(t, "red ball", seed=i)[::3, 16:32, 24:40] for i, t in enumerate(DEMO_TEMPLATES)]
    return torch.from_numpy(np.concatenate(clips)).permute(0, 3, 1, 2).contiguous()  # (32, 3, 16, 16) uint8


def test_fit_vae_reduces_reconstruction_error():
    torch.set_num_threads(1)
    cfg = tiny_t2v_cfg()
    frames = _frames()
    torch.manual_seed(0)
    vae = build_parts_from_config(cfg)["vae"]
    before = fit_vae_to_frames(vae, frames, iters=0, batch_size=8)
    after = fit_vae_to_frames(vae, frames, iters=20, batch_size=8)
    assert after < 0.5 * before
    assert not any(p.requires_grad for p in vae.parameters())


def test_base_pipeline_folder_loads_with_fitted_scaling(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_t2v_cfg()
    frames = _frames()
    folder = build_demo_base_pipeline(cfg, str(tmp_path / "base"), frames=frames, vae_iters=5)
    with open(os.path.join(folder, "vae", "config.json")) as f:
        scaling = json.load(f)["scaling_factor"]
    parts = load_diffusers_parts(folder)
    with torch.no_grad():
        latents = parts["vae"].encode(frames.float() / 127.5 - 1).latent_dist.mode()
    assert abs(scaling - 1.0 / float(latents.std())) < 1e-3 * scaling
    assert parts["vae"].config.scaling_factor == scaling
