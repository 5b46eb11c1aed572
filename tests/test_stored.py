"""Only a video t2v recorded, whole, counts as done; nothing else is taken for one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storage import LocalStorage, S3Storage, Storage
from storage.s3 import s3_client
from tasks.encode import encode_mp4
from tasks.publish import publish_video
from tasks.stored import StoredBy, StoredKey, inspect_key, mp4_boxes_sound
from tests.s3faults import mocked_s3

KEY = "clip-0123456789ab.mp4"


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    encode_mp4(frames, 8, path)
    return path


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mocked_s3("t2v-stored") as client:
        yield client


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "s3":
        request.getfixturevalue("s3")
        return S3Storage("t2v-stored", "out")
    return LocalStorage(tmp_path / "out")


def test_a_video_t2v_stored_is_done_with_its_recorded_digest(store: Storage, mp4: Path) -> None:
    published = publish_video(store, KEY, mp4, exclusive=True)
    assert published is not None
    assert inspect_key(store, KEY) == StoredKey("video", published.bytes, published.sha256)
    assert inspect_key(store, "other.mp4") == StoredKey("missing")


def test_a_video_records_the_run_and_worker_that_stored_it(store: Storage, mp4: Path) -> None:
    by = StoredBy("0b8f7c1e-run", "gpu-box ü 1")  # S3 metadata is ASCII: the name is quoted
    assert publish_video(store, KEY, mp4, exclusive=True, by=by) is not None
    assert inspect_key(store, KEY).by == by


def test_a_recorded_video_cut_short_is_broken(store: Storage, mp4: Path, tmp_path: Path) -> None:
    publish_video(store, KEY, mp4)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(mp4.read_bytes()[:-100])
    _overwrite_keeping_the_record(store, cut)
    assert inspect_key(store, KEY).state == "broken"


@pytest.mark.parametrize(
    "change",
    [
        lambda data: b"\0" * 4096 + data[4096:],  # a lost first block reads as zeros
        lambda data: b"\0\0\0\x08free" + data[8:],  # ftyp gone
        lambda data: data[:8] + b"\xff" * (len(data) - 8),  # garbage after ftyp's header
    ],
)
def test_a_recorded_video_with_unsound_boxes_is_broken(
    store: Storage, mp4: Path, tmp_path: Path, change: Any
) -> None:
    publish_video(store, KEY, mp4)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(change(mp4.read_bytes()))
    _overwrite_keeping_the_record(store, bad)
    found = store.stat(KEY)
    assert found is not None and found.size == mp4.stat().st_size
    assert not mp4_boxes_sound(store, KEY, found.size)


@pytest.mark.parametrize("content", [b"", os.urandom(5000)], ids=["empty", "random"])
def test_a_file_t2v_did_not_record_is_foreign_even_a_real_mp4(
    store: Storage, mp4: Path, content: bytes
) -> None:
    store.write_bytes(KEY, content)
    assert inspect_key(store, KEY).state == "foreign"
    store.write_file(KEY, mp4)  # a real MP4, but not stored by t2v
    assert inspect_key(store, KEY).state == "foreign"


@pytest.mark.parametrize("what", ["link", "dangling link", "folder"])
def test_links_and_folders_at_a_key_are_foreign(tmp_path: Path, mp4: Path, what: str) -> None:
    store = LocalStorage(tmp_path)
    publish_video(store, "real.mp4", mp4)
    path = tmp_path / KEY
    if what == "link":
        path.symlink_to(tmp_path / "real.mp4")  # even to a video t2v recorded
        (tmp_path / ".t2v" / f"{KEY}.json").write_bytes(
            (tmp_path / ".t2v" / "real.mp4.json").read_bytes()
        )
    elif what == "dangling link":
        path.symlink_to(tmp_path / "gone.mp4")
    else:
        path.mkdir()
    assert inspect_key(store, KEY).state == "foreign"


def _overwrite_keeping_the_record(store: Storage, source: Path) -> None:
    """Replace the video's bytes as a disk fault or a hand edit would: the record stays."""
    if isinstance(store, S3Storage):
        head = s3_client().head_object(Bucket=store.bucket, Key=f"out/{KEY}")
        s3_client().put_object(
            Bucket=store.bucket,
            Key=f"out/{KEY}",
            Body=source.read_bytes(),
            Metadata=head["Metadata"],
        )
    else:
        assert isinstance(store, LocalStorage)
        (store.root / KEY).write_bytes(source.read_bytes())


def test_box_headers_past_the_first_read_are_read_too(tmp_path: Path) -> None:
    # Without faststart the index (moov) follows the media data, 100 kB in.
    def box(kind: bytes, size: int) -> bytes:
        return size.to_bytes(4, "big") + kind + b"\0" * (size - 8)

    data = box(b"ftyp", 32) + box(b"mdat", 100_000) + box(b"moov", 500)
    (tmp_path / KEY).write_bytes(data)
    assert mp4_boxes_sound(LocalStorage(tmp_path), KEY, len(data))
    (tmp_path / KEY).write_bytes(data[:-1])
    assert not mp4_boxes_sound(LocalStorage(tmp_path), KEY, len(data) - 1)
