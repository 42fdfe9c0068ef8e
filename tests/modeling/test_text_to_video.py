"""TextToVideoDiffusion with tiny random parts: training step, DDIM sampling, evaluation, diffusers I/O, the schedule
of a pretrained folder. The parts themselves (tokenizer, checkpointing, loaders) are tested in test_diffusion_parts."""

import copy
import json
import os

import pytest
import torch

from sgg.modeling import build_model
from sgg.modeling.meta_arch.text_to_video import TextToVideoDiffusion
from tests.modeling.t2v_tiny import tiny_batch, tiny_t2v_cfg, tiny_t2v_model


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def test_one_training_step_changes_only_the_unet():
    model = tiny_t2v_model()
    unet_before = copy.deepcopy(model.unet.state_dict())
    frozen_before = {k: v.clone() for k, v in list(model.vae.state_dict().items()) +
                     list(model.text_encoder.state_dict().items())}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.requires_grad for p in model.unet.parameters())
    assert not any(p.requires_grad for p in model.vae.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())

    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    losses = model(tiny_batch())
    assert set(losses) == {"loss_diffusion"}
    loss = losses["loss_diffusion"]
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    optimizer.step()

    changed = [k for k, v in model.unet.state_dict().items() if not torch.equal(v, unet_before[k])]
    assert len(changed) > 10
    frozen_after = dict(list(model.vae.state_dict().items()) + list(model.text_encoder.state_dict().items()))
    assert all(torch.equal(frozen_after[k], v) for k, v in frozen_before.items())
    # The frozen parts stay in eval mode while the model trains.
    assert model.training and model.unet.training and not model.vae.training and not model.text_encoder.training


def test_ddim_sampling_shape_and_determinism():
    model = tiny_t2v_model().eval()
    kwargs = dict(num_frames=4, height=16, width=16, num_inference_steps=3, guidance_scale=9.0)
    a = model.generate(["Moving blue box up", "Pushing red ball from left to right"],
                       generator=torch.Generator().manual_seed(0), **kwargs)
    b = model.generate(["Moving blue box up", "Pushing red ball from left to right"],
                       generator=torch.Generator().manual_seed(0), **kwargs)
    c = model.generate(["Moving blue box up", "Pushing red ball from left to right"],
                       generator=torch.Generator().manual_seed(1), **kwargs)
    assert a.shape == (2, 4, 3, 16, 16)
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_forward_returns_val_loss_and_video():
    model = tiny_t2v_model().eval()
    batch = tiny_batch(n=2)
    with torch.no_grad():
        out = model(batch)
        again = model(batch)
    assert len(out) == 2
    for o, inp in zip(out, batch):
        assert o["caption"] == inp["caption"]
        assert o["video"].dtype == torch.uint8 and o["video"].shape == inp["video"].shape
        assert o["val_loss"] > 0
    # Deterministic: same noise / timesteps per clip id.
    assert [o["val_loss"] for o in out] == [o["val_loss"] for o in again]
    assert torch.equal(out[0]["video"], again[0]["video"])


def test_save_pretrained_reloads_in_a_plain_diffusers_pipeline(tmp_path):
    from diffusers import DiffusionPipeline, TextToVideoSDPipeline

    model = tiny_t2v_model().eval()
    folder = model.save_pretrained(str(tmp_path / "pipe"))
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    assert index["_class_name"] == "TextToVideoSDPipeline"
    assert index["scheduler"][1] == "DDIMScheduler"

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert isinstance(pipe, TextToVideoSDPipeline)
    pipe.set_progress_bar_config(disable=True)
    prompt, kwargs = "Pushing red ball from left to right", dict(num_frames=4, height=16, width=16,
                                                                  num_inference_steps=3, guidance_scale=9.0)
    ours = model.generate([prompt], generator=torch.Generator().manual_seed(0), **kwargs)
    theirs = pipe(prompt, generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).frames
    assert theirs.shape == ours.shape == (1, 4, 3, 16, 16)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    other_seed = pipe(prompt, generator=torch.Generator().manual_seed(1), output_type="pt", **kwargs).frames
    assert (other_seed - ours).abs().max() > 1e-3  # the comparison above is not trivially true

    # The folder is also a valid MODEL.T2V.PRETRAINED_DIR: same weights, same schedule, same outputs.
    reloaded = build_model(tiny_t2v_cfg(**{"MODEL.T2V.PRETRAINED_DIR": folder})).eval()
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k
    again = reloaded.generate([prompt], generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(again, ours, rtol=0, atol=1e-6)


def test_save_pretrained_with_replacement_unet_weights_restores_live_weights(tmp_path):
    from diffusers import UNet3DConditionModel

    model = tiny_t2v_model()
    live = {k: v.clone() for k, v in model.unet.state_dict().items()}
    other = {k: v + 0.5 for k, v in live.items()}
    model.save_pretrained(str(tmp_path / "ema"), unet_state_dict=other)
    saved = UNet3DConditionModel.from_pretrained(str(tmp_path / "ema"), subfolder="unet").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in other.items())
    assert all(torch.equal(model.unet.state_dict()[k], v) for k, v in live.items())


def test_pretrained_schedule_wins_over_config(tmp_path):
    model = tiny_t2v_model(**{"MODEL.T2V.SCHEDULER.BETA_START": 0.00085, "MODEL.T2V.SCHEDULER.BETA_END": 0.012})
    folder = model.save_pretrained(str(tmp_path / "p"))
    # Config asks for seed 004's from-scratch schedule; the folder's (ModelScope-like) schedule must be used.
    reloaded = TextToVideoDiffusion(tiny_t2v_cfg(**{"MODEL.T2V.PRETRAINED_DIR": folder}))
    assert reloaded.noise_scheduler.config.beta_start == pytest.approx(0.00085)
    assert reloaded.noise_scheduler.config.beta_end == pytest.approx(0.012)
    torch.testing.assert_close(reloaded.noise_scheduler.betas, model.noise_scheduler.betas)
