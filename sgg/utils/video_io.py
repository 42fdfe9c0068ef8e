"""Video decoding and encoding through PyAV (FFmpeg), with errors that name the file.

Three entry points cover every dataset in sgg (TVSum ``.mp4``, SSv2 ``.webm``, generated demo clips):

* :func:`video_info` — container facts (frame rate, frame count, duration, size, codec) without decoding pixels;
* :func:`read_video` — decode to a ``uint8`` array ``(T, H, W, 3)`` (RGB) plus per-frame timestamps in seconds,
  optionally resampled to a target frame rate, capped in length and resized;
* :func:`write_video` — encode a ``(T, H, W, 3)`` uint8 array to ``.mp4`` (H.264) or ``.webm`` (VP9).

:func:`iter_video_frames` is the streaming primitive under :func:`read_video`; it also yields each frame's index in
the native stream, which annotation files indexed by native frame (e.g. TVSum's per-frame scores) need.

Resampling rule (``fps=f``): for every tick ``k / f`` seconds (k = 0, 1, ...) the first decoded frame whose
timestamp is at or after the tick is kept, at most once. This is what "sampled at 2 fps" means everywhere in sgg.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from sgg.utils.errors import SGGError, one_line

__all__ = ["VideoError", "video_info", "iter_video_frames", "read_video", "write_video", "DEFAULT_CODECS",
           "short_clip_tolerance"]

logger = logging.getLogger(__name__)

# Container extension -> encoder used by write_video when no codec is given.
DEFAULT_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                  ".webm": "libvpx-vp9", ".avi": "mpeg4"}

SizeArg = Union[None, int, Tuple[int, int]]


class VideoError(SGGError, OSError):
    """A video file is missing, unreadable, corrupt, or cannot be written."""


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a hard dependency of sgg's video datasets
        raise ImportError("Video I/O needs PyAV: `pip install av`.") from e
    return av


def _open_for_reading(path: str):
    """Open ``path`` with PyAV and return ``(container, video_stream)``; raise :class:`VideoError` clearly."""
    av = _import_av()
    if not os.path.exists(path):
        raise VideoError(f"Video file not found: '{path}'. Check the dataset root ($SGG_DATASETS) and the file name.")
    if os.path.getsize(path) == 0:
        raise VideoError(f"Video file '{path}' is empty (0 bytes); re-download or re-extract it.")
    try:
        container = av.open(path, mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(
            f"Cannot open video '{path}': {one_line(e)}. The file is corrupt or not a video; re-download or re-encode "
            "it (e.g. `ffmpeg -i in -c:v libx264 out.mp4`)."
        ) from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"'{path}' contains no video stream (streams: {[s.type for s in container.streams]}).")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.width:
        container.close()
        raise VideoError(f"Video '{path}' has a video stream without a readable codec header (no frame size); the file "
                         "is truncated or corrupt. Re-download or re-encode it.")
    return container, stream


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def video_info(path: str) -> dict:
    """Container facts of ``path`` without decoding pixels.

    Returns ``{"fps": float, "num_frames": int, "duration_s": float, "width": int, "height": int, "codec": str}``.
    ``num_frames`` comes from the container header and may be 0 for formats that do not store it (webm); it is then
    estimated as ``round(duration_s * fps)``.
    """
    container, stream = _open_for_reading(path)
    try:
        fps = _stream_fps(stream)
        duration, num_frames = _header_duration_and_frames(container, stream, fps)
        return {"fps": fps, "num_frames": num_frames, "duration_s": duration,
                "width": int(stream.codec_context.width), "height": int(stream.codec_context.height),
                "codec": stream.codec_context.name}
    finally:
        container.close()


def _header_duration_and_frames(container, stream, fps: float) -> Tuple[float, int]:
    """(duration in seconds, frame count) as the container header states them (count estimated from the duration
    when the header has none, as in webm)."""
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000.0  # container duration is in AV_TIME_BASE (microseconds)
    else:
        duration = 0.0
    return duration, int(stream.frames) or int(round(duration * fps))


def short_clip_tolerance(expected: int) -> int:
    """Frames a decode may come up short of the header's count before the clip counts as truncated (2%, at least 1:
    headers that only store a duration round it)."""
    return max(1, int(round(0.02 * expected)))


def _target_size(width: int, height: int, size: SizeArg) -> Tuple[int, int]:
    """(width, height) after resizing: ``int`` = shorter side to ``size`` keeping aspect, ``(h, w)`` = exact."""
    if size is None:
        return width, height
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}.")
        scale = size / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be an int (shorter side) or a positive (height, width) pair, got {size!r}.")
    return int(size[1]), int(size[0])


def iter_video_frames(path: str, *, fps: Optional[float] = None, max_frames: Optional[int] = None,
                      size: SizeArg = None) -> Iterator[Tuple[int, float, np.ndarray]]:
    """Decode ``path`` and yield ``(native_frame_index, timestamp_s, rgb_uint8 (H, W, 3))`` per kept frame.

    Args:
        fps: keep frames at this rate (see the module docstring for the rule); ``None`` keeps every frame.
        max_frames: stop after this many kept frames.
        size: ``None`` (native), an int (shorter side, aspect kept) or ``(height, width)``.

    Raises:
        VideoError: the file is missing, empty, corrupt, or decoding fails midway (names the path and frame).
    """
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    av = _import_av()
    container, stream = _open_for_reading(path)
    stream.thread_type = "AUTO"
    _, expected = _header_duration_and_frames(container, stream, _stream_fps(stream))
    native_fps = _stream_fps(stream) or 25.0
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    kept, next_tick, index = 0, 0, -1
    try:
        for frame in container.decode(stream):
            index += 1
            t = float(frame.time) - start if frame.time is not None else index / native_fps
            if fps is not None:
                # Compare against the tick with a tolerance of 1 µs so float rounding never skips a frame on a tick.
                if t + 1e-6 < next_tick / fps:
                    continue
                next_tick = int(np.floor(t * fps + 1e-6)) + 1
            width, height = _target_size(frame.width, frame.height, size)
            image = frame.to_ndarray(format="rgb24", width=width, height=height)
            yield index, t, image
            kept += 1
            if max_frames is not None and kept >= max_frames:
                return
    except av.error.FFmpegError as e:
        raise VideoError(
            f"Decoding '{path}' failed after {index} frame(s): {one_line(e)}. The file is truncated or corrupt; "
            "re-download or re-encode it."
        ) from e
    finally:
        container.close()
    decoded = index + 1
    if expected > 0 and 0 < decoded < expected - short_clip_tolerance(expected):
        raise VideoError(f"Video '{path}' decoded {decoded} of the {expected} frames its header declares; the file is "
                         "truncated. Re-download or re-encode it (e.g. `ffmpeg -i in -c:v libx264 out.mp4`).")


def read_video(path: str, *, fps: Optional[float] = None, max_frames: Optional[int] = None,
               size: SizeArg = None) -> Tuple[np.ndarray, np.ndarray]:
    """Decode ``path`` to ``(frames uint8 (T, H, W, 3) RGB, timestamps_s float64 (T,))``.

    Arguments as in :func:`iter_video_frames`. Raises :class:`VideoError` when no frame can be decoded.
    """
    frames, times = [], []
    for _, t, image in iter_video_frames(path, fps=fps, max_frames=max_frames, size=size):
        frames.append(image)
        times.append(t)
    if not frames:
        raise VideoError(f"No frame could be decoded from '{path}'; the video stream is empty or corrupt.")
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def _as_frame_array(frames) -> np.ndarray:
    arr = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"write_video expects frames of shape (T, H, W, 3), got {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError("write_video got zero frames.")
    if arr.dtype != np.uint8:
        raise ValueError(f"write_video expects uint8 frames (0-255), got dtype {arr.dtype}; convert with "
                         "(x * 255).clip(0, 255).astype(np.uint8) if they are floats in [0, 1].")
    return arr


def write_video(path: str, frames: Union[np.ndarray, Sequence[np.ndarray]], fps: float, *,
                codec: Optional[str] = None, crf: Optional[int] = None, pix_fmt: str = "yuv420p") -> str:
    """Encode RGB ``frames`` (uint8 ``(T, H, W, 3)``) to ``path`` at ``fps`` frames per second; returns ``path``.

    ``codec`` defaults to :data:`DEFAULT_CODECS` for the extension (H.264 for .mp4, VP9 for .webm). ``crf`` sets the
    quality of x264/VP9 (lower = better; ``None`` = the encoder's default). ``yuv420p`` needs even width and height.
    """
    av = _import_av()
    arr = _as_frame_array(frames)
    ext = os.path.splitext(path)[1].lower()
    codec = codec or DEFAULT_CODECS.get(ext)
    if codec is None:
        raise VideoError(f"Cannot infer a codec for '{path}' (extension '{ext}'); pass codec= "
                         f"or use one of {sorted(DEFAULT_CODECS)}.")
    height, width = arr.shape[1:3]
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"write_video('{path}'): yuv420p needs even width and height, got {width}x{height}; "
                         "crop or pad the frames by one pixel.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        container = av.open(path, mode="w")
    except av.error.FFmpegError as e:
        raise VideoError(f"Cannot create video file '{path}': {e}") from e
    try:
        options = {"crf": str(crf)} if crf is not None else {}
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for image in arr:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush delayed frames
            container.mux(packet)
    except (av.error.FFmpegError, ValueError) as e:
        raise VideoError(f"Encoding '{path}' with codec '{codec}' failed: {e}") from e
    finally:
        container.close()
    return path
