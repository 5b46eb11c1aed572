"""The local-folder backend: atomic writes by temporary name and rename (or link)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from storage.errors import StorageError

# A temporary file this old whose writer holds no lock on it was left by a killed writer.
# The age covers the instant between creating a temporary and locking it.
STALE_AFTER_S = 60.0


class LocalStorage:
    """Files under a root folder, created on the first write."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()

    def uri(self, key: str = "") -> str:
        return str(self.path(key)) if key else str(self.root)

    def path(self, key: str) -> Path:
        """The file that holds `key`; refuses keys that would escape the root."""
        path = (self.root / key).absolute()
        if key.startswith("/") or ".." in Path(key).parts or not path.is_relative_to(self.root):
            raise StorageError(f"key {key!r} escapes the storage root {self.root}")
        return path

    def read_bytes(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise _error("read", path, exc) from exc

    @contextlib.contextmanager
    def open_read(self, key: str, max_bytes: int | None = None) -> Iterator[BinaryIO]:
        path = self.path(key)
        try:
            # Non-blocking, so that a FIFO is refused at once instead of waiting for a writer.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise _error("read", path, exc) from exc
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode):
                kind = "a folder" if stat.S_ISDIR(found.st_mode) else "a device, pipe or socket"
                raise StorageError(f"cannot read {path}: it is {kind}, not a regular file")
            if max_bytes is not None and found.st_size > max_bytes:
                raise StorageError(
                    f"cannot read {path}: it holds {found.st_size:,} bytes, "
                    f"more than the {max_bytes:,} allowed"
                )
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as handle:
            try:
                yield handle
            except OSError as exc:
                raise _error("read", path, exc) from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        self._write_atomically(key, lambda handle: handle.write(data))

    def write_file(self, key: str, source: Path, *, exclusive: bool = False) -> bool:
        def copy(handle: BinaryIO) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, handle, length=1 << 20)

        return self._write_atomically(key, copy, exclusive)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        yield from sorted(k for k in keys if k.startswith(prefix) and not _is_temporary(k))

    def presigned_url(self, key: str, expires_in: int) -> str:
        raise StorageError(
            f"{self.root} is a local folder: only s3:// locations have presigned URLs"
        )

    def remove_dead_temporaries(self, older_than: float = STALE_AFTER_S) -> tuple[str, ...]:
        """Delete the temporary files that writers killed mid-write left under the root.

        A live writer holds a lock on its temporary file until it is renamed, so a
        temporary that can be locked, and is older than `older_than` seconds, is dead,
        even with another run writing into the same folder. Returns the keys removed.
        """
        removed: set[str] = set()
        for path in self.root.rglob(".*.tmp") if self.root.is_dir() else ():
            try:
                with path.open("rb") as handle:
                    if time.time() - os.fstat(handle.fileno()).st_mtime < older_than:
                        continue
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()
            except OSError:
                continue  # locked by a live writer, or gone already
            removed.add(path.relative_to(self.root).as_posix())
        return tuple(sorted(removed))

    def _write_atomically(
        self, key: str, fill: Callable[[BinaryIO], object], exclusive: bool = False
    ) -> bool:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The temporary file lives in the destination folder so the rename stays on one
            # file system and is atomic; readers see the old file or the whole new one.
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise _error("write", path, exc) from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                # Held until the file is in place: `remove_dead_temporaries` leaves it alone.
                # Where the file system has no locks, that sweep cannot lock it either.
                with contextlib.suppress(OSError):
                    fcntl.flock(handle, fcntl.LOCK_EX)
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
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
            raise _error("write", path, exc) from exc
        finally:
            Path(tmp).unlink(missing_ok=True)


def _error(action: str, path: Path, exc: OSError) -> StorageError:
    # A missing file or a refused permission stays so; other faults (a full disk,
    # a network mount that hiccups) may pass.
    permanent = isinstance(
        exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
    ) or exc.errno in (errno.EFBIG, errno.EROFS)  # too big for a limit, or a read-only mount
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}", retryable=not permanent)


def _is_temporary(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")
