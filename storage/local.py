"""The local-folder backend: atomic writes by temporary name and rename (or link).

Over 250 lines because one class implements the whole `Storage` protocol, with the
create-only, set-at-once and sweep-only-our-temporaries rules a folder needs: one concern.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from storage.base import StoredObject
from storage.errors import StorageError

# A temporary file this old whose writer holds no lock on it was left by a killed writer.
# The age covers the instant between creating a temporary and locking it.
STALE_AFTER_S = 60.0
# Every temporary file t2v makes starts so: the sweep removes these and nothing else.
TEMPORARY_PREFIX = ".t2v-"
# The folder under the root that holds what t2v records, e.g. each video's metadata.
RECORDS = ".t2v"
# In each folder that conditional writes touch: an empty file whose lock orders them. It is
# never deleted, since a process may have it open to lock it.
CONDITIONS_LOCK = ".t2v-conditions.lock"
# A video's record before the video is in place: `.t2v/<key>.json.<writer>.pending`.
PENDING_SUFFIX = ".pending"


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

        if metadata is None:
            return self._write_atomically(key, copy, exclusive)
        pending = f"{self._metadata_key(key)}.{uuid.uuid4().hex}{PENDING_SUFFIX}"
        self.write_bytes(pending, _pending_record(_file_sha256(source), metadata))
        try:
            if not self._write_atomically(key, copy, exclusive):
                return False
            try:
                self.write_bytes(self._metadata_key(key), _record(metadata))
            except StorageError:
                # Without its record the file would count as someone else's for ever.
                self.path(key).unlink(missing_ok=True)
                raise
        finally:
            self.path(pending).unlink(missing_ok=True)
        return True

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _error("read", path, exc) from exc
        with os.fdopen(fd, "rb") as handle:
            try:
                data = handle.read()
            except OSError as exc:
                raise _error("read", path, exc) from exc
        return data, _version(data)

    def write_if(self, key: str, data: bytes, expected: str | None) -> str | None:
        """Under the folder's lock: a create by hard link, or a compare and then a rename."""
        with self._conditions_locked(key):
            if expected is None:
                created = self._write_atomically(key, lambda handle: handle.write(data), True)
                return _version(data) if created else None
            current = self.read_versioned(key)
            if current is None or current[1] != expected:
                return None
            self.write_bytes(key, data)
            return _version(data)

    def delete_if(self, key: str, expected: str) -> bool:
        path = self.path(key)
        with self._conditions_locked(key):
            current = self.read_versioned(key)
            if current is None or current[1] != expected:
                return False
            try:
                path.unlink()
            except OSError as exc:
                raise _error("delete", path, exc) from exc
            return True

    def write_many(self, files: Mapping[str, bytes]) -> None:
        # Every temporary is written before the first rename: a full disk or a failed
        # write leaves every old file as it was.
        path = self.root
        try:
            with contextlib.ExitStack() as stack:
                staged = []
                for key, data in files.items():
                    path = self.path(key)
                    handle, tmp = stack.enter_context(self._temporary(path))
                    handle.write(data)
                    _seal(handle, tmp)
                    staged.append((tmp, path))
                for tmp, path in staged:
                    os.replace(tmp, path)
        except OSError as exc:
            raise _error("write", path, exc) from exc

    def stat(self, key: str) -> StoredObject | None:
        path = self.path(key)
        try:
            found = path.lstat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _error("check", path, exc) from exc
        regular = stat.S_ISREG(found.st_mode)
        if not regular:
            return StoredObject(found.st_size, regular, {})
        metadata = self._metadata(key) or self._adopt_pending(key)
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
            raise _error("read", path, exc) from exc

    def check_writable(self, free_bytes: int) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise StorageError(f"{root} is not a folder: give --out a folder for the videos")
        try:
            root.mkdir(parents=True, exist_ok=True)
            with self._temporary(root / "probe"):
                pass
            space = os.statvfs(root)
        except OSError as exc:
            raise _error("write into", root, exc) from exc
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

    def remove_dead_temporaries(self, older_than: float = STALE_AFTER_S) -> tuple[str, ...]:
        """Delete the temporary files that t2v writers killed mid-write left in the root
        and its `.t2v` folder; nothing else, and nothing deeper, is ever touched.

        A live writer holds a lock on its temporary file until it is renamed, so a
        temporary that can be locked, and is older than `older_than` seconds, is dead,
        even with another run writing into the same folder. Returns the keys removed.
        """
        removed: set[str] = set()
        for folder in (self.root, self.root / RECORDS):
            for path in folder.glob(f"{TEMPORARY_PREFIX}*.tmp") if folder.is_dir() else ():
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                    with os.fdopen(fd, "rb") as handle:
                        found = os.fstat(handle.fileno())
                        if not stat.S_ISREG(found.st_mode):
                            continue
                        if time.time() - found.st_mtime < older_than:
                            continue
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        path.unlink()
                except OSError:
                    continue  # locked by a live writer, gone already, or a symlink
                removed.add(path.relative_to(self.root).as_posix())
        return tuple(sorted(removed))

    def _metadata_key(self, key: str) -> str:
        return f"{RECORDS}/{key}.json"

    def _adopt_pending(self, key: str) -> dict[str, str]:
        """The metadata of a writer killed after placing `key`'s file and before writing its
        record, if its pending record holds the file's sha256; the record is written then."""
        folder = self.path(self._metadata_key(key)).parent
        prefix = f"{Path(self._metadata_key(key)).name}."
        pending = [
            path
            for path in (folder.iterdir() if folder.is_dir() else ())
            if path.name.startswith(prefix) and path.name.endswith(PENDING_SUFFIX)
        ]
        digest = _file_sha256(self.path(key)) if pending else ""
        for path in pending:
            try:
                record = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("sha256") == digest:
                metadata = {str(k): str(v) for k, v in dict(record.get("metadata", {})).items()}
                self.write_bytes(self._metadata_key(key), _record(metadata))
                path.unlink(missing_ok=True)
                return metadata
        return {}

    def _metadata(self, key: str) -> dict[str, str]:
        path = self.path(self._metadata_key(key))
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise _error("read", path, exc) from exc
        except ValueError:
            return {}  # a torn or foreign record vouches for nothing
        if not isinstance(record, dict):
            return {}
        return {str(name): str(value) for name, value in record.items()}

    @contextlib.contextmanager
    def _conditions_locked(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock of `key`'s folder: conditional writes there take turns.

        flock orders processes on this machine; on a network mount it holds only where the
        file system forwards locks to its server (NFSv4 does, as POSIX locks)."""
        folder = self.path(key).parent
        lock = folder / CONDITIONS_LOCK
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise _error("lock", lock, exc) from exc
        with os.fdopen(fd, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError as exc:
                raise _error("lock", lock, exc) from exc
            yield  # closing the file releases the lock

    @contextlib.contextmanager
    def _temporary(self, path: Path) -> Iterator[tuple[BinaryIO, Path]]:
        """A new, locked temporary file beside `path`, removed on exit unless renamed.

        It lives in the destination folder so the rename stays on one file system and is
        atomic; readers see the old file or the whole new one. The lock is held until
        the file is in place: `remove_dead_temporaries` leaves it alone. Where the file
        system has no locks, that sweep cannot lock it either.
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

    def _write_atomically(
        self, key: str, fill: Callable[[BinaryIO], object], exclusive: bool = False
    ) -> bool:
        path = self.path(key)
        try:
            with self._temporary(path) as (handle, tmp):
                fill(handle)
                _seal(handle, tmp)
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


def _version(data: bytes) -> str:
    """A local object's version: its bytes' digest, as S3's ETag is for a single PUT."""
    return hashlib.sha256(data).hexdigest()


def _seal(handle: BinaryIO, tmp: Path) -> None:
    """Make a written temporary durable and readable by all, ready to be renamed."""
    handle.flush()
    os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)


def _error(action: str, path: Path, exc: OSError) -> StorageError:
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


def _record(metadata: Mapping[str, str]) -> bytes:
    return json.dumps(dict(metadata), sort_keys=True).encode()


def _pending_record(sha256: str, metadata: Mapping[str, str]) -> bytes:
    """A record before its file is in place, with the file's sha256 to recognise it by."""
    return json.dumps({"sha256": sha256, "metadata": dict(metadata)}, sort_keys=True).encode()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise _error("read", path, exc) from exc
    return digest.hexdigest()
