"""Removing what killed t2v writers left in a local destination, and nothing else."""

from __future__ import annotations

import fcntl
import functools
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from storage.atomic import TEMPORARY_PREFIX
from storage.errors import StorageError
from storage.records import PENDING_SUFFIX, RECORDS

# A temporary file this old whose writer holds no lock on it was left by a killed writer.
# The age covers the instant between creating a temporary and locking it.
STALE_AFTER_S = 60.0


def remove_dead_temporaries(
    root: Path, adopt: Callable[[str], object], older_than: float = STALE_AFTER_S
) -> tuple[str, ...]:
    """Delete what t2v writers killed mid-write left: temporary files in `root`, `.t2v`,
    `.t2v/claims` and `.t2v/shards/<run>`, and pending records in `.t2v`; nothing else,
    and nothing deeper, is ever touched. A pending record's file is offered to `adopt`
    (the key's `stat`) first, so a file placed but not recorded stays t2v's.

    A live writer holds a lock on its temporary file until it is renamed, and on its
    pending record until the file is recorded, so one that can be locked, and is older
    than `older_than` seconds, is dead, even with another run writing into the same
    folder. Returns the keys removed.
    """
    records = root / RECORDS
    shards = records / "shards"
    found = shards.iterdir() if shards.is_dir() else ()
    runs = [path for path in found if path.is_dir() and not path.is_symlink()]
    folders = [root, records, records / "claims", *runs]
    removed: set[str] = set()
    for folder in folders:
        for path in folder.glob(f"{TEMPORARY_PREFIX}*.tmp") if folder.is_dir() else ():
            if remove_if_dead(path, older_than):
                removed.add(path.relative_to(root).as_posix())
    for path in records.glob(f"*.json.*{PENDING_SUFFIX}") if records.is_dir() else ():
        adopt_or_remove = functools.partial(_adopt_or_remove, adopt=adopt)
        if _when_dead(path, older_than, adopt_or_remove):
            removed.add(path.relative_to(root).as_posix())
    return tuple(sorted(removed))


def remove_if_dead(path: Path, older_than: float) -> bool:
    """Delete `path` if it is a regular file older than `older_than` seconds that no live
    writer holds a lock on; whether it did."""
    return _when_dead(path, older_than, Path.unlink)


def _adopt_or_remove(pending: Path, adopt: Callable[[str], object]) -> None:
    try:
        adopt(pending.name.rpartition(".json.")[0])  # takes it when it vouches for the file
    except StorageError:
        return  # the file cannot be read now: a later sweep decides
    pending.unlink(missing_ok=True)


def _when_dead(path: Path, older_than: float, action: Callable[[Path], object]) -> bool:
    """Run `action(path)` holding the lock of `path` if it is a regular file older than
    `older_than` seconds that no live writer holds locked; whether it ran."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            found = os.fstat(handle.fileno())
            if not stat.S_ISREG(found.st_mode) or time.time() - found.st_mtime < older_than:
                return False
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            action(path)
    except OSError:
        return False  # locked by a live writer, gone already, or a symlink
    return True
