"""Frames to a browser-playable H.264 MP4 (libx264, yuv420p, faststart) with imageio-ffmpeg,
and, for a family with sound, its AAC track beside them.

ffmpeg is run here rather than through `imageio_ffmpeg.write_frames`: that generator ignores
ffmpeg's exit status (a failed encode would be stored as a broken video) and
lets ffmpeg write to the terminal. Only `get_ffmpeg_exe` is used, which every version has.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from tasks.errors import EncodeError
from tasks.sound import Sound, write_wav

# Constant quality, visually lossless for these small clips; `fast` keeps encoding far
# below the render time of a video.
X264_QUALITY = ("-preset", "fast", "-crf", "18")
SIGNAL_REASONS = {"SIGXFSZ": " (its output outgrew the file size limit)"}
# A wedged ffmpeg must not hold a publish thread for ever. libx264 `fast` encodes several
# million pixels a second on one core; the limit allows ten times less, and a minute at least.
MIN_ENCODE_TIMEOUT_S = 60.0
SLOWEST_PIXELS_PER_S = 500_000
AAC_BITRATE = "128k"  # stereo speech and effects; browsers play AAC-LC in MP4 everywhere


def encode_mp4(frames: np.ndarray, fps: int, path: Path, sound: Sound | None = None) -> None:
    """Write uint8 RGB frames (frames × height × width × 3) to `path`, a new file in a
    scratch folder: a whole MP4, or no file at all. Storage publishes it atomically. With
    `sound`, the MP4 also holds it as an AAC track; without, it holds no audio track."""
    if sound is None:
        _encode(frames, fps, path, ["-an"])
        return
    with tempfile.TemporaryDirectory(prefix="t2v-sound-") as folder:
        wav = Path(folder) / "sound.wav"
        write_wav(sound, wav)
        audio = ["-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", AAC_BITRATE]
        _encode(frames, fps, path, audio)


def _encode(frames: np.ndarray, fps: int, path: Path, audio: list[str]) -> None:
    """`encode_mp4` with ffmpeg's audio arguments: a second input and its codec, or `-an`."""
    # 1. Check inputs
    check_frames(frames)
    if fps < 1:
        raise ValueError(f"`fps` has to be a positive integer but is {fps}.")
    count, height, width = frames.shape[:3]
    # 2. Claim `path`, so the clean-up below only ever removes a file of this encode
    try:
        path.open("xb").close()
    except OSError as exc:
        raise EncodeError(f"cannot write {path}: {exc.strerror or exc}") from exc
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
        "-i", "pipe:0",
        *audio, "-c:v", "libx264", *X264_QUALITY, "-pix_fmt", "yuv420p",
        # The index (moov) goes first, so browsers start playing before the whole file arrives.
        "-movflags", "+faststart",
        "-f", "mp4", str(path),
    ]  # fmt: skip
    timeout = encode_timeout(count, height, width)
    # 3. Encode; anything but a clean exit removes what ffmpeg wrote
    done = None
    try:
        done = subprocess.run(
            command,
            input=np.ascontiguousarray(frames).tobytes(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
            timeout=timeout,
            # Out of reach of the terminal's Ctrl-C: a stopping run still publishes what it
            # rendered, and this encode ends with its input or its timeout.
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise EncodeError(
            f"ffmpeg did not finish encoding {width}×{height} frames to {path} "
            f"within {timeout:.0f} s and was stopped"
        ) from exc
    except OSError as exc:
        raise EncodeError(f"cannot run ffmpeg for {path}: {exc.strerror or exc}") from exc
    finally:
        if done is None or done.returncode != 0:
            path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise EncodeError(
            f"ffmpeg could not encode {width}×{height} frames to {path}: "
            f"{_ffmpeg_error(done.stderr, done.returncode)}"
        )


def encode_timeout(frames: int, height: int, width: int) -> float:
    """Seconds an encode may take before ffmpeg counts as wedged: generous, by frame size."""
    return max(MIN_ENCODE_TIMEOUT_S, frames * height * width / SLOWEST_PIXELS_PER_S)


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
