"""TextToVideoMapper: decoding at 8 fps, trim / pad, resize, flip with caption swap, jitter, corrupt files."""

import os

import numpy as np
import pytest
import torch

from sgg.config import get_cfg
from sgg.data.build import build_mapper
from sgg.data.t2v_mapper import TextToVideoMapper, color_jitter, select_window, swap_left_right
from sgg.utils.video_io import VideoError, write_video


def _clip(tmp_path, num_frames=24, fps=12.0, name="1.webm"):
    """A 48x64 clip whose left half is dark and whose frame index is written into the green channel."""
    frames = np.zeros((num_frames, 48, 64, 3), np.uint8)
    frames[:, :, 32:, 0] = 220
    for t in range(num_frames):
        frames[t, :, :, 1] = 8 * t
    path = str(tmp_path / name)
    write_video(path, frames, fps)
    return {"file_name": path, "caption": "Pushing red ball from left to right", "video_id": "1", "label_id": 0}


def _mapper(is_train, **kw):
    args = dict(is_train=is_train, num_frames=8, fps=8.0, size=(32, 32), random_flip=True,
                color_jitter_strength=0.0, temporal_crop=True)
    args.update(kw)
    return TextToVideoMapper(**args)


def test_swap_left_right():
    assert swap_left_right("Pushing ball from left to right") == "Pushing ball from right to left"
    assert swap_left_right("Left hand moves rightwards") == "Right hand moves leftwards"
    assert swap_left_right("Bright light") == "Bright light"


def test_select_window_trims_and_pads():
    torch.manual_seed(0)
    assert select_window(10, 4, random_start=False).tolist() == [3, 4, 5, 6]
    starts = {int(select_window(10, 4, random_start=True)[0]) for _ in range(50)}
    assert starts == set(range(7))
    assert select_window(3, 5, random_start=True).tolist() == [0, 1, 2, 2, 2]


def test_eval_mapping_shapes_and_centre_window(tmp_path):
    d = _clip(tmp_path)
    out = _mapper(False)(d)
    assert out["video"].shape == (8, 3, 32, 32) and out["video"].dtype == torch.uint8
    assert out["caption"] == d["caption"] and not out["flipped"]
    # 24 frames at 12 fps -> 16 frames at 8 fps (native frames 0, 2, 3, 5, ...); centre window starts at 4.
    green = out["video"][:, 1].float().mean((1, 2))
    assert torch.all(green[1:] > green[:-1])
    # Red on the right half stays on the right (no flip in evaluation).
    assert out["video"][0, 0, :, 24:].float().mean() > 150 > out["video"][0, 0, :, :8].float().mean()


def test_short_clip_is_padded_with_its_last_frame(tmp_path):
    d = _clip(tmp_path, num_frames=6, fps=12.0)  # 0.5 s -> 4 frames at 8 fps
    out = _mapper(False)(d)
    assert out["video"].shape[0] == 8
    assert torch.equal(out["video"][3], out["video"][7])


def test_flip_swaps_caption_and_pixels(tmp_path):
    d = _clip(tmp_path)
    mapper = _mapper(True, temporal_crop=False)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = mapper(d)
        seen.add(out["flipped"])
        right_is_red = out["video"][0, 0, :, 24:].float().mean() > out["video"][0, 0, :, :8].float().mean()
        if out["flipped"]:
            assert out["caption"] == "Pushing red ball from right to left" and not right_is_red
        else:
            assert out["caption"] == d["caption"] and right_is_red
    assert seen == {True, False}


def test_color_jitter_is_shared_by_frames():
    torch.manual_seed(0)
    video = torch.full((4, 3, 8, 8), 100.0)
    video[:, 0] = 180.0
    jittered = color_jitter(video, 0.5)
    assert not torch.equal(jittered, video)
    assert all(torch.allclose(jittered[t], jittered[0]) for t in range(4))
    assert jittered.min() >= 0 and jittered.max() <= 255
    assert torch.equal(color_jitter(video, 0.0), video)


def test_built_from_config_through_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("SGG_DATASETS", str(tmp_path))
    cfg = get_cfg()
    cfg.INPUT.T2V.NUM_FRAMES, cfg.INPUT.T2V.SIZE = 6, (24, 24)
    mapper = build_mapper(cfg, "demo_ssv2_train", is_train=False)
    assert isinstance(mapper, TextToVideoMapper) and mapper.num_frames == 6 and not mapper.random_flip
    out = mapper(_clip(tmp_path))
    assert out["video"].shape == (6, 3, 24, 24)


def test_corrupt_video_is_a_clear_error(tmp_path):
    d = _clip(tmp_path)
    with open(d["file_name"], "r+b") as f:  # keep the header, destroy everything after it
        f.seek(200)
        f.write(os.urandom(200))
        f.truncate(400)
    bad = str(tmp_path / "garbage.webm")
    with open(bad, "wb") as f:
        f.write(b"this is not a webm file" * 10)
    for path in (d["file_name"], bad):
        with pytest.raises(VideoError, match=r"(corrupt|No frame could be decoded|failed)") as err:
            _mapper(False)({**d, "file_name": path})
        assert os.path.basename(path) in str(err.value)
    with pytest.raises(VideoError, match=r"not found: '.*missing\.webm'"):
        _mapper(False)({**d, "file_name": str(tmp_path / "missing.webm")})
