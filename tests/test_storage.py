from __future__ import annotations

from pathlib import Path

import pytest

from storage import LocalStorage, StorageError, open_location, open_storage


def test_write_read_exists_and_list(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "dest")
    assert not storage.exists("a.mp4")
    assert list(storage.list()) == []
    storage.write_bytes("b.txt", b"bee")
    storage.write_bytes("sub/a.mp4", b"a")
    assert storage.read_bytes("b.txt") == b"bee"
    assert storage.exists("sub/a.mp4")
    assert list(storage.list()) == ["b.txt", "sub/a.mp4"]
    assert list(storage.list("sub/")) == ["sub/a.mp4"]
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
