"""sgg.modeling.diffusion_parts: offline tokenizer, gradient checkpointing of the 3D UNet, parts built from config
(seeded, scheduler from MODEL.T2V.SCHEDULER) and loaded from a folder (errors naming what is missing)."""

import copy

import pytest
import torch

import sgg.modeling.diffusion_parts as parts_module
from sgg.modeling import build_model
from sgg.modeling.diffusion_parts import (
    build_noise_scheduler,
    build_offline_clip_tokenizer,
    build_parts_from_config,
    enable_unet_gradient_checkpointing,
    load_diffusers_parts,
    make_sampling_scheduler,
    sampling_scheduler_config,
)
from tests.modeling.t2v_tiny import tiny_batch, tiny_t2v_cfg, tiny_t2v_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    model = tiny_t2v_model()
    reference = copy.deepcopy(model)
    assert enable_unet_gradient_checkpointing(model.unet) == 5  # 2 down + 1 mid + 2 up blocks
    for block in list(model.unet.down_blocks) + list(model.unet.up_blocks) + [model.unet.mid_block]:
        assert type(block).__name__.startswith("Checkpointed")
    # Count checkpoint invocations to prove the path is really taken.
    calls = []
    original = parts_module.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(parts_module, "checkpoint", counting)
    grads = []
    for m in (reference, model):
        torch.manual_seed(123)  # same timesteps / noise / VAE sample in both runs
        m(tiny_batch())["loss_diffusion"].backward()
        grads.append({n: p.grad.clone() for n, p in m.unet.named_parameters()})
    assert len(calls) == 5  # 2 down + 1 mid + 2 up blocks, all checkpointed in the second run only
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
    # State-dict keys are unchanged by the class swap (checkpoints stay loadable without it).
    assert list(model.unet.state_dict()) == list(reference.unet.state_dict())


def test_parts_from_config_are_seeded_and_follow_the_config():
    cfg = tiny_t2v_cfg(**{"MODEL.T2V.SCHEDULER.PREDICTION_TYPE": "v_prediction"})
    built = []
    for _ in range(2):
        torch.manual_seed(7)
        built.append(build_parts_from_config(cfg))
    for name in ("unet", "vae", "text_encoder"):
        a, b = built[0][name].state_dict(), built[1][name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    parts = built[0]
    assert parts["unet"].config.sample_size == 8  # 16 px frames, 2 VAE blocks = 2x downsampling
    assert parts["unet"].config.cross_attention_dim == parts["text_encoder"].config.hidden_size == 4
    scheduler = parts["noise_scheduler"]
    assert scheduler.config.prediction_type == "v_prediction" and not scheduler.config.clip_sample
    assert dict(scheduler.config) == dict(build_noise_scheduler(cfg.MODEL.T2V.SCHEDULER).config)
    sampler = make_sampling_scheduler(parts["sampling_config"])
    assert type(sampler).__name__ == "DDIMScheduler"
    assert not sampler.config.set_alpha_to_one and not sampler.config.clip_sample
    torch.testing.assert_close(sampler.betas, scheduler.betas)


def test_missing_pretrained_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"PRETRAINED_DIR .*nope.*never downloads"):
        load_diffusers_parts(str(tmp_path / "nope"))
    partial = tmp_path / "partial"
    (partial / "unet").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"missing 'vae', 'text_encoder', 'tokenizer', 'scheduler'"):
        build_model(tiny_t2v_cfg(**{"MODEL.T2V.PRETRAINED_DIR": str(partial)}))


def test_offline_tokenizer_word_tokens_and_roundtrip(tmp_path):
    from transformers import CLIPTokenizer

    tok = build_offline_clip_tokenizer(max_length=12)
    ids = tok(["Pushing red ball from left to right"], padding="max_length", max_length=12).input_ids[0]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[:9] == ["<|startoftext|>", "pushing</w>", "red</w>", "ball</w>", "from</w>", "left</w>", "to</w>",
                          "right</w>", "<|endoftext|>"]
    # Unknown words still tokenize (byte-level pieces), never to the unknown token.
    odd = tok.convert_ids_to_tokens(tok(["zyx"]).input_ids[0])
    assert odd[1:-1] == ["z", "y", "x</w>"]
    tok.save_pretrained(str(tmp_path / "tok"))
    again = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again(["Pushing red ball"]).input_ids == tok(["Pushing red ball"]).input_ids
    assert again.model_max_length == 12


def test_sampling_scheduler_keeps_the_sampling_conventions_it_asks_for():
    """diffusers' private "_use_default_values" of a DDPM config would reset steps_offset to DDIM's default 0."""
    from diffusers import DDPMScheduler

    sampler = make_sampling_scheduler(sampling_scheduler_config(DDPMScheduler(num_train_timesteps=1000)))
    assert sampler.config.steps_offset == 1 and sampler.config.set_alpha_to_one is False
    sampler.set_timesteps(10)
    assert sampler.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
