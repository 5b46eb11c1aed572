"""The local-folder backend: the `Storage` protocol over files under a root folder.

Each mechanism has its module: atomic placement (`atomic`), conditional writes ordered by
flock (`conditions`), the record beside each video (`records`), the sweep (`sweep`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from storage import conditions, records, sweep
from storage.atomic import os_error, temporary, write_atomically, write_set
from storage.base import StoredObject
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
            raise os_error("read", path, exc) from exc

    @contextlib.contextmanager
    def open_read(self, key: str, max_bytes: int | None = None) -> Iterator[BinaryIO]:
        path = self.path(key)
        try:
            # Non-blocking, so that a FIFO is refused at once instead of waiting for a writer.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise os_error("read", path, exc) from exc
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
                raise os_error("read", path, exc) from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        write_atomically(self.path(key), lambda handle: handle.write(data))

    def write_file(
        self,
        key: str,
        source: Path,
        *,
        exclusive: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        """The metadata is written first, under a name of this writer's own, and renamed to
        `.t2v/<key>.json` once the file is in place: a writer killed between the two leaves
        a pending record that `stat` adopts when it matches the file."""

        def copy(handle: BinaryIO) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, handle, length=1 << 20)

        path = self.path(key)
        if metadata is None:
            return write_atomically(path, copy, exclusive)
        record = records.record_key(key)
        pending = f"{record}.{uuid.uuid4().hex}{records.PENDING_SUFFIX}"
        self.write_bytes(pending, records.pending_bytes(records.file_sha256(source), metadata))
        try:
            # Locked until the file is recorded: the sweep leaves a live writer's alone.
            with records.locked(self.path(pending)):
                if not write_atomically(path, copy, exclusive):
                    return False
                try:
                    records.write_record(self.path(record), metadata)
                except StorageError:
                    # Without its record the file would count as someone else's for ever.
                    path.unlink(missing_ok=True)
                    raise
        finally:
            self.path(pending).unlink(missing_ok=True)
        return True

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        return conditions.read_versioned(self.path(key))

    def write_if(self, key: str, data: bytes, expected: str | None) -> str | None:
        return conditions.write_if(self.path(key), data, expected)

    def delete_if(self, key: str, expected: str) -> bool:
        return conditions.delete_if(self.path(key), expected)

    def write_many(self, files: Mapping[str, bytes]) -> None:
        write_set({self.path(key): data for key, data in files.items()})

    def names(self, folder: str) -> list[str]:
        path = self.path(folder)
        try:
            return sorted(p.name for p in path.iterdir() if p.is_file() and not p.is_symlink())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise os_error("list", path, exc) from exc

    def stat(self, key: str) -> StoredObject | None:
        path = self.path(key)
        try:
            found = path.lstat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_error("check", path, exc) from exc
        regular = stat.S_ISREG(found.st_mode)
        if not regular:
            return StoredObject(found.st_size, regular, {})
        record = self.path(records.record_key(key))
        metadata = records.read_record(record) or records.adopt_pending(record, path)
        return StoredObject(found.st_size, regular, metadata)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        path = self.path(key)
        try:
            # O_NOFOLLOW: a symlink at a key is never read through.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                handle.seek(start)
                return handle.read(length)
        except OSError as exc:
            raise os_error("read", path, exc) from exc

    def check_writable(self, free_bytes: int) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise StorageError(f"{root} is not a folder: give --out a folder for the videos")
        try:
            root.mkdir(parents=True, exist_ok=True)
            with temporary(root / "probe"):
                pass
            space = os.statvfs(root)
        except OSError as exc:
            raise os_error("write into", root, exc) from exc
        free = space.f_bavail * space.f_frsize
        if free < free_bytes:
            raise StorageError(
                f"{root} has {free:,} bytes free but the first batch needs about "
                f"{free_bytes:,}: free some space or choose another --out"
            )

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def presigned_url(self, key: str, expires_in: int) -> str:
        raise StorageError(
            f"{self.root} is a local folder: only s3:// locations have presigned URLs"
        )

    def remove_dead_temporaries(self, older_than: float = sweep.STALE_AFTER_S) -> tuple[str, ...]:
        """What t2v writers killed mid-write left here (`sweep.remove_dead_temporaries`)."""
        return sweep.remove_dead_temporaries(self.root, self.stat, older_than)
