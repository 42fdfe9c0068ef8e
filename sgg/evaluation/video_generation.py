"""Video-generation metrics: validation loss, frame-to-frame SSIM, and FVD / CLIP score from local weights.

``VideoGenerationEvaluator`` (registered as ``video_generation``) consumes the text-to-video model's eval outputs
(``val_loss``, optionally a generated ``video`` uint8 (T, 3, H, W)) and the inputs (the real clip, its caption) and
reports, under the task ``video_generation``:

* ``val_loss`` — the model's deterministic diffusion loss on validation clips (lower is better);
* ``ssim_f2f`` / ``ssim_f2f_real`` — mean SSIM between consecutive frames of generated / real clips (temporal
  consistency; Wang et al. 2004 with an 11x11 Gaussian window, sigma 1.5, per RGB channel, on 0-255 values, averaged
  over the "valid" window positions — the same numbers as scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``);
* ``fvd`` — Fréchet distance between I3D features of real and generated clips, only with
  ``TEST.T2V.FVD_I3D_PATH`` = a local TorchScript I3D (StyleGAN-V's ``i3d_torchscript.pt``; clips resized to 224x224,
  values in [-1, 1], called with ``rescale=False, resize=False, return_features=True``);
* ``clip_score`` — 100 x max(cos(image, text), 0) averaged over frames and clips (torchmetrics' convention), only with
  ``TEST.T2V.CLIP_MODEL_DIR`` = a local transformers CLIP folder.

Without those paths the metric is skipped with one log line saying how to enable it; nothing is downloaded. The
first ``TEST.T2V.NUM_SAMPLES_TO_SAVE`` generated clips are written to ``<output_dir>/samples/`` as GIF + PNG contact
sheet.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sgg.utils import comm
from sgg.utils.visualizer import save_contact_sheet

from .build import EVALUATOR_REGISTRY
from .evaluator import DatasetEvaluator

__all__ = ["VideoGenerationEvaluator", "ssim", "frame_to_frame_ssim", "frechet_distance", "I3DFeatureExtractor",
           "ClipScorer", "save_video_gif"]

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ------------------------------------------------------------------------------------------------------ SSIM
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 255.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """SSIM of image pairs ``a``, ``b`` (N, C, H, W) with values in [0, data_range]; returns (N,).

    Gaussian-weighted local statistics over "valid" window positions, averaged over channels and positions. Frames
    smaller than the window use the largest odd window that fits.
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"ssim expects two (N, C, H, W) tensors of equal shape, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}.")
    window = min(window, *(s if s % 2 else s - 1 for s in a.shape[-2:]))
    kernel = _gaussian_window(window, sigma).to(torch.float64)
    channels = a.shape[1]
    kernel = kernel.expand(channels, 1, window, window).contiguous()
    a, b = a.to(torch.float64), b.to(torch.float64)

    def blur(x):
        return F.conv2d(x, kernel, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1).float()


def frame_to_frame_ssim(video: torch.Tensor) -> float:
    """Mean SSIM between consecutive frames of a uint8 / 0-255 video (T, 3, H, W); 1.0 for a still clip."""
    if video.shape[0] < 2:
        raise ValueError("frame_to_frame_ssim needs at least two frames.")
    frames = video.float()
    return float(ssim(frames[:-1], frames[1:]).mean())


# ------------------------------------------------------------------------------------------------------ FVD
def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D): |mu_a - mu_b|^2 + Tr(S_a + S_b - 2
    (S_a S_b)^(1/2)), with covariances normalised by N - 1 (as in the FID / FVD reference code)."""
    from scipy import linalg

    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if feats_a.shape[0] < 2 or feats_b.shape[0] < 2:
        raise ValueError("frechet_distance needs at least two samples per set.")
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    cov_a, cov_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
    covmean = linalg.sqrtm(cov_a.dot(cov_b))
    if not np.isfinite(covmean).all():  # singular product: regularise as the reference implementations do
        offset = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset).dot(cov_b + offset))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


class I3DFeatureExtractor:
    """I3D features of videos from a local TorchScript file (StyleGAN-V's ``i3d_torchscript.pt`` convention)."""

    def __init__(self, path: str, device: str = "cpu"):
        """``path``: local ``.pt`` file. Raises ``FileNotFoundError`` naming the key and what to provide."""
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"TEST.T2V.FVD_I3D_PATH '{path}' does not exist. FVD needs the TorchScript I3D detector "
                "(i3d_torchscript.pt from the StyleGAN-V / fvd-comparison projects) copied to a local path; sgg "
                "never downloads it. Set TEST.T2V.FVD_I3D_PATH '' to skip FVD."
            )
        self.device = torch.device(device)
        self.model = torch.jit.load(path, map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, video: torch.Tensor) -> np.ndarray:
        """uint8 video (T, 3, H, W) -> feature vector (D,)."""
        x = video.float().to(self.device) / 127.5 - 1.0
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        x = x.permute(1, 0, 2, 3)[None]  # (1, 3, T, 224, 224)
        feats = self.model(x, rescale=False, resize=False, return_features=True)
        return feats.reshape(-1).float().cpu().numpy()


class ClipScorer:
    """CLIP score of (video, caption) pairs from a local transformers CLIP folder."""

    def __init__(self, model_dir: str, device: str = "cpu"):
        """``model_dir``: folder with config.json + weights + tokenizer files. Raises naming the key if absent."""
        from transformers import CLIPModel, CLIPTokenizer

        model_dir = os.path.expanduser(model_dir)
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise FileNotFoundError(
                f"TEST.T2V.CLIP_MODEL_DIR '{model_dir}' is not a local CLIP model folder (no config.json). Save one "
                "with `CLIPModel.from_pretrained('openai/clip-vit-base-patch32').save_pretrained(dir)` and the "
                "tokenizer likewise on a machine with internet; sgg never downloads it. Set the key to '' to skip."
            )
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval().to(self.device)
        self.tokenizer = CLIPTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.image_size = int(self.model.config.vision_config.image_size)

    def _preprocess(self, video: torch.Tensor) -> torch.Tensor:
        x = video.float().to(self.device) / 255.0
        height, width = x.shape[-2:]
        scale = self.image_size / min(height, width)
        size = (max(self.image_size, round(height * scale)), max(self.image_size, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        top = (x.shape[-2] - self.image_size) // 2
        left = (x.shape[-1] - self.image_size) // 2
        x = x[..., top:top + self.image_size, left:left + self.image_size]
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, caption: str) -> float:
        """Score of a uint8 video (T, 3, H, W) against ``caption``: frames' mean of 100 * max(cos, 0)."""
        tokens = self.tokenizer([caption], padding=True, truncation=True, return_tensors="pt").to(self.device)
        text = self.model.get_text_features(**tokens)
        image = self.model.get_image_features(pixel_values=self._preprocess(video))
        text = getattr(text, "pooler_output", text)
        image = getattr(image, "pooler_output", image)
        cos = F.cosine_similarity(image, text.expand_as(image), dim=-1)
        return float((100.0 * cos.clamp(min=0)).mean())


# -------------------------------------------------------------------------------------------------- samples
def save_video_gif(path: str, video: torch.Tensor, fps: float = 8.0) -> str:
    """Write a uint8 video (T, 3, H, W) as an animated GIF; returns ``path``."""
    from PIL import Image

    frames = [Image.fromarray(f.permute(1, 2, 0).cpu().numpy()) for f in video]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path


# ------------------------------------------------------------------------------------------------ evaluator
@EVALUATOR_REGISTRY.register("video_generation")
class VideoGenerationEvaluator(DatasetEvaluator):
    """Text-to-video metrics (module docstring). Built as ``cls(cfg, dataset_name, output_dir)``."""

    def __init__(self, cfg, dataset_name: str, output_dir: Optional[str] = None):
        self.dataset_name, self.output_dir = dataset_name, output_dir
        self.num_samples_to_save = int(cfg.TEST.T2V.NUM_SAMPLES_TO_SAVE)
        self.fps = float(cfg.INPUT.T2V.FPS)
        device = "cuda" if torch.cuda.is_available() and str(cfg.MODEL.DEVICE).startswith(("cuda", "auto")) else "cpu"
        self.i3d = I3DFeatureExtractor(cfg.TEST.T2V.FVD_I3D_PATH, device) if cfg.TEST.T2V.FVD_I3D_PATH else None
        self.clip = ClipScorer(cfg.TEST.T2V.CLIP_MODEL_DIR, device) if cfg.TEST.T2V.CLIP_MODEL_DIR else None
        if self.i3d is None:
            logger.info("FVD not computed: TEST.T2V.FVD_I3D_PATH is empty (point it at a local i3d_torchscript.pt).")
        if self.clip is None:
            logger.info("CLIP score not computed: TEST.T2V.CLIP_MODEL_DIR is empty (point it at a local CLIP folder).")
        self.reset()

    def reset(self) -> None:
        self._records: List[Dict] = []
        self._saved = 0

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            record = {"val_loss": float(out["val_loss"])}
            real = inp.get("video")
            if real is not None and real.shape[0] > 1:
                record["ssim_f2f_real"] = frame_to_frame_ssim(real)
            fake = out.get("video")
            if fake is not None:
                record["ssim_f2f"] = frame_to_frame_ssim(fake) if fake.shape[0] > 1 else float("nan")
                if self.clip is not None:
                    record["clip_score"] = self.clip(fake, inp["caption"])
                if self.i3d is not None:
                    record["i3d_fake"] = self.i3d(fake)
                    record["i3d_real"] = self.i3d(real)
                self._maybe_save_sample(inp, fake)
            self._records.append(record)

    def _maybe_save_sample(self, inp: dict, fake: torch.Tensor) -> None:
        if self.output_dir is None or self._saved >= self.num_samples_to_save or not comm.is_main_process():
            return
        folder = os.path.join(self.output_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        stem = os.path.join(folder, f"{self._saved:02d}_{inp.get('video_id', self._saved)}")
        save_video_gif(stem + ".gif", fake, self.fps)
        frames = list(fake)
        caption = inp["caption"]
        captions = [caption if len(caption) <= 20 else caption[:19] + "~"] + [f"t={i}" for i in range(1, len(frames))]
        save_contact_sheet(stem + ".png", frames, captions, columns=min(8, len(frames)))
        self._saved += 1

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        records = [r for part in comm.gather(self._records) for r in part]
        if not comm.is_main_process():
            return {}
        if not records:
            logger.warning("VideoGenerationEvaluator on %s received no predictions.", self.dataset_name)
            return {}
        metrics: Dict[str, float] = {}
        for key in ("val_loss", "ssim_f2f", "ssim_f2f_real", "clip_score"):
            values = [r[key] for r in records if key in r and math.isfinite(r[key])]
            if values:
                metrics[key] = float(np.mean(values))
        fakes = [r["i3d_fake"] for r in records if "i3d_fake" in r]
        if len(fakes) >= 2:
            reals = np.stack([r["i3d_real"] for r in records if "i3d_real" in r])
            metrics["fvd"] = frechet_distance(reals, np.stack(fakes))
            if len(fakes) < 256:
                logger.warning("FVD from only %d clips per set is strongly biased; the community reports it on "
                               "2048 (or at least 256) clips.", len(fakes))
        elif self.i3d is not None:
            logger.warning("FVD needs at least two generated clips (got %d); not reported.", len(fakes))
        metrics["num_clips"] = float(len(records))
        return {"video_generation": metrics}
