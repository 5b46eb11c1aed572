"""The local backend: atomic, create-only writes, and the temporaries killed writers leave."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage import LocalStorage, StorageError, StoredObject, open_location, open_storage
from tests.conftest import REPO


def test_write_read_and_exists(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "dest")
    assert not storage.exists("a.mp4")
    storage.write_bytes("b.txt", b"bee")
    storage.write_bytes("sub/a.mp4", b"a")
    assert storage.read_bytes("b.txt") == b"bee"
    assert storage.exists("sub/a.mp4")
    assert storage.uri("b.txt") == str(tmp_path / "dest" / "b.txt")


def test_write_file_replaces_atomically_and_leaves_no_temporary(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"new" * 1000)
    storage = LocalStorage(tmp_path / "dest")
    storage.write_bytes("x.bin", b"old")
    storage.write_file("x.bin", source)
    assert storage.read_bytes("x.bin") == b"new" * 1000
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["x.bin"]


def test_a_failed_write_keeps_the_old_object(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_bytes("x.bin", b"old")
    with pytest.raises(StorageError, match="cannot write"):
        storage.write_file("x.bin", tmp_path / "missing-source.bin")
    assert storage.read_bytes("x.bin") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b"])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError, match="escapes the storage root"):
        LocalStorage(tmp_path / "dest").write_bytes(key, b"x")


def test_reading_a_missing_object_names_it(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"cannot read .*nope\.csv: No such file") as error:
        LocalStorage(tmp_path).read_bytes("nope.csv")
    assert not error.value.retryable  # a missing file does not appear by waiting


def test_a_local_folder_has_no_presigned_urls(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="only s3:// locations have presigned URLs"):
        LocalStorage(tmp_path).presigned_url("a.mp4", 60)


def test_open_location_splits_a_file_path(tmp_path: Path) -> None:
    storage, key = open_location(str(tmp_path / "m.csv"))
    assert key == "m.csv"
    assert storage.uri() == str(tmp_path)


def test_unknown_schemes_are_refused() -> None:
    with pytest.raises(StorageError, match="unsupported location 'gs://b/k'"):
        open_storage("gs://b/k")


def test_an_exclusive_write_creates_once_and_keeps_the_first(tmp_path: Path) -> None:
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    first.write_bytes(b"first" * 1000)
    second.write_bytes(b"second")
    storage = LocalStorage(tmp_path / "dest")
    assert storage.write_file("a.mp4", first, exclusive=True)
    before = (tmp_path / "dest" / "a.mp4").stat()
    assert not storage.write_file("a.mp4", second, exclusive=True)
    after = (tmp_path / "dest" / "a.mp4").stat()
    assert storage.read_bytes("a.mp4") == b"first" * 1000
    assert (after.st_ino, after.st_mtime_ns, after.st_nlink) == (
        before.st_ino,
        before.st_mtime_ns,
        1,
    )
    assert oct(after.st_mode & 0o777) == oct(0o644)
    # Without `exclusive` (`--force`) the video is replaced.
    assert storage.write_file("a.mp4", second)
    assert storage.read_bytes("a.mp4") == b"second"
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["a.mp4"]


def test_of_writers_racing_for_one_key_exactly_one_creates_it(tmp_path: Path) -> None:
    sources = []
    for n in range(8):
        sources.append(tmp_path / f"src-{n}.bin")
        sources[-1].write_bytes(bytes([n]) * 200_000)
    storage = LocalStorage(tmp_path / "dest")
    start = threading.Barrier(len(sources))

    def write(source: Path) -> bool:
        start.wait()
        return storage.write_file("a.mp4", source, exclusive=True)

    with ThreadPoolExecutor(len(sources)) as pool:
        created = list(pool.map(write, sources))
    assert created.count(True) == 1
    winner = sources[created.index(True)]
    assert storage.read_bytes("a.mp4") == winner.read_bytes()
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["a.mp4"]


# A child that writes `size` bytes from a pipe into LocalStorage; `limit` caps the size of
# any file it writes (RLIMIT_FSIZE), and it reports the outcome on stdout.
WRITER = """
import resource, sys
from pathlib import Path
from storage import LocalStorage, StorageError
limit = int(sys.argv[3])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    print(LocalStorage(sys.argv[1]).write_file("v.mp4", Path(sys.argv[2]), exclusive=True))
except StorageError as exc:
    print(f"{exc} | retryable={exc.retryable}")
"""


def _writer(dest: Path, source: Path, limit: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(dest), str(source), str(limit)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def test_a_copy_that_fails_mid_file_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    source = tmp_path / "big.mp4"
    source.write_bytes(b"\x07" * 3_000_000)
    writer = _writer(tmp_path / "dest", source, limit=1_000_000)  # fails after 1 MB
    out, _ = writer.communicate(timeout=60)
    assert out.strip() == f"cannot write {tmp_path}/dest/v.mp4: File too large | retryable=False"
    assert list((tmp_path / "dest").iterdir()) == []


def test_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    pipes, writers = [], []
    for name in ("killed", "alive"):
        pipes.append(tmp_path / name)
        os.mkfifo(pipes[-1])
        writers.append(_writer(dest / name, pipes[-1]))
    feeds = [open(pipe, "wb") for pipe in pipes]  # noqa: SIM115 - closed below
    for feed in feeds:
        feed.write(b"\x01" * 100_000)  # half a video: each writer now waits for more
        feed.flush()
    temporaries = [_wait_for_one(dest / name, ".t2v-v.mp4.*.tmp") for name in ("killed", "alive")]
    writers[0].kill()
    writers[0].wait()
    feeds[0].close()
    for temporary in temporaries:  # as if both were left an hour ago
        os.utime(temporary, (time.time() - 3600,) * 2)

    assert LocalStorage(dest / "killed").remove_dead_temporaries() == (temporaries[0].name,)
    assert LocalStorage(dest / "alive").remove_dead_temporaries() == ()
    assert not temporaries[0].exists() and temporaries[1].exists()
    feeds[1].close()  # the live writer finishes and publishes its whole file
    out, _ = writers[1].communicate(timeout=60)
    assert out.strip() == "True"
    assert (dest / "alive" / "v.mp4").read_bytes() == b"\x01" * 100_000
    assert sorted(p.name for p in (dest / "alive").iterdir()) == ["v.mp4"]


def test_fresh_temporaries_are_kept_whoever_holds_them(tmp_path: Path) -> None:
    (tmp_path / ".t2v-v.mp4.abcd1234.tmp").write_bytes(b"just created, not yet locked")
    assert LocalStorage(tmp_path).remove_dead_temporaries() == ()
    removed = LocalStorage(tmp_path).remove_dead_temporaries(older_than=0)
    assert removed == (".t2v-v.mp4.abcd1234.tmp",)


def test_only_t2v_temporaries_at_the_top_are_swept(tmp_path: Path) -> None:
    # `--out ~` once swept a home folder and deleted project/.settings.json.tmp.
    theirs = [
        tmp_path / ".settings.json.tmp",
        tmp_path / "project" / ".settings.json.tmp",
        tmp_path / "project" / ".t2v-v.mp4.abcd1234.tmp",  # t2v writes keys at the top only
    ]
    ours = [tmp_path / ".t2v-v.mp4.abcd1234.tmp", tmp_path / ".t2v" / ".t2v-v.json.ab12.tmp"]
    for path in [*theirs, *ours]:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 3600,) * 2)
    (tmp_path / ".t2v-link.ab12.tmp").symlink_to(theirs[0])
    removed = LocalStorage(tmp_path).remove_dead_temporaries()
    assert removed == (".t2v-v.mp4.abcd1234.tmp", ".t2v/.t2v-v.json.ab12.tmp")
    assert all(path.exists() for path in theirs)
    assert not any(path.exists() for path in ours)
    assert (tmp_path / ".t2v-link.ab12.tmp").is_symlink()


def test_stat_tells_files_from_links_folders_and_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    source = tmp_path / "src.bin"
    source.write_bytes(b"video")
    assert storage.stat("a.mp4") is None
    storage.write_file("a.mp4", source, exclusive=True, metadata={"t2v-sha256": "ab"})
    assert storage.stat("a.mp4") == StoredObject(5, True, {"t2v-sha256": "ab"})
    storage.write_bytes("plain.mp4", b"no metadata")
    assert storage.stat("plain.mp4") == StoredObject(11, True, {})
    (tmp_path / "link.mp4").symlink_to(tmp_path / "a.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (tmp_path / "folder.mp4").mkdir()
    for key in ("link.mp4", "dangling.mp4", "folder.mp4"):
        found = storage.stat(key)
        assert found is not None and not found.regular and found.metadata == {}
    assert storage.read_range("a.mp4", 1, 3) == b"ide"
    assert storage.read_range("a.mp4", 3, 100) == b"eo"
    with pytest.raises(StorageError, match="cannot read"):
        storage.read_range("link.mp4", 0, 4)  # never read through a link


def test_write_many_writes_every_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "dest")
    storage.write_bytes("a.csv", b"old")
    storage.write_many({"a.csv": b"new a", "b.json": b"new b", ".t2v/c.json": b"c"})
    assert storage.read_bytes("a.csv") == b"new a"
    assert storage.read_bytes("b.json") == b"new b"
    assert storage.read_bytes(".t2v/c.json") == b"c"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == [".t2v", "a.csv", "b.json"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real full disk (needs root and mount)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_leaves_every_old_file_of_a_set(small_disk: Path) -> None:
    # On a full disk results.csv was written but results.json and index.html were not.
    storage = LocalStorage(small_disk)
    old = {"results.csv": b"old csv", "results.json": b"old json", "index.html": b"old html"}
    storage.write_many(old)
    new = {"results.csv": b"c" * 1000, "results.json": b"j" * 2_000_000, "index.html": b"h"}
    with pytest.raises(StorageError, match=r"cannot write .*results\.json: No space") as error:
        storage.write_many(new)
    assert not error.value.retryable  # a full disk does not empty itself within seconds
    assert {path.name: path.read_bytes() for path in small_disk.iterdir()} == old


def test_a_file_where_the_folder_should_be_is_not_retried(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"a file")
    with pytest.raises(StorageError, match=r"cannot write .*: File exists") as error:
        LocalStorage(tmp_path / "out").write_bytes("a.csv", b"x")
    assert not error.value.retryable


def test_check_writable_accepts_a_new_folder_and_leaves_nothing(tmp_path: Path) -> None:
    LocalStorage(tmp_path / "new" / "out").check_writable(1000)
    assert list((tmp_path / "new" / "out").iterdir()) == []


@pytest.mark.parametrize("where", ["a file", "/dev/null"])
def test_check_writable_refuses_what_is_not_a_folder(tmp_path: Path, where: str) -> None:
    root = tmp_path / "file.txt" if where == "a file" else Path(where)
    if where == "a file":
        root.write_bytes(b"x")
    with pytest.raises(StorageError, match=f"^{root} is not a folder: give --out a folder"):
        LocalStorage(root).check_writable(0)


def test_check_writable_refuses_a_read_only_folder(small_disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(StorageError, match="Read-only file system") as error:
        LocalStorage(small_disk).check_writable(0)
    assert not error.value.retryable


def test_check_writable_refuses_too_little_space(small_disk: Path) -> None:
    with pytest.raises(StorageError, match=f"^{small_disk} has [0-9,]+ bytes free but the first"):
        LocalStorage(small_disk).check_writable(2_000_000)


@pytest.mark.parametrize(
    "uri",
    ["s3:/bkt/renders", "s3:bkt", "S3://bkt/x", "s3//bkt/x", "gs://b/k", "http://h/x", "s3a://b"],
)
def test_locations_that_look_like_uris_are_refused(uri: str) -> None:
    with pytest.raises(StorageError, match=f"unsupported location '{uri}': use a local path"):
        open_storage(uri)


@pytest.mark.parametrize("uri", ["out", "./out:v2", "/tmp/out", "~/out", "file:///tmp/out"])
def test_plain_local_paths_still_work(uri: str) -> None:
    assert isinstance(open_storage(uri), LocalStorage)


def _wait_for_one(folder: Path, pattern: str, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"nothing matched {pattern} in {folder} within {timeout} s")


def test_a_writer_killed_between_the_file_and_its_record_leaves_a_file_t2v_still_owns(
    tmp_path: Path,
) -> None:
    # The record is written first, under a name of the writer's own with the file's sha256,
    # and for good once the file is in place: the next reader adopts the pending record of a
    # writer killed between the two. Before, the file counted as someone else's for ever.
    storage, source = LocalStorage(tmp_path / "dest"), tmp_path / "video.mp4"
    source.write_bytes(b"frames" * 1000)
    metadata = {"t2v-bytes": "6000", "t2v-note": "recorded"}
    assert storage.write_file("a.mp4", source, exclusive=True, metadata=metadata)
    records = tmp_path / "dest" / ".t2v"
    assert sorted(p.name for p in records.iterdir() if p.is_file()) == ["a.mp4.json"]
    # The state of a kill after the file was placed: only the pending record.
    (records / "a.mp4.json").unlink()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    pending = {"sha256": digest, "metadata": metadata}
    (records / "a.mp4.json.1f2e3d.pending").write_text(json.dumps(pending))
    found = storage.stat("a.mp4")
    assert found is not None and found.metadata == metadata
    assert sorted(p.name for p in records.iterdir() if p.is_file()) == ["a.mp4.json"]
    # A pending record of other bytes (a writer that lost the race, then died) vouches for
    # nothing.
    (tmp_path / "dest" / "b.mp4").write_bytes(b"someone else's")
    (records / "b.mp4.json.9a8b7c.pending").write_text(json.dumps(pending))
    found = storage.stat("b.mp4")
    assert found is not None and found.metadata == {}


@pytest.mark.parametrize("metadata", ["a string", ["a", "list"], 7, None])
def test_a_pending_record_whose_metadata_is_not_an_object_is_ignored(
    tmp_path: Path, metadata: object
) -> None:
    dest = tmp_path / "dest"
    (dest / ".t2v").mkdir(parents=True)
    (dest / "a.mp4").write_bytes(b"frames")
    pending = {"sha256": hashlib.sha256(b"frames").hexdigest(), "metadata": metadata}
    (dest / ".t2v" / "a.mp4.json.1f2e3d.pending").write_text(json.dumps(pending))
    found = LocalStorage(dest).stat("a.mp4")
    assert found is not None and found.metadata == {}


def _left_an_hour_ago(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (time.time() - 3600,) * 2)
    return path


def test_temporaries_under_claims_and_shards_of_dead_writers_are_swept(tmp_path: Path) -> None:
    ours = [
        _left_an_hour_ago(tmp_path / ".t2v" / "claims" / ".t2v-k.mp4.json.ab12.tmp"),
        _left_an_hour_ago(tmp_path / ".t2v" / "shards" / "run-1" / ".t2v-3.json.cd34.tmp"),
    ]
    theirs = _left_an_hour_ago(tmp_path / ".t2v" / "shards" / "run-1" / "notes.tmp")
    removed = LocalStorage(tmp_path).remove_dead_temporaries()
    assert removed == (
        ".t2v/claims/.t2v-k.mp4.json.ab12.tmp",
        ".t2v/shards/run-1/.t2v-3.json.cd34.tmp",
    )
    assert not any(path.exists() for path in ours) and theirs.exists()


def test_pending_records_of_dead_writers_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    records = tmp_path / ".t2v"
    (tmp_path / "placed.mp4").write_bytes(b"frames")
    digest = hashlib.sha256(b"frames").hexdigest()
    record = json.dumps({"sha256": digest, "metadata": {"t2v-bytes": "6"}}).encode()
    never_placed = _left_an_hour_ago(records / "lost.mp4.json.1a.pending", record)
    placed = _left_an_hour_ago(records / "placed.mp4.json.2b.pending", record)
    fresh = records / "new.mp4.json.3c.pending"
    fresh.write_bytes(record)
    live = _left_an_hour_ago(records / "slow.mp4.json.4d.pending", record)
    with live.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a writer still copying holds it
        removed = LocalStorage(tmp_path).remove_dead_temporaries()
    assert removed == (".t2v/lost.mp4.json.1a.pending", ".t2v/placed.mp4.json.2b.pending")
    assert not never_placed.exists() and not placed.exists()
    assert fresh.exists() and live.exists()
    # The placed file's writer died before recording it: adopted, not forgotten.
    assert json.loads((records / "placed.mp4.json").read_text()) == {"t2v-bytes": "6"}
