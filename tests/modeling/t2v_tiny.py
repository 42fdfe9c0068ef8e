"""Tiny text-to-video configs and models for tests (REFERENCE.md's tiny UNet3D; builds in well under a second)."""

import torch

from sgg.config import get_cfg
from sgg.modeling import build_model


def tiny_t2v_cfg(**overrides):
    """A config for a ~40k-parameter TextToVideoDiffusion on 16x16 frames, 4 frames, 3 DDIM steps."""
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "TextToVideoDiffusion"
    cfg.MODEL.DEVICE = "cpu"
    t2v = cfg.MODEL.T2V
    t2v.UNET.BLOCK_OUT_CHANNELS = (4, 8)
    t2v.UNET.LAYERS_PER_BLOCK = 1
    t2v.UNET.DOWN_BLOCK_TYPES = ("CrossAttnDownBlock3D", "DownBlock3D")
    t2v.UNET.UP_BLOCK_TYPES = ("UpBlock3D", "CrossAttnUpBlock3D")
    t2v.UNET.ATTENTION_HEAD_DIM = 4
    t2v.UNET.NORM_NUM_GROUPS = 2
    t2v.VAE.BLOCK_OUT_CHANNELS = (4, 8)
    t2v.VAE.LAYERS_PER_BLOCK = 1
    t2v.VAE.NORM_NUM_GROUPS = 2
    t2v.TEXT.HIDDEN_SIZE = 4
    t2v.TEXT.NUM_LAYERS = 1
    t2v.TEXT.NUM_HEADS = 1
    t2v.TEXT.INTERMEDIATE_SIZE = 8
    t2v.TEXT.MAX_LENGTH = 16
    cfg.INPUT.T2V.SIZE = (16, 16)
    cfg.INPUT.T2V.NUM_FRAMES = 4
    cfg.TEST.T2V.NUM_INFERENCE_STEPS = 3
    cfg.TEST.T2V.VAL_LOSS_TIMESTEPS = 3
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def tiny_t2v_model(seed=0, **overrides):
    """``build_model(tiny_t2v_cfg(**overrides))`` with the global RNG seeded first (same weights for the same seed)."""
    torch.manual_seed(seed)
    return build_model(tiny_t2v_cfg(**overrides))


def tiny_batch(n=2, frames=4, size=16, seed=0):
    """Batched inputs as the mapper makes them: random uint8 clips with captions."""
    g = torch.Generator().manual_seed(seed)
    captions = ["Pushing red ball from left to right", "Moving blue box up", "Green cup falling like a rock"]
    return [{"video": torch.randint(0, 256, (frames, 3, size, size), generator=g, dtype=torch.uint8),
             "caption": captions[i % len(captions)], "video_id": str(i + 1)} for i in range(n)]
