"""Removing what killed t2v writers left in a local destination, and nothing else."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

from storage.atomic import TEMPORARY_PREFIX
from storage.records import RECORDS

# A temporary file this old whose writer holds no lock on it was left by a killed writer.
# The age covers the instant between creating a temporary and locking it.
STALE_AFTER_S = 60.0


def remove_dead_temporaries(root: Path, older_than: float = STALE_AFTER_S) -> tuple[str, ...]:
    """Delete the temporary files that t2v writers killed mid-write left in `root` and its
    `.t2v` folder; nothing else, and nothing deeper, is ever touched.

    A live writer holds a lock on its temporary file until it is renamed, so a temporary
    that can be locked, and is older than `older_than` seconds, is dead, even with another
    run writing into the same folder. Returns the keys removed.
    """
    removed: set[str] = set()
    for folder in (root, root / RECORDS):
        for path in folder.glob(f"{TEMPORARY_PREFIX}*.tmp") if folder.is_dir() else ():
            if remove_if_dead(path, older_than):
                removed.add(path.relative_to(root).as_posix())
    return tuple(sorted(removed))


def remove_if_dead(path: Path, older_than: float) -> bool:
    """Delete `path` if it is a regular file older than `older_than` seconds that no live
    writer holds a lock on; whether it did."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            found = os.fstat(handle.fileno())
            if not stat.S_ISREG(found.st_mode) or time.time() - found.st_mtime < older_than:
                return False
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
    except OSError:
        return False  # locked by a live writer, gone already, or a symlink
    return True
