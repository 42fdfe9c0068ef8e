"""tools/generate_video.py on a tiny model: from a diffusers folder and from an sgg checkpoint with EMA weights."""

import itertools
import os
import re

import numpy as np
import pytest
import torch

from sgg.engine.ema import EMAHook
from sgg.engine.train_loop import SimpleTrainer
from sgg.modeling import build_model
from sgg.utils.video_io import read_video
from tests.modeling.t2v_tiny import tiny_batch, tiny_t2v_cfg
from tests.tools.tool_loader import load_tool


def _tool():
    return load_tool("generate_video")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained 2 steps with EMA, saved as an sgg checkpoint + config and as a diffusers folder."""
    root = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    cfg = tiny_t2v_cfg()
    model = build_model(cfg)
    ema = EMAHook(decay=0.5, prefix="unet.", warmup=False)
    trainer = SimpleTrainer(model, itertools.repeat(tiny_batch()),
                            torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2))
    trainer.register_hooks([ema])
    trainer.train(0, 2)
    ckpt = str(root / "model_final.pth")
    torch.save({"model": model.state_dict(), "trainer": trainer.state_dict()}, ckpt)
    cfg_path = str(root / "config.yaml")
    with open(cfg_path, "w") as f:
        f.write(cfg.dump())
    folder = model.save_pretrained(str(root / "diffusers"), unet_state_dict={
        **model.unet.state_dict(), **ema.ema.state_dict(relative=True)})
    return {"root": root, "ckpt": ckpt, "cfg": cfg_path, "folder": folder}


def test_generate_from_diffusers_folder_writes_mp4_and_contact_sheet(trained, capsys):
    out = str(trained["root"] / "samples" / "ball.mp4")
    code = _tool().main(["--weights", trained["folder"], "--prompt", "Pushing red ball from left to right",
                         "--frames", "4", "--steps", "3", "--guidance", "9", "--seed", "0", "--output", out])
    assert code == 0
    frames, _ = read_video(out)
    assert frames.shape == (4, 16, 16, 3)
    sheet = out[:-4] + "_contact_sheet.png"
    assert os.path.isfile(sheet)
    printed = capsys.readouterr().out
    assert f"video: {out}" in printed and f"contact sheet: {sheet}" in printed


def test_checkpoint_with_ema_equals_exported_folder(trained):
    """A .pth + config with its EMA weights must sample exactly what the EMA diffusers export samples."""
    tool = _tool()
    from_ckpt = tool.load_from_checkpoint(trained["ckpt"], trained["cfg"], [], "cpu", use_ema=True)
    from_folder = tool.load_from_diffusers_folder(trained["folder"], "cpu")
    live = tool.load_from_checkpoint(trained["ckpt"], trained["cfg"], [], "cpu", use_ema=False)
    kwargs = dict(num_frames=4, height=16, width=16, num_inference_steps=3, guidance_scale=9.0)
    a = from_ckpt.generate(["Moving blue box up"], generator=torch.Generator().manual_seed(3), **kwargs)
    b = from_folder.generate(["Moving blue box up"], generator=torch.Generator().manual_seed(3), **kwargs)
    c = live.generate(["Moving blue box up"], generator=torch.Generator().manual_seed(3), **kwargs)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (a - c).abs().max() > 0  # the EMA weights differ from the live ones


def test_gif_output_and_bad_weights(trained, capsys):
    tool = _tool()
    out = str(trained["root"] / "x.gif")
    assert tool.main(["--weights", trained["folder"], "--prompt", "Moving blue box up", "--frames", "3",
                      "--steps", "2", "--output", out]) == 0
    from PIL import Image

    with Image.open(out) as gif:
        assert gif.n_frames == 3 and np.asarray(gif.convert("RGB")).shape == (16, 16, 3)
    capsys.readouterr()
    for weights, message in ((trained["ckpt"], "also pass --config-file"),
                             (str(trained["root"] / "nope"), "nope' does not exist.*nothing is downloaded"),
                             (str(trained["root"] / "empty"), "missing 'unet', 'vae'")):
        if weights.endswith("empty"):
            (trained["root"] / "empty").mkdir()
        assert tool.main(["--weights", weights, "--prompt", "x"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and re.match("error: .*" + message, err), err
        assert "Traceback" not in err
