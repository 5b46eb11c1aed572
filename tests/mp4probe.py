"""Read back what an MP4 holds with the ffmpeg that imageio-ffmpeg ships (there is no ffprobe)."""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np


@dataclass(frozen=True)
class Probe:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    frame_count: int
    faststart: bool


def probe_mp4(path: Path) -> Probe:
    info = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    stream = re.search(r"Video: (\w+).*?, (\w+)\(?.*?, (\d+)x(\d+).*?, ([\d.]+) fps", info)
    frames = re.findall(r"frame=\s*(\d+)", info)
    assert stream and frames, info
    codec, pix_fmt, width, height, fps = stream.groups()
    return Probe(
        codec, pix_fmt, int(width), int(height), float(fps), int(frames[-1]), _moov_first(path)
    )


def decode_frames(path: Path, width: int, height: int) -> np.ndarray:
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    next(reader)  # metadata
    frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    return np.stack(frames)


def _moov_first(path: Path) -> bool:
    """Faststart: the index (moov) precedes the media data (mdat), so playback starts at once."""
    data = path.read_bytes()
    offset, order = 0, []
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        order.append(kind.decode("latin-1"))
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        if size < 8:
            break
        offset += size
    return "moov" in order and "mdat" in order and order.index("moov") < order.index("mdat")
