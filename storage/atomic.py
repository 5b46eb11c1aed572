"""Atomic placement of local files: a locked temporary beside the target, fsynced, then
renamed (replace) or hard-linked (create-only) into place."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from storage.errors import StorageError

# Every temporary file t2v makes starts so: the sweep removes these and nothing else.
TEMPORARY_PREFIX = ".t2v-"


@contextlib.contextmanager
def temporary(path: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A new, locked temporary file beside `path`, removed on exit unless renamed.

    It lives in the destination folder so the rename stays on one file system and is
    atomic; readers see the old file or the whole new one. The lock is held until the
    file is in place, so the sweep leaves it alone; where the file system has no locks,
    the sweep cannot lock it either.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f"{TEMPORARY_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent
    )
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield handle, tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(
    path: Path, fill: Callable[[BinaryIO], object], exclusive: bool = False
) -> bool:
    """Fill a temporary and put it at `path`; with `exclusive`, only where nothing is
    there yet (False when something is)."""
    try:
        with temporary(path) as (handle, tmp):
            fill(handle)
            seal(handle, tmp)
            if not exclusive:
                os.replace(tmp, path)
                return True
            # A hard link is created whole or not at all, and never over an existing
            # file: of two writers racing for one key, exactly one wins.
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
    except OSError as exc:
        raise os_error("write", path, exc) from exc


def write_set(files: dict[Path, bytes]) -> None:
    """Every temporary is written before the first rename: a full disk or a failed write
    leaves every old file as it was."""
    path = Path()
    try:
        with contextlib.ExitStack() as stack:
            staged = []
            for path, data in files.items():
                handle, tmp = stack.enter_context(temporary(path))
                handle.write(data)
                seal(handle, tmp)
                staged.append((tmp, path))
            for tmp, path in staged:
                os.replace(tmp, path)
    except OSError as exc:
        raise os_error("write", path, exc) from exc


def seal(handle: BinaryIO, tmp: Path) -> None:
    """Make a written temporary durable and readable by all, ready to be renamed."""
    handle.flush()
    os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)


def os_error(action: str, path: Path, exc: OSError) -> StorageError:
    """One sentence for a failed file operation; retryable unless it stays so."""
    # A missing file, a refused permission, a file where a folder should be, a read-only
    # mount, a full disk or quota stay so for longer than a retry waits; other faults (a
    # network mount that hiccups) may pass.
    permanent = isinstance(
        exc,
        FileNotFoundError
        | FileExistsError
        | PermissionError
        | IsADirectoryError
        | NotADirectoryError,
    ) or exc.errno in (errno.EFBIG, errno.EROFS, errno.ENOSPC, errno.EDQUOT)
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}", retryable=not permanent)
