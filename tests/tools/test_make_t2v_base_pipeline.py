"""tools/make_t2v_base_pipeline.py: a VAE fitted to demo frames, saved as a loadable diffusers folder; the CLI on a
tiny config (demo data generated on first use) and its one-line errors with exit status 2."""

import json
import os

import numpy as np
import pytest
import torch

from sgg.data.demo.ssv2_demo import DEMO_TEMPLATES, render_clip
from sgg.modeling.diffusion_parts import build_parts_from_config, load_diffusers_parts
from tests.modeling.t2v_tiny import tiny_t2v_cfg
from tests.tools.tool_loader import load_tool


@pytest.fixture(scope="module")
def tool():
    torch.set_num_threads(1)
    return load_tool("make_t2v_base_pipeline")


def _frames():
    clips = [render_clip(t, "red ball", seed=i)[::3, 16:32, 24:40] for i, t in enumerate(DEMO_TEMPLATES)]
    return torch.from_numpy(np.concatenate(clips)).permute(0, 3, 1, 2).contiguous()  # (32, 3, 16, 16) uint8


def test_fit_vae_reduces_reconstruction_error(tool):
    cfg = tiny_t2v_cfg()
    frames = _frames()
    torch.manual_seed(0)
    vae = build_parts_from_config(cfg)["vae"]
    before = tool.fit_vae_to_frames(vae, frames, iters=0, batch_size=8)
    after = tool.fit_vae_to_frames(vae, frames, iters=20, batch_size=8)
    assert after < 0.5 * before
    assert not any(p.requires_grad for p in vae.parameters())


def test_base_pipeline_folder_loads_with_fitted_scaling(tool, tmp_path):
    cfg = tiny_t2v_cfg()
    frames = _frames()
    folder = tool.build_demo_base_pipeline(cfg, str(tmp_path / "base"), frames=frames, vae_iters=5)
    with open(os.path.join(folder, "vae", "config.json")) as f:
        scaling = json.load(f)["scaling_factor"]
    parts = load_diffusers_parts(folder)
    with torch.no_grad():
        latents = parts["vae"].encode(frames.float() / 127.5 - 1).latent_dist.mode()
    assert abs(scaling - 1.0 / float(latents.std())) < 1e-3 * scaling
    assert parts["vae"].config.scaling_factor == scaling


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """A tiny TextToVideoDiffusion config file training on the demo twin, and a shared $SGG_DATASETS for it."""
    root = tmp_path_factory.mktemp("make_base")
    path = root / "tiny_t2v.yaml"
    path.write_text(tiny_t2v_cfg(**{"DATASETS.TRAIN": ("demo_ssv2_train",)}).dump())
    return {"config": str(path), "datasets": str(root / "datasets"), "root": root}


def test_cli_generates_data_then_writes_a_loadable_base_pipeline(tool, tiny_config, monkeypatch, capsys):
    monkeypatch.setenv("SGG_DATASETS", tiny_config["datasets"])
    assert tool.main(["--config-file", tiny_config["config"]]) == 0
    assert capsys.readouterr().out.strip() == "demo clips: 32 train"
    assert os.path.isfile(os.path.join(tiny_config["datasets"], "demo", "ssv2", "train.json"))

    out = str(tiny_config["root"] / "base")
    assert tool.main(["--config-file", tiny_config["config"], "--base-pipeline", out, "--vae-iters", "2",
                      "SEED", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"demo base pipeline: {out}"
    parts = load_diffusers_parts(out)
    assert tuple(parts["unet"].config.block_out_channels) == (4, 8)
    assert parts["vae"].config.scaling_factor != tiny_t2v_cfg().MODEL.T2V.VAE.SCALING_FACTOR  # fitted, not default


@pytest.mark.parametrize("argv, message", [
    (["--config-file", "no/such.yaml"], "--config-file 'no/such.yaml' does not exist"),
    (["--vae-iters", "-1"], "--vae-iters must be >= 0, got -1"),
    (["UNKNOWN.KEY", "1"], "UNKNOWN.KEY"),
    (["MODEL.META_ARCHITECTURE", "FrequencyBaseline"], "builds FrequencyBaseline, not TextToVideoDiffusion"),
    (["DATASETS.TRAIN", "('nope_train',)"], "DATASETS.TRAIN[0] 'nope_train' is not a registered dataset"),
])
def test_bad_input_is_one_error_line_and_status_2(tool, tiny_config, capsys, argv, message):
    if argv[0] != "--config-file":
        argv = ["--config-file", tiny_config["config"], *argv]
    with pytest.raises(SystemExit) as exit_info:
        tool.main(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in last and message in last


def test_base_pipeline_path_that_is_a_file_is_refused(tool, tiny_config, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", tiny_config["config"], "--base-pipeline", str(target)])
    assert exit_info.value.code == 2
    assert f"error: --base-pipeline '{target}' is a file" in capsys.readouterr().err
