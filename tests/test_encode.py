from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from tasks import encode
from tasks.encode import encode_mp4
from tasks.errors import EncodeError
from tests.conftest import REPO
from tests.mp4probe import decode_frames, probe_mp4


def gradient(frames: int, height: int, width: int) -> np.ndarray:
    """A smooth moving gradient, which H.264 keeps close to the input."""
    y, x = np.mgrid[0:height, 0:width]
    video = [
        np.stack([(x * 255 // width + t * 8) % 256, y * 255 // height, np.full_like(x, 128)], -1)
        for t in range(frames)
    ]
    return np.asarray(video, dtype=np.uint8)


@pytest.mark.parametrize(("frames", "height", "width", "fps"), [(16, 64, 96, 8), (1, 64, 64, 24)])
def test_mp4_is_browser_playable_h264(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    frames: int,
    height: int,
    width: int,
    fps: int,
) -> None:
    video = gradient(frames, height, width)
    encode_mp4(video, fps, tmp_path / "clip.mp4")
    assert capfd.readouterr() == ("", "")  # ffmpeg says nothing on the terminal
    probe = probe_mp4(tmp_path / "clip.mp4")
    assert (probe.codec, probe.pix_fmt) == ("h264", "yuv420p")
    assert (probe.width, probe.height, probe.frame_count) == (width, height, frames)
    assert probe.fps == fps
    assert probe.faststart
    decoded = decode_frames(tmp_path / "clip.mp4", width, height)
    assert np.abs(decoded.astype(int) - video.astype(int)).mean() < 4
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


@pytest.mark.parametrize(
    ("frames", "fps", "message"),
    [
        (np.zeros((4, 64, 64, 3), np.float32), 8, "`frames` have to be uint8 but are float32."),
        (np.zeros((64, 64, 3), np.uint8), 8, "`frames` have to be (frames, height, width, 3)"),
        (np.zeros((4, 64, 64, 4), np.uint8), 8, "`frames` have to be (frames, height, width, 3)"),
        (np.zeros((0, 64, 64, 3), np.uint8), 8, "hold at least one frame"),
        (np.zeros((2, 63, 64, 3), np.uint8), 8, "even height and width but are 63×64."),
        (np.zeros((2, 64, 64, 3), np.uint8), 0, "`fps` has to be a positive integer but is 0."),
    ],
)
def test_bad_input_is_refused_before_ffmpeg(
    tmp_path: Path, frames: np.ndarray, fps: int, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        encode_mp4(frames, fps, tmp_path / "clip.mp4")
    assert message in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_an_ffmpeg_failure_leaves_no_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Even sizes pass our checks, but libx264 refuses frames wider than 16384.
    frames = np.zeros((1, 8, 16392, 3), np.uint8)
    with pytest.raises(EncodeError, match=r"invalid width x height \(16392x8\)"):
        encode_mp4(frames, 8, tmp_path / "clip.mp4")
    assert not list(tmp_path.iterdir())
    assert capfd.readouterr() == ("", "")


def test_a_missing_folder_is_an_encode_error(tmp_path: Path) -> None:
    with pytest.raises(EncodeError, match="No such file or directory"):
        encode_mp4(gradient(1, 64, 64), 8, tmp_path / "missing" / "clip.mp4")
    assert not list(tmp_path.iterdir())


def test_an_existing_file_is_refused_and_kept(tmp_path: Path) -> None:
    # Encoding writes a new file in a scratch folder; replacing is storage's job.
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"not ours")
    with pytest.raises(EncodeError, match=r"cannot write .*clip\.mp4: File exists"):
        encode_mp4(gradient(4, 64, 64), 8, target)
    assert target.read_bytes() == b"not ours"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_wedged_ffmpeg_is_stopped_with_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ffmpeg that hangs without reading its input, as a wedged encoder does.
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))
    monkeypatch.setattr(encode, "MIN_ENCODE_TIMEOUT_S", 1.0)
    target = tmp_path / "out" / "clip.mp4"
    target.parent.mkdir()
    with pytest.raises(EncodeError) as error:
        encode_mp4(gradient(8, 64, 64), 8, target)  # 98 kB: more than a pipe buffer holds
    assert str(error.value) == (
        f"ffmpeg did not finish encoding 64×64 frames to {target} within 1 s and was stopped"
    )
    assert not list(target.parent.iterdir())


def test_ffmpeg_runs_out_of_reach_of_the_terminals_signals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C reaches the terminal's whole process group: an ffmpeg in it would die mid-encode
    # while t2v, stopping gracefully, still publishes the videos it rendered.
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    fake = tmp_path / "ffmpeg"
    fake.write_text(
        f"#!/bin/sh\nawk '{{print $6}}' /proc/$$/stat > {tmp_path}/sid\nexec {ffmpeg} \"$@\"\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))
    encode_mp4(gradient(4, 64, 64), 8, tmp_path / "clip.mp4")
    assert int((tmp_path / "sid").read_text()) != os.getsid(0)
    assert probe_mp4(tmp_path / "clip.mp4").frame_count == 4


def test_the_encode_timeout_grows_with_the_frames() -> None:
    assert encode.encode_timeout(16, 256, 256) == encode.MIN_ENCODE_TIMEOUT_S
    assert encode.encode_timeout(128, 1024, 1024) > 4 * encode.MIN_ENCODE_TIMEOUT_S


def test_ffmpeg_killed_mid_write_leaves_no_file(tmp_path: Path) -> None:
    # In a child whose files may not outgrow 20 kB, the kernel kills ffmpeg with SIGXFSZ
    # once its output reaches that size.
    # The frames come from a file the parent writes: before the limit, and with no import
    # of a test module in the child.
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from tasks.errors import EncodeError\nfrom tasks.encode import encode_mp4\n"
        "frames = np.load(sys.argv[1])\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    encode_mp4(frames, 8, Path(sys.argv[2]))\n"
        "except EncodeError as exc:\n"
        "    print(exc)\n"
    )
    frames = tmp_path / "frames.npy"
    np.save(frames, gradient(32, 256, 256) ^ 0x55)
    target = tmp_path / "out" / "clip.mp4"
    target.parent.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code, str(frames), str(target)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.stdout == (
        f"ffmpeg could not encode 256×256 frames to {target}: "
        "ffmpeg was killed by SIGXFSZ (its output outgrew the file size limit)\n"
    ), done.stderr
    assert not list(target.parent.iterdir())
