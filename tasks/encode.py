"""Frames to a browser-playable H.264 MP4 (libx264, yuv420p, faststart) with imageio-ffmpeg.

ffmpeg is run here rather than through `imageio_ffmpeg.write_frames`: that generator ignores
ffmpeg's exit status (a failed encode would be renamed into place as a broken video) and
lets ffmpeg write to the terminal. Only `get_ffmpeg_exe` is used, which every version has.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from tasks.errors import T2VError

# Constant quality, visually lossless for these small clips; `fast` keeps encoding far
# below the render time of a video.
X264_QUALITY = ("-preset", "fast", "-crf", "18")
SIGNAL_REASONS = {"SIGXFSZ": " (its output outgrew the file size limit)"}


class EncodeError(T2VError):
    """ffmpeg could not turn frames into an MP4."""


def encode_mp4(frames: np.ndarray, fps: int, path: Path) -> None:
    """Write uint8 RGB frames (frames × height × width × 3) to `path`: a whole MP4 or nothing."""
    # 1. Check inputs
    check_frames(frames)
    if fps < 1:
        raise ValueError(f"`fps` has to be a positive integer but is {fps}.")
    height, width = frames.shape[1:3]
    # 2. Encode into a temporary file beside `path`, so the rename below stays atomic
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise EncodeError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
        "-i", "pipe:0",
        "-an", "-c:v", "libx264", *X264_QUALITY, "-pix_fmt", "yuv420p",
        # The index (moov) goes first, so browsers start playing before the whole file arrives.
        "-movflags", "+faststart",
        "-f", "mp4", str(tmp),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            input=np.ascontiguousarray(frames).tobytes(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if done.returncode != 0:
            raise EncodeError(
                f"ffmpeg could not encode {width}×{height} frames to {path}: "
                f"{_ffmpeg_error(done.stderr, done.returncode)}"
            )
        # 3. Publish the finished file under its final name
        os.replace(tmp, path)
    except OSError as exc:
        raise EncodeError(f"cannot write {path}: {exc.strerror or exc}") from exc
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


def _ffmpeg_error(stderr: bytes, returncode: int) -> str:
    """The signal that killed ffmpeg, or its first error line without its `[libx264 @ 0x…]`
    prefix."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"ffmpeg was killed by {name}{SIGNAL_REASONS.get(name, '')}"
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    if not lines:
        return f"ffmpeg exited with status {returncode}"
    return re.sub(r"^(\[[^\]]* @ 0x[0-9a-f]+\] ?)+", "", lines[0])
