"""Storing videos create-only, and what publishing imports."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from storage import LocalStorage
from tasks.publish import publish_video


def test_publish_video_writes_whole_file_and_reports_its_digest(tmp_path: Path) -> None:
    source = tmp_path / "scratch.mp4"
    source.write_bytes(b"\x00mp4 bytes" * 1000)
    storage = LocalStorage(tmp_path / "out")
    published = publish_video(storage, "clip-abc.mp4", source)
    assert published.output == str(tmp_path / "out" / "clip-abc.mp4")
    assert published.bytes == 10_000
    assert published.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip-abc.mp4"]


def test_an_exclusive_publish_keeps_the_video_already_there(tmp_path: Path) -> None:
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    storage = LocalStorage(tmp_path / "out")
    published = publish_video(storage, "clip-abc.mp4", first, exclusive=True)
    assert published is not None and published.sha256 == hashlib.sha256(b"first").hexdigest()
    assert publish_video(storage, "clip-abc.mp4", second, exclusive=True) is None
    assert storage.read_bytes("clip-abc.mp4") == b"first"


def test_publishing_does_not_import_torch() -> None:
    # The results manifest and uploads run where torch is not needed (and is slow to import).
    code = "import sys, tasks.publish; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
