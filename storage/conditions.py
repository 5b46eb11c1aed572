"""Conditional writes of small local files, ordered between processes by an flock on
one lock file per folder; a version is the bytes' digest, as S3's ETag is for one PUT."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from storage.atomic import os_error, write_atomically

# In each folder that conditional writes touch: an empty file whose lock orders them. It is
# never deleted, since a process may have it open to lock it.
CONDITIONS_LOCK = ".t2v-conditions.lock"


def version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_versioned(path: Path) -> tuple[bytes, str] | None:
    """The file's bytes and version, never through a symlink; None when it is missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error("read", path, exc) from exc
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read()
        except OSError as exc:
            raise os_error("read", path, exc) from exc
    return data, version(data)


def write_if(path: Path, data: bytes, expected: str | None) -> str | None:
    """Under the folder's lock: a create by hard link, or a compare and then a rename."""
    with conditions_locked(path.parent):
        if expected is None:
            created = write_atomically(path, lambda handle: handle.write(data), True)
            return version(data) if created else None
        current = read_versioned(path)
        if current is None or current[1] != expected:
            return None
        write_atomically(path, lambda handle: handle.write(data))
        return version(data)


def delete_if(path: Path, expected: str) -> bool:
    with conditions_locked(path.parent):
        current = read_versioned(path)
        if current is None or current[1] != expected:
            return False
        try:
            path.unlink()
        except OSError as exc:
            raise os_error("delete", path, exc) from exc
        return True


@contextlib.contextmanager
def conditions_locked(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of `folder`: conditional writes there take turns.

    flock orders processes on this machine; on a network mount it holds only where the
    file system forwards locks to its server (NFSv4 does, as POSIX locks)."""
    lock = folder / CONDITIONS_LOCK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise os_error("lock", lock, exc) from exc
    with os.fdopen(fd, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:
            raise os_error("lock", lock, exc) from exc
        yield  # closing the file releases the lock
