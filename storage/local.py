"""The local-folder backend: atomic writes by temporary name and rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from storage.errors import StorageError


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

    def write_bytes(self, key: str, data: bytes) -> None:
        self._write_atomically(key, lambda handle: handle.write(data))

    def write_file(self, key: str, source: Path) -> None:
        def copy(handle: BinaryIO) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, handle, length=1 << 20)

        self._write_atomically(key, copy)

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

    def _write_atomically(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
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
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise _error("write", path, exc) from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _error(action: str, path: Path, exc: OSError) -> StorageError:
    # A missing file or a refused permission stays so; other faults (a full disk,
    # a network mount that hiccups) may pass.
    permanent = isinstance(
        exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
    )
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}", retryable=not permanent)


def _is_temporary(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")
