"""Video-generation metrics: SSIM against an independent implementation, Fréchet distance, FVD / CLIP from local
files, the evaluator end to end, and the messages when weights are missing."""

import logging
import os

import numpy as np
import pytest
import torch
from torch import nn

from sgg.config import get_cfg
from sgg.data import MetadataCatalog
from sgg.evaluation import build_evaluator
from sgg.evaluation.video_generation import (
    ClipScorer,
    I3DFeatureExtractor,
    VideoGenerationEvaluator,
    frame_to_frame_ssim,
    frechet_distance,
    ssim,
)
from sgg.modeling.diffusion_parts import build_offline_clip_tokenizer


def _reference_ssim(a, b):
    """scikit-image's Gaussian SSIM (reflect-filtered maps, border of 5 cropped) written with scipy.ndimage."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(a.shape[0]):
        x, y = a[ch].astype(np.float64), b[ch].astype(np.float64)

        def f(z):
            return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s[5:-5, 5:-5].mean())
    return float(np.mean(vals))


def test_ssim_matches_reference_implementation():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 24, 30)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255)
    ours = float(ssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0])
    assert ours == pytest.approx(_reference_ssim(a, b), abs=1e-6)
    assert 0.2 < ours < 0.95
    assert float(ssim(torch.from_numpy(a)[None], torch.from_numpy(a)[None])[0]) == pytest.approx(1.0)


def test_frame_to_frame_ssim_orders_smooth_and_noisy_clips():
    still = torch.full((4, 3, 16, 16), 90, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    assert frame_to_frame_ssim(still) == pytest.approx(1.0)
    assert frame_to_frame_ssim(noisy) < 0.2


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    a -= a.mean(0)  # zero mean, so scaling below changes only the covariance
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([3.0, 0.0, -4.0])  # same covariance, mean moved by a vector of length 5
    assert frechet_distance(a, shifted) == pytest.approx(25.0, rel=1e-6)
    scaled = a * 2.0  # covariance x4: trace term = tr(S) + 4 tr(S) - 2 * 2 tr(S) = tr(S)
    assert frechet_distance(a, scaled) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-6)


class _FakeI3D(nn.Module):
    """TorchScript stand-in with the real detector's call signature (features = per-channel moments)."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = True) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)


def _cfg(**kw):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.TEST.T2V.NUM_SAMPLES_TO_SAVE = 1
    cfg.merge_from_list([x for kv in kw.items() for x in kv])
    return cfg


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    real = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    fake = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    return ([{"video": real, "caption": "Moving blue box up", "video_id": str(seed)}],
            [{"val_loss": 0.5 + seed, "video": fake, "caption": "Moving blue box up"}])


def test_evaluator_end_to_end_with_local_i3d(tmp_path, caplog):
    path = str(tmp_path / "i3d_torchscript.pt")
    torch.jit.script(_FakeI3D()).save(path)
    evaluator = VideoGenerationEvaluator(_cfg(**{"TEST.T2V.FVD_I3D_PATH": path}), "demo", str(tmp_path / "out"))
    for seed in range(3):
        evaluator.process(*_batch(seed))
    with caplog.at_level(logging.WARNING):
        res = evaluator.evaluate()["video_generation"]
    assert res["val_loss"] == pytest.approx(1.5)  # mean of 0.5, 1.5, 2.5
    assert res["num_clips"] == 3 and 0 <= res["ssim_f2f"] < 0.3 and 0 <= res["ssim_f2f_real"] < 0.3
    assert np.isfinite(res["fvd"]) and res["fvd"] >= 0
    assert "strongly biased" in caplog.text
    assert "clip_score" not in res
    assert sorted(os.listdir(tmp_path / "out" / "samples")) == ["00_0.gif", "00_0.png"]
    evaluator.reset()
    evaluator.process(*_batch(7))
    assert evaluator.evaluate()["video_generation"]["val_loss"] == pytest.approx(7.5)


def test_evaluator_is_registered_and_explains_skipped_metrics(tmp_path, caplog):
    MetadataCatalog.get("t2v_eval_test").set(evaluator_type="video_generation")
    with caplog.at_level(logging.INFO):
        evaluators = build_evaluator(_cfg(), "t2v_eval_test", str(tmp_path))
    assert "FVD not computed: TEST.T2V.FVD_I3D_PATH is empty" in caplog.text
    assert "CLIP score not computed: TEST.T2V.CLIP_MODEL_DIR is empty" in caplog.text
    evaluators.process(*_batch(0))
    assert set(evaluators.evaluate()["video_generation"]) == {"val_loss", "ssim_f2f", "ssim_f2f_real", "num_clips"}


def test_missing_weights_are_clear_errors_not_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"FVD_I3D_PATH '.*nothere\.pt' does not exist.*never downloads"):
        I3DFeatureExtractor(str(tmp_path / "nothere.pt"))
    with pytest.raises(FileNotFoundError, match=r"CLIP_MODEL_DIR '.*noclip' is not a local CLIP model folder"):
        VideoGenerationEvaluator(_cfg(**{"TEST.T2V.CLIP_MODEL_DIR": str(tmp_path / "noclip")}), "demo", None)


def test_clip_score_from_a_local_tiny_clip(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    tok = build_offline_clip_tokenizer(max_length=16)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=1, max_position_embeddings=16, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1,
                           image_size=16, patch_size=8), projection_dim=8)
    folder = str(tmp_path / "clip")
    CLIPModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    scorer = ClipScorer(folder)
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (3, 3, 20, 24), generator=g, dtype=torch.uint8)
    score = scorer(video, "Moving blue box up")
    assert 0.0 <= score <= 100.0
    # Independent check of one frame's cosine with the model's own preprocessing-free path.
    with torch.no_grad():
        img = scorer.model.get_image_features(pixel_values=scorer._preprocess(video))
        txt = scorer.model.get_text_features(**scorer.tokenizer(["Moving blue box up"], return_tensors="pt"))
    img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
    expected = (100 * torch.nn.functional.cosine_similarity(img, txt).clamp(min=0)).mean().item()
    assert score == pytest.approx(expected, rel=1e-5)
    assert scorer._preprocess(video).shape == (3, 3, 16, 16)
