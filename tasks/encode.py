"""Frames to a browser-playable H.264 MP4 with imageio-ffmpeg (libx264, yuv420p, faststart)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from tasks.errors import T2VError, first_line


class EncodeError(T2VError):
    """ffmpeg could not turn frames into an MP4."""


def encode_mp4(frames: np.ndarray, fps: int, path: Path) -> None:
    """Write uint8 frames (frames × height × width × RGB) to `path`, atomically."""
    # 1. Check inputs
    check_frames(frames)
    if not 1 <= fps <= 240:
        raise ValueError(f"`fps` has to be in 1…240 but is {fps}.")
    num_frames, height, width, _ = frames.shape
    # 2. Encode to a temporary name beside `path`, so `path` holds a whole video or nothing
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.mp4", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        import imageio_ffmpeg

        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (width, height),
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            fps=fps,
            codec="libx264",
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-crf", "18", "-preset", "fast", "-movflags", "+faststart"],
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        # 3. Publish the finished file under its final name
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise EncodeError(
            f"encoding {num_frames} frames to {path.name} failed: {first_line(exc)}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def check_frames(frames: np.ndarray) -> None:
    """Refuse what libx264 in yuv420p cannot take, in one sentence."""
    if frames.dtype != np.uint8:
        raise ValueError(f"`frames` have to be uint8 but are {frames.dtype}.")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"`frames` have to be (frames, height, width, 3) but are {frames.shape}.")
    if frames.shape[0] < 1:
        raise ValueError("`frames` have to hold at least one frame but hold none.")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"`frames` have to be of even height and width but are {height}×{width}.")
