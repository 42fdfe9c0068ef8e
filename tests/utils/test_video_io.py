"""Tests for sgg.utils.video_io: round trips through real mp4/webm files and clear errors on bad files."""

import numpy as np
import pytest

from sgg.utils.video_io import VideoError, iter_video_frames, read_video, video_info, write_video


def _ramp_video(num_frames: int = 30, height: int = 32, width: int = 48) -> np.ndarray:
    """Frames whose mean brightness encodes the frame index (robust to lossy compression)."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frames[i] = min(255, 8 * i)
    return frames


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_write_read_round_trip(tmp_path, ext):
    frames = _ramp_video()
    path = write_video(str(tmp_path / f"clip{ext}"), frames, fps=10)
    info = video_info(path)
    assert info["fps"] == pytest.approx(10.0)
    assert (info["width"], info["height"]) == (48, 32)
    assert info["num_frames"] == 30
    assert info["duration_s"] == pytest.approx(3.0, abs=0.11)

    decoded, times = read_video(path)
    assert decoded.dtype == np.uint8 and decoded.shape == frames.shape
    np.testing.assert_allclose(times, np.arange(30) / 10.0, atol=2e-3)
    # Brightness ramps survive lossy coding within a few grey levels.
    np.testing.assert_allclose(decoded.mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)), atol=4)


def test_fps_resampling_keeps_first_frame_at_each_tick(tmp_path):
    path = write_video(str(tmp_path / "clip.mp4"), _ramp_video(30), fps=10)
    kept = [(i, t) for i, t, _ in iter_video_frames(path, fps=2)]
    assert [i for i, _ in kept] == [0, 5, 10, 15, 20, 25]
    np.testing.assert_allclose([t for _, t in kept], [0, 0.5, 1.0, 1.5, 2.0, 2.5], atol=1e-6)
    # 3 fps from 10 fps: ticks at 0, 1/3, 2/3, ... take the first frame at or after each tick.
    assert [i for i, _, _ in iter_video_frames(path, fps=3)] == [0, 4, 7, 10, 14, 17, 20, 24, 27]


def test_size_and_max_frames(tmp_path):
    path = write_video(str(tmp_path / "clip.mp4"), _ramp_video(30), fps=10)
    frames, times = read_video(path, size=(20, 24), max_frames=4)
    assert frames.shape == (4, 20, 24, 3) and times.shape == (4,)
    frames, _ = read_video(path, size=16, max_frames=1)  # shorter side 16, aspect 3:2 kept
    assert frames.shape == (1, 16, 24, 3)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match="not found.*nope.mp4"):
        read_video(str(missing))
    with pytest.raises(VideoError, match="not found"):
        video_info(str(missing))


def test_corrupt_and_empty_files_raise_clear_errors(tmp_path):
    good = write_video(str(tmp_path / "good.mp4"), _ramp_video(30), fps=10)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(good, "rb").read()[:200])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for bad in (truncated, garbage):
        with pytest.raises(VideoError, match=rf"Cannot open video '.*{bad.name}'.*corrupt"):
            read_video(str(bad))
    with pytest.raises(VideoError, match="empty.mp4' is empty"):
        video_info(str(empty))


def test_write_video_validates_input(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(T, H, W, 3\)"):
        write_video(str(tmp_path / "a.mp4"), np.zeros((4, 8, 8), np.uint8), fps=5)
    with pytest.raises(ValueError, match="uint8"):
        write_video(str(tmp_path / "a.mp4"), np.zeros((4, 8, 8, 3), np.float32), fps=5)
    with pytest.raises(ValueError, match="even width and height"):
        write_video(str(tmp_path / "a.mp4"), np.zeros((4, 9, 8, 3), np.uint8), fps=5)
    with pytest.raises(VideoError, match="Cannot infer a codec"):
        write_video(str(tmp_path / "a.xyz"), np.zeros((4, 8, 8, 3), np.uint8), fps=5)
