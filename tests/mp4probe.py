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
class Stream:
    """One stream of a container as ffmpeg names it: `Video: h264`, `Audio: aac`."""

    kind: str  # "Video", "Audio"
    codec: str
    sample_rate: int | None = None  # Hz, audio only
    channels: str = ""  # "mono", "stereo", audio only


@dataclass(frozen=True)
class Probe:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    frame_count: int
    faststart: bool
    streams: tuple[Stream, ...] = ()


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
        codec,
        pix_fmt,
        int(width),
        int(height),
        float(fps),
        int(frames[-1]),
        _moov_first(path),
        _streams(info),
    )


def _streams(info: str) -> tuple[Stream, ...]:
    """The input's streams, from ffmpeg's `Stream #0:1[0x2](und): Audio: aac (LC) ..., 24000
    Hz, stereo, ...` lines (its output's are listed after `Output #0`)."""
    found = []
    for kind, codec, rest in re.findall(
        r"Stream #0:\d+\S*: (Video|Audio): (\w+)(.*)", info.split("Output #0")[0]
    ):
        rate = re.search(r", (\d+) Hz, (\w+)", rest)
        if rate:
            found.append(Stream(kind, codec, int(rate.group(1)), rate.group(2)))
        else:
            found.append(Stream(kind, codec))
    return tuple(found)


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


def decode_audio(path: Path, sample_rate: int) -> np.ndarray:
    """The MP4's sound track as float samples (channels × samples) at `sample_rate`."""
    raw = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path),
         "-map", "0:a", "-f", "s16le", "-ac", "2", "-ar", str(sample_rate), "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, "<i2").reshape(-1, 2).T / 32768.0
