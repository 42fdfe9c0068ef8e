"""ModelScope-style text-to-video latent diffusion (seed 004) on diffusers parts.

``TextToVideoDiffusion`` = frozen ``AutoencoderKL`` (per-frame latents) + frozen CLIP text encoder + trainable
``UNet3DConditionModel`` trained with DDPM ε-prediction (or v-prediction) MSE, sampled with DDIM and
classifier-free guidance exactly as diffusers' ``TextToVideoSDPipeline`` does, so a folder written by
:meth:`TextToVideoDiffusion.save_pretrained` reproduces this model's samples in a plain diffusers pipeline.

Parts come from a local diffusers folder (``MODEL.T2V.PRETRAINED_DIR``: ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) or are built at random from ``MODEL.T2V.*`` (the demo: a tiny model and an offline
word-level CLIP tokenizer). Nothing is downloaded.

Batched inputs (from ``sgg.data.t2v_mapper.TextToVideoMapper``): dicts with ``video`` uint8 (T, 3, H, W) and
``caption`` str. Training returns ``{"loss_diffusion": scalar}``; evaluation returns per input
``{"caption", "val_loss" (float), "video" (uint8 (T, 3, H, W), generated, when TEST.T2V.GENERATE)}``.
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sgg.config import configurable
from sgg.modeling.build import META_ARCH_REGISTRY

__all__ = [
    "TextToVideoDiffusion", "build_offline_clip_tokenizer", "enable_unet_gradient_checkpointing",
    "load_diffusers_parts", "build_parts_from_config", "make_sampling_scheduler", "sampling_scheduler_config",
    "PIPELINE_SUBFOLDERS",
]

logger = logging.getLogger(__name__)

PIPELINE_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

# Words that get a single token in the offline tokenizer (other words fall back to byte-level pieces, which still
# works, only with longer sequences). The SSv2 demo's vocabulary plus frequent words of SSv2 templates.
OFFLINE_TOKENIZER_WORDS = (
    "a an the something someone it its of on onto into in out from to with without by next behind under over up down "
    "left right away towards closer across through off so that until falls falling like rock feather slightly "
    "pushing pulling moving putting taking picking holding lifting dropping throwing turning tilting opening closing "
    "showing covering uncovering squeezing folding tearing twisting spinning rolling sliding poking touching "
    "approaching camera table surface nothing happens hand red green blue yellow ball box cup block bottle book pen "
    "phone paper"
).split()


# ----------------------------------------------------------------------------------------------------- tokenizer
def _byte_to_unicode() -> Dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: every byte maps to a printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def _learn_bpe_merges(words: Iterable[str]) -> List[tuple]:
    """Classic BPE learning on a word list until every word is a single symbol.

    Each step merges the most frequent adjacent pair (ties: lexicographically smallest), so applying the merges in
    order — what the BPE tokenizer does — reproduces one token per listed word.
    """
    byte_map = _byte_to_unicode()
    words = [[byte_map[b] for b in w.encode("utf-8")] for w in words]
    words = [w[:-1] + [w[-1] + "</w>"] for w in words if w]
    merges = []
    while True:
        counts: Dict[tuple, int] = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        for i, w in enumerate(words):
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out


def build_offline_clip_tokenizer(words: Iterable[str] = OFFLINE_TOKENIZER_WORDS, *, max_length: int = 77):
    """A real ``CLIPTokenizer`` built without files: byte-level alphabet + BPE merges learned on ``words``.

    Each listed word becomes one token (``"pushing</w>"``); any other text still tokenizes into byte-level pieces.
    ``save_pretrained`` writes it in the standard format, so diffusers pipelines load it like any CLIP tokenizer.
    """
    from transformers import CLIPTokenizer

    alphabet = list(_byte_to_unicode().values())
    vocab: Dict[str, int] = {}
    for symbol in alphabet + [c + "</w>" for c in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges = _learn_bpe_merges(dict.fromkeys(w.lower() for w in words))
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


# ------------------------------------------------------------------------------------- gradient checkpointing
class _CheckpointedBlock:
    """Mixin placed before a UNet block's class: recompute the block in backward instead of storing activations."""

    def forward(self, *args, **kwargs):
        if getattr(self, "gradient_checkpointing", False) and self.training and torch.is_grad_enabled():
            # Non-reentrant checkpointing accepts keyword arguments and nested tuple outputs (the down blocks return
            # (hidden_states, (res_1, res_2, ...))), and works when inputs do not require grad.
            return checkpoint(super().forward, *args, use_reentrant=False, **kwargs)
        return super().forward(*args, **kwargs)


_CHECKPOINTED_CLASSES: Dict[type, type] = {}


def _checkpointed_class(cls: type) -> type:
    if issubclass(cls, _CheckpointedBlock):
        return cls
    if cls not in _CHECKPOINTED_CLASSES:
        _CHECKPOINTED_CLASSES[cls] = type(f"Checkpointed{cls.__name__}", (_CheckpointedBlock, cls), {})
    return _CHECKPOINTED_CLASSES[cls]


def enable_unet_gradient_checkpointing(unet: nn.Module, enabled: bool = True) -> int:
    """Turn gradient checkpointing of a ``UNet3DConditionModel``'s down, mid and up blocks on or off.

    diffusers' 3D UNet has none (``_supports_gradient_checkpointing = False``). Each block's class is swapped for a
    subclass whose ``forward`` runs under ``torch.utils.checkpoint`` (non-reentrant) while training with grad enabled;
    parameters, state-dict keys and ``save_pretrained`` output are unchanged, and ``copy.deepcopy`` keeps the
    behaviour. Returns the number of blocks affected.
    """
    blocks = list(unet.down_blocks) + list(unet.up_blocks)
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(unet.mid_block)
    for block in blocks:
        if enabled:
            block.__class__ = _checkpointed_class(type(block))
        block.gradient_checkpointing = enabled
    return len(blocks)


# ------------------------------------------------------------------------------------------------------ parts
def _missing_parts_message(folder: str, missing: Sequence[str]) -> str:
    return (
        f"MODEL.T2V.PRETRAINED_DIR '{folder}' is not a complete diffusers text-to-video folder: missing "
        f"{', '.join(repr(m) for m in missing)}. Expected {', '.join(PIPELINE_SUBFOLDERS)} subfolders (as written by "
        "`pipe.save_pretrained(dir)`, or `huggingface-cli download ali-vilab/text-to-video-ms-1.7b --local-dir dir` "
        "on a machine with internet; for configs/quick/t2v_demo.yaml: `python -m sgg.data.demo.ssv2_demo "
        "--base-pipeline DIR`). sgg never downloads weights; set the key to a local folder or to '' to train from "
        "scratch."
    )


def load_diffusers_parts(folder: str) -> dict:
    """Load unet, vae, text_encoder, tokenizer and the training ``DDPMScheduler`` from a local diffusers folder.

    Raises ``FileNotFoundError`` naming the folder and the missing subfolders.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(_missing_parts_message(folder, ["the folder itself"]))
    missing = [p for p in PIPELINE_SUBFOLDERS if not os.path.isdir(os.path.join(folder, p))]
    if missing:
        raise FileNotFoundError(_missing_parts_message(folder, missing))
    parts = {
        "unet": UNet3DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True),
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True),
        "text_encoder": CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), local_files_only=True),
        "tokenizer": CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"), local_files_only=True),
        # The folder's schedule (betas, prediction type) wins over MODEL.T2V.SCHEDULER: a pretrained UNet only
        # denoises correctly under the schedule it was trained with.
        "noise_scheduler": DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True),
        # Sampling keeps the folder's own scheduler settings (steps_offset, set_alpha_to_one, ...).
        "sampling_config": dict(DDIMScheduler.load_config(folder, subfolder="scheduler", local_files_only=True)),
    }
    logger.info("Loaded text-to-video parts from %s", folder)
    return parts


def build_parts_from_config(cfg) -> dict:
    """Random-initialised parts described by ``MODEL.T2V.*`` (offline tokenizer unless TEXT.TOKENIZER_DIR is set)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    t2v = cfg.MODEL.T2V
    if t2v.TEXT.TOKENIZER_DIR:
        path = os.path.expanduser(t2v.TEXT.TOKENIZER_DIR)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"MODEL.T2V.TEXT.TOKENIZER_DIR '{path}' does not exist; give a local CLIPTokenizer "
                                    "folder (vocab.json + merges.txt or tokenizer.json) or '' for the offline one.")
        tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
    else:
        tokenizer = build_offline_clip_tokenizer(max_length=t2v.TEXT.MAX_LENGTH)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=t2v.TEXT.HIDDEN_SIZE, intermediate_size=t2v.TEXT.INTERMEDIATE_SIZE,
        num_hidden_layers=t2v.TEXT.NUM_LAYERS, num_attention_heads=t2v.TEXT.NUM_HEADS,
        max_position_embeddings=t2v.TEXT.MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    num_vae_blocks = len(t2v.VAE.BLOCK_OUT_CHANNELS)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * num_vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_vae_blocks, block_out_channels=tuple(t2v.VAE.BLOCK_OUT_CHANNELS),
        layers_per_block=t2v.VAE.LAYERS_PER_BLOCK, latent_channels=t2v.VAE.LATENT_CHANNELS,
        norm_num_groups=t2v.VAE.NORM_NUM_GROUPS, sample_size=int(cfg.INPUT.T2V.SIZE[0]),
        scaling_factor=t2v.VAE.SCALING_FACTOR,
    )
    vae_scale = 2 ** (num_vae_blocks - 1)
    unet = UNet3DConditionModel(
        sample_size=int(cfg.INPUT.T2V.SIZE[0]) // vae_scale, in_channels=t2v.VAE.LATENT_CHANNELS,
        out_channels=t2v.VAE.LATENT_CHANNELS, down_block_types=tuple(t2v.UNET.DOWN_BLOCK_TYPES),
        up_block_types=tuple(t2v.UNET.UP_BLOCK_TYPES), block_out_channels=tuple(t2v.UNET.BLOCK_OUT_CHANNELS),
        layers_per_block=t2v.UNET.LAYERS_PER_BLOCK, norm_num_groups=t2v.UNET.NORM_NUM_GROUPS,
        cross_attention_dim=t2v.TEXT.HIDDEN_SIZE, attention_head_dim=t2v.UNET.ATTENTION_HEAD_DIM,
    )
    s = t2v.SCHEDULER
    # clip_sample=False: latents are not confined to [-1, 1] the way pixels are.
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=s.NUM_TRAIN_TIMESTEPS, beta_start=s.BETA_START, beta_end=s.BETA_END,
        beta_schedule=s.BETA_SCHEDULE, prediction_type=s.PREDICTION_TYPE, clip_sample=False,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "noise_scheduler": noise_scheduler, "sampling_config": sampling_scheduler_config(noise_scheduler)}


def sampling_scheduler_config(noise_scheduler) -> dict:
    """DDIM settings for a training schedule built from config: same betas / prediction type, Stable Diffusion's
    (and ModelScope's) sampling conventions ``steps_offset=1``, ``set_alpha_to_one=False``, no clipping."""
    return {**dict(noise_scheduler.config), "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}


def make_sampling_scheduler(config: dict):
    """A fresh ``DDIMScheduler`` from a scheduler config dict (a pretrained folder's own, or
    :func:`sampling_scheduler_config`)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config)


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
            gradient_checkpointing: see :func:`enable_unet_gradient_checkpointing`.
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

    @staticmethod
    def training_hooks(cfg) -> list:
        """Extra engine hooks: with ``MODEL.T2V.EXPORT_DIFFUSERS``, also write ``OUTPUT_DIR/diffusers/`` (EMA UNet
        weights when ``MODEL.EMA`` is on) at every checkpoint and at the end, loadable by a plain diffusers pipeline."""
        if not cfg.MODEL.T2V.EXPORT_DIFFUSERS:
            return []
        from sgg.engine.ema import DiffusersExportHook

        return [DiffusersExportHook(cfg)]

    def save_pretrained(self, save_directory: str, *, unet_state_dict: Optional[Dict[str, torch.Tensor]] = None) -> str:
        """Write a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).

        ``unet_state_dict`` (e.g. EMA weights, keys relative to the UNet) replaces the UNet's weights in the written
        copy only; the live weights are restored afterwards. The folder loads with
        ``TextToVideoSDPipeline.from_pretrained(save_directory)`` or ``DiffusionPipeline.from_pretrained``, and as
        ``MODEL.T2V.PRETRAINED_DIR``. Written to a temporary sibling and renamed, so readers never see half a folder.
        """
        import shutil
        import tempfile

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
