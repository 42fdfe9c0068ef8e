"""ModelScope-style text-to-video latent diffusion (seed 004) on diffusers parts.

``TextToVideoDiffusion`` = frozen ``AutoencoderKL`` (per-frame latents) + frozen CLIP text encoder + trainable
``UNet3DConditionModel`` trained with DDPM ε-prediction (or v-prediction) MSE, sampled with DDIM and
classifier-free guidance exactly as diffusers' ``TextToVideoSDPipeline`` does, so a folder written by
:meth:`TextToVideoDiffusion.save_pretrained` reproduces this model's samples in a plain diffusers pipeline.

Parts come from a local diffusers folder (``MODEL.T2V.PRETRAINED_DIR``: ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) or are built at random from ``MODEL.T2V.*`` (the demo: a tiny model and an offline
word-level CLIP tokenizer); building and loading them lives in :mod:`sgg.modeling.diffusion_parts`. Nothing is
downloaded.

Batched inputs (from ``sgg.data.t2v_mapper.TextToVideoMapper``): dicts with ``video`` uint8 (T, 3, H, W) and
``caption`` str. Training returns ``{"loss_diffusion": scalar}``; evaluation returns per input
``{"caption", "val_loss" (float), "video" (uint8 (T, 3, H, W), generated, when TEST.T2V.GENERATE)}``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zlib
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sgg.config import configurable
from sgg.modeling.build import META_ARCH_REGISTRY
from sgg.modeling.diffusion_parts import (
    build_parts_from_config,
    enable_unet_gradient_checkpointing,
    load_diffusers_parts,
    make_sampling_scheduler,
    sampling_scheduler_config,
)

__all__ = ["TextToVideoDiffusion"]

logger = logging.getLogger(__name__)


def _stable_seed(base: int, key) -> int:
    """A per-clip seed that does not depend on batch composition or worker count."""
    text = str(key)
    return (int(base) * 1_000_003 + (int(text) if text.isdigit() else zlib.crc32(text.encode()))) % (2**63)


# ------------------------------------------------------------------------------------------------------ model
@META_ARCH_REGISTRY.register()
class TextToVideoDiffusion(nn.Module):
    """Latent text-to-video diffusion: frozen VAE + frozen CLIP text encoder + trainable 3D UNet (module docstring)."""

    @configurable
    def __init__(self, *, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer, noise_scheduler,
                 sampling_config: Optional[dict] = None, caption_dropout: float = 0.0, sample_posterior: bool = True,
                 gradient_checkpointing: bool = False, generate: bool = True,
                 num_inference_steps: int = 50, guidance_scale: float = 9.0, eta: float = 0.0, seed: int = 0,
                 val_loss_timesteps: int = 10):
        """
        Args:
            unet / vae / text_encoder / tokenizer: diffusers ``UNet3DConditionModel``, ``AutoencoderKL``,
                transformers ``CLIPTextModel`` and ``CLIPTokenizer``. VAE and text encoder are frozen here.
            noise_scheduler: the training ``DDPMScheduler`` (betas, number of timesteps, prediction type).
            sampling_config: DDIM scheduler config for sampling; ``None`` = derived from ``noise_scheduler``.
            caption_dropout: probability of replacing a caption by "" in training (classifier-free guidance).
            sample_posterior: train on VAE posterior samples (True) or on the posterior mean (False).
            gradient_checkpointing: see :func:`sgg.modeling.diffusion_parts.enable_unet_gradient_checkpointing`.
            generate, num_inference_steps, guidance_scale, eta, seed: evaluation-time sampling (``TEST.T2V.*``).
            val_loss_timesteps: evenly spaced timesteps over which the deterministic validation loss is averaged.
        """
        super().__init__()
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.noise_scheduler = tokenizer, noise_scheduler
        self.sampling_config = dict(sampling_config or sampling_scheduler_config(noise_scheduler))
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        self.caption_dropout, self.sample_posterior = float(caption_dropout), bool(sample_posterior)
        self.generate_in_eval, self.num_inference_steps = bool(generate), int(num_inference_steps)
        self.guidance_scale, self.eta, self.seed = float(guidance_scale), float(eta), int(seed)
        self.val_loss_timesteps = int(val_loss_timesteps)
        if gradient_checkpointing:
            n = enable_unet_gradient_checkpointing(self.unet)
            logger.info("Gradient checkpointing on for %d UNet3D blocks", n)
        self.train()

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Parts from ``MODEL.T2V.PRETRAINED_DIR`` (if set) or ``MODEL.T2V.*``; sampling settings from ``TEST.T2V``."""
        t2v, test = cfg.MODEL.T2V, cfg.TEST.T2V
        parts = load_diffusers_parts(t2v.PRETRAINED_DIR) if t2v.PRETRAINED_DIR else build_parts_from_config(cfg)
        return {
            **parts, "caption_dropout": t2v.CAPTION_DROPOUT, "sample_posterior": t2v.SAMPLE_POSTERIOR,
            "gradient_checkpointing": t2v.GRADIENT_CHECKPOINTING,
            "generate": test.GENERATE, "num_inference_steps": test.NUM_INFERENCE_STEPS,
            "guidance_scale": test.GUIDANCE_SCALE, "eta": test.ETA, "seed": test.SEED,
            "val_loss_timesteps": test.VAL_LOSS_TIMESTEPS,
        }

    # ---------------------------------------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        """Where the UNet lives."""
        return next(self.unet.parameters()).device

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def train(self, mode: bool = True):
        """Like ``nn.Module.train`` but the frozen VAE and text encoder always stay in eval mode."""
        super().train(mode)
        self.vae.eval()
        self.text_encoder.eval()
        return self

    @torch.no_grad()
    def encode_prompts(self, captions: Sequence[str]) -> torch.Tensor:
        """CLIP hidden states (B, L, D) of ``captions``, padded to the tokenizer's max length like diffusers does."""
        ids = self.tokenizer(list(captions), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    @torch.no_grad()
    def encode_videos(self, videos: torch.Tensor, *, sample: bool = True) -> torch.Tensor:
        """uint8 videos (B, T, 3, H, W) -> scaled latents (B, C, T, H/f, W/f), each frame encoded on its own.

        ``sample=False`` uses the posterior mean (deterministic, for the validation loss).
        """
        b, t = videos.shape[:2]
        pixels = videos.to(self.device, torch.float32).flatten(0, 1) / 127.5 - 1.0  # ((b t), 3, H, W) in [-1, 1]
        posterior = self.vae.encode(pixels).latent_dist
        latents = posterior.sample() if sample else posterior.mode()
        latents = latents * self.vae.config.scaling_factor
        return latents.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)

    def _target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        raise ValueError(f"Unsupported prediction_type '{kind}' (use 'epsilon' or 'v_prediction').")

    def diffusion_loss(self, latents: torch.Tensor, text: torch.Tensor, noise: torch.Tensor,
                       timesteps: torch.Tensor) -> torch.Tensor:
        """Per-sample MSE (B,) between the UNet's prediction on noised ``latents`` and the ε (or v) target."""
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        pred = self.unet(noisy, timesteps, encoder_hidden_states=text, return_dict=False)[0]
        # float32 loss even under fp16 autocast: small MSE values lose precision in half.
        err = F.mse_loss(pred.float(), self._target(latents, noise, timesteps).float(), reduction="none")
        return err.flatten(1).mean(1)

    # --------------------------------------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[dict]):
        """Training: ``{"loss_diffusion"}``; evaluation: one prediction dict per input (module docstring)."""
        if self.training:
            return self._forward_train(batched_inputs)
        return self._forward_eval(batched_inputs)

    def _forward_train(self, batched_inputs: List[dict]) -> Dict[str, torch.Tensor]:
        videos = torch.stack([x["video"] for x in batched_inputs])
        captions = [x["caption"] for x in batched_inputs]
        if self.caption_dropout > 0:
            drop = torch.rand(len(captions)) < self.caption_dropout
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        latents = self.encode_videos(videos, sample=self.sample_posterior)
        text = self.encode_prompts(captions)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device)
        return {"loss_diffusion": self.diffusion_loss(latents, text, noise, timesteps).mean()}

    @torch.no_grad()
    def validation_loss(self, video: torch.Tensor, caption: str, key) -> float:
        """Deterministic loss of one clip: posterior mean, fixed noise per timestep, evenly spaced timesteps."""
        latents = self.encode_videos(video[None], sample=False)
        text = self.encode_prompts([caption])
        n_steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.linspace(0, n_steps - 1, self.val_loss_timesteps).round().long().to(self.device)
        generator = torch.Generator().manual_seed(_stable_seed(self.seed, key))
        noise = torch.randn((len(timesteps),) + latents.shape[1:], generator=generator).to(self.device)
        k = len(timesteps)
        losses = self.diffusion_loss(latents.expand(k, *latents.shape[1:]), text.expand(k, *text.shape[1:]), noise,
                                     timesteps)
        return float(losses.mean())

    def _forward_eval(self, batched_inputs: List[dict]) -> List[dict]:
        outputs = []
        for i, x in enumerate(batched_inputs):
            key = x.get("video_id") if x.get("video_id") is not None else i
            out = {"caption": x["caption"], "val_loss": self.validation_loss(x["video"], x["caption"], key)}
            if self.generate_in_eval:
                num_frames, _, height, width = x["video"].shape
                generator = torch.Generator().manual_seed(_stable_seed(self.seed, key))
                frames = self.generate([x["caption"]], num_frames=num_frames, height=height, width=width,
                                       generator=generator)[0]
                out["video"] = (frames * 255).round().to(torch.uint8).cpu()
            outputs.append(out)
        return outputs

    # -------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, num_frames: int = 16, height: Optional[int] = None,
                 width: Optional[int] = None, num_inference_steps: Optional[int] = None,
                 guidance_scale: Optional[float] = None, eta: Optional[float] = None, negative_prompt: str = "",
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Sample videos for ``prompts`` with DDIM + classifier-free guidance.

        Returns float (B, T, 3, H, W) in [0, 1] on the model's device. The computation mirrors diffusers'
        ``TextToVideoSDPipeline`` step for step (same noise draw from ``generator``, same unconditional prompt, same
        per-frame scheduler step and VAE decode), so the same weights and seed give the same video in both.
        """
        steps = num_inference_steps or self.num_inference_steps
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        eta = self.eta if eta is None else eta
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        scheduler = make_sampling_scheduler(self.sampling_config)
        scheduler.set_timesteps(steps, device=self.device)

        text = self.encode_prompts(prompts)
        use_cfg = scale > 1.0
        if use_cfg:
            text = torch.cat([self.encode_prompts([negative_prompt] * len(prompts)), text])
        shape = (len(prompts), self.unet.config.in_channels, num_frames, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        latents = torch.randn(shape, generator=generator, device=generator.device if generator else None,
                              dtype=text.dtype).to(self.device)
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(torch.cat([latents] * 2) if use_cfg else latents, t)
            pred = self.unet(model_in, t, encoder_hidden_states=text, return_dict=False)[0]
            if use_cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + scale * (cond - uncond)
            # The scheduler steps frames as a batch of images ((b f) c h w), as the diffusers pipeline does; the
            # layout matters for the eta > 0 noise draw.
            b, c, f, h, w = latents.shape
            step = scheduler.step(pred.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), t,
                                  latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), eta=eta, generator=generator)
            latents = step.prev_sample.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        return self.decode_latents(latents)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, T, h, w) -> float video (B, T, 3, H, W) in [0, 1], decoded frame by frame."""
        b, _, f = latents.shape[:3]
        frames = latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / self.vae.config.scaling_factor
        images = self.vae.decode(frames).sample.float()
        return (images / 2 + 0.5).clamp(0, 1).unflatten(0, (b, f))

    # ------------------------------------------------------------------------------------------ diffusers I/O
    def to_pipeline(self):
        """A diffusers ``TextToVideoSDPipeline`` sharing this model's modules, with the DDIM sampling scheduler."""
        from diffusers import TextToVideoSDPipeline

        return TextToVideoSDPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                     unet=self.unet, scheduler=make_sampling_scheduler(self.sampling_config))

    def save_pretrained(self, save_directory: str, *, unet_state_dict: Optional[Dict[str, torch.Tensor]] = None) -> str:
        """Write a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).

        ``unet_state_dict`` (e.g. EMA weights, keys relative to the UNet) replaces the UNet's weights in the written
        copy only; the live weights are restored afterwards. The folder loads with
        ``TextToVideoSDPipeline.from_pretrained(save_directory)`` or ``DiffusionPipeline.from_pretrained``, and as
        ``MODEL.T2V.PRETRAINED_DIR``. Written to a temporary sibling and renamed, so readers never see half a folder.
        """
        save_directory = os.path.abspath(os.path.expanduser(save_directory))
        parent = os.path.dirname(save_directory)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".diffusers_", dir=parent)
        live = None
        try:
            if unet_state_dict is not None:
                live = {k: v.detach().clone() for k, v in self.unet.state_dict().items()}
                self.unet.load_state_dict(unet_state_dict)
            self.to_pipeline().save_pretrained(staging, safe_serialization=True)
        finally:
            if live is not None:
                self.unet.load_state_dict(live)
        if os.path.isdir(save_directory):
            shutil.rmtree(save_directory)
        os.rename(staging, save_directory)
        logger.info("Saved diffusers text-to-video pipeline to %s", save_directory)
        return save_directory
