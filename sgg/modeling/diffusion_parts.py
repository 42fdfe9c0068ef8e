"""Parts of a diffusers text-to-video model, built or loaded without any download.

* :func:`build_offline_clip_tokenizer`: a real ``CLIPTokenizer`` whose BPE merges are learned on a word list, so the
  demo needs no tokenizer files.
* :func:`enable_unet_gradient_checkpointing`: gradient checkpointing for diffusers' ``UNet3DConditionModel``, which
  has none of its own.
* :func:`load_diffusers_parts` / :func:`build_parts_from_config`: unet, vae, text encoder, tokenizer, training
  ``DDPMScheduler`` and the DDIM sampling config, from a local diffusers folder or at random from ``MODEL.T2V.*``.
* :func:`build_noise_scheduler`: the DDPM training schedule of ``MODEL.T2V.SCHEDULER``;
  :func:`sampling_scheduler_config` / :func:`make_sampling_scheduler`: the DDIM sampler matching a training schedule.

Used by :class:`sgg.modeling.meta_arch.text_to_video.TextToVideoDiffusion` and the tools that build or load its
folders. diffusers and transformers (the ``diffusion`` extra) are imported only when a part is built.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Iterable, List, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "PIPELINE_SUBFOLDERS", "OFFLINE_TOKENIZER_WORDS", "build_offline_clip_tokenizer",
    "enable_unet_gradient_checkpointing", "load_diffusers_parts", "build_parts_from_config", "build_noise_scheduler",
    "sampling_scheduler_config", "make_sampling_scheduler",
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
        "on a machine with internet; for configs/quick/t2v_demo.yaml: `python tools/make_t2v_base_pipeline.py "
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


def _build_tokenizer(text_cfg):
    if not text_cfg.TOKENIZER_DIR:
        return build_offline_clip_tokenizer(max_length=text_cfg.MAX_LENGTH)
    from transformers import CLIPTokenizer

    path = os.path.expanduser(text_cfg.TOKENIZER_DIR)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MODEL.T2V.TEXT.TOKENIZER_DIR '{path}' does not exist; give a local CLIPTokenizer "
                                "folder (vocab.json + merges.txt or tokenizer.json) or '' for the offline one.")
    return CLIPTokenizer.from_pretrained(path, local_files_only=True)


def _build_text_encoder(text_cfg, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_cfg.HIDDEN_SIZE, intermediate_size=text_cfg.INTERMEDIATE_SIZE,
        num_hidden_layers=text_cfg.NUM_LAYERS, num_attention_heads=text_cfg.NUM_HEADS,
        max_position_embeddings=text_cfg.MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def _build_vae(vae_cfg, image_size: int):
    from diffusers import AutoencoderKL

    num_blocks = len(vae_cfg.BLOCK_OUT_CHANNELS)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * num_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_blocks, block_out_channels=tuple(vae_cfg.BLOCK_OUT_CHANNELS),
        layers_per_block=vae_cfg.LAYERS_PER_BLOCK, latent_channels=vae_cfg.LATENT_CHANNELS,
        norm_num_groups=vae_cfg.NORM_NUM_GROUPS, sample_size=image_size, scaling_factor=vae_cfg.SCALING_FACTOR,
    )


def _build_unet(t2v_cfg, latent_size: int):
    from diffusers import UNet3DConditionModel

    unet_cfg = t2v_cfg.UNET
    return UNet3DConditionModel(
        sample_size=latent_size, in_channels=t2v_cfg.VAE.LATENT_CHANNELS, out_channels=t2v_cfg.VAE.LATENT_CHANNELS,
        down_block_types=tuple(unet_cfg.DOWN_BLOCK_TYPES), up_block_types=tuple(unet_cfg.UP_BLOCK_TYPES),
        block_out_channels=tuple(unet_cfg.BLOCK_OUT_CHANNELS), layers_per_block=unet_cfg.LAYERS_PER_BLOCK,
        norm_num_groups=unet_cfg.NORM_NUM_GROUPS, cross_attention_dim=t2v_cfg.TEXT.HIDDEN_SIZE,
        attention_head_dim=unet_cfg.ATTENTION_HEAD_DIM,
    )


def build_noise_scheduler(scheduler_cfg):
    """The training ``DDPMScheduler`` described by ``MODEL.T2V.SCHEDULER``."""
    from diffusers import DDPMScheduler

    # clip_sample=False: latents are not confined to [-1, 1] the way pixels are.
    return DDPMScheduler(
        num_train_timesteps=scheduler_cfg.NUM_TRAIN_TIMESTEPS, beta_start=scheduler_cfg.BETA_START,
        beta_end=scheduler_cfg.BETA_END, beta_schedule=scheduler_cfg.BETA_SCHEDULE,
        prediction_type=scheduler_cfg.PREDICTION_TYPE, clip_sample=False,
    )


def build_parts_from_config(cfg) -> dict:
    """Random-initialised parts described by ``MODEL.T2V.*`` (offline tokenizer unless TEXT.TOKENIZER_DIR is set).

    Parts are created in a fixed order (tokenizer, text encoder, VAE, UNet), so a seeded RNG gives the same weights.
    """
    t2v = cfg.MODEL.T2V
    image_size = int(cfg.INPUT.T2V.SIZE[0])
    tokenizer = _build_tokenizer(t2v.TEXT)
    text_encoder = _build_text_encoder(t2v.TEXT, tokenizer)
    vae = _build_vae(t2v.VAE, image_size)
    unet = _build_unet(t2v, image_size // 2 ** (len(t2v.VAE.BLOCK_OUT_CHANNELS) - 1))
    noise_scheduler = build_noise_scheduler(t2v.SCHEDULER)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "noise_scheduler": noise_scheduler, "sampling_config": sampling_scheduler_config(noise_scheduler)}


# -------------------------------------------------------------------------------------------------- sampling
def sampling_scheduler_config(noise_scheduler) -> dict:
    """DDIM settings for a training schedule built from config: same betas / prediction type, Stable Diffusion's
    (and ModelScope's) sampling conventions ``steps_offset=1``, ``set_alpha_to_one=False``, no clipping."""
    # Private keys go: diffusers' "_use_default_values" lists keys the DDPM config never set (steps_offset among them)
    # and from_config would reset those to DDIM's defaults, silently undoing steps_offset=1.
    config = {k: v for k, v in dict(noise_scheduler.config).items() if not k.startswith("_")}
    return {**config, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}


def make_sampling_scheduler(config: dict):
    """A fresh ``DDIMScheduler`` from a scheduler config dict (a pretrained folder's own, or
    :func:`sampling_scheduler_config`); every key the dict sets is honoured (see :func:`sampling_scheduler_config`)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config({k: v for k, v in config.items() if k != "_use_default_values"})
