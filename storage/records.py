"""The record beside each local file stored with metadata: `.t2v/<key>.json`, written
once the file is in place, after a pending record (`.t2v/<key>.json.<writer>.pending`,
holding the file's sha256) that lets a reader adopt the file of a writer killed between
placing it and recording it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from storage.atomic import os_error, write_atomically

# The folder under the root that holds what t2v records, e.g. each video's metadata.
RECORDS = ".t2v"
PENDING_SUFFIX = ".pending"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file at `path` (where the file system has locks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise os_error("lock", path, exc) from exc
    with os.fdopen(fd, "rb") as handle:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def record_key(key: str) -> str:
    return f"{RECORDS}/{key}.json"


def read_record(path: Path) -> dict[str, str]:
    """The metadata recorded at `path`; none for a missing, torn or foreign record."""
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise os_error("read", path, exc) from exc
    except ValueError:
        return {}  # a torn or foreign record vouches for nothing
    if not isinstance(record, dict):
        return {}
    return {str(name): str(value) for name, value in record.items()}


def pending_records(record: Path) -> list[Path]:
    """The pending records of every writer of `record`'s file."""
    folder, prefix = record.parent, f"{record.name}."
    return [
        path
        for path in (folder.iterdir() if folder.is_dir() else ())
        if path.name.startswith(prefix) and path.name.endswith(PENDING_SUFFIX)
    ]


def adopt_pending(record: Path, file: Path) -> dict[str, str]:
    """The metadata of a writer killed after placing `file` and before writing `record`, if
    its pending record holds the file's sha256; `record` is written then."""
    pending = pending_records(record)
    digest = file_sha256(file) if pending else ""
    for path in pending:
        try:
            found = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(found, dict) or not isinstance(found.get("metadata"), dict):
            continue  # not a record t2v wrote: it vouches for nothing
        if found.get("sha256") == digest:
            metadata = {str(k): str(v) for k, v in found["metadata"].items()}
            write_record(record, metadata)
            path.unlink(missing_ok=True)
            return metadata
    return {}


def write_record(path: Path, metadata: Mapping[str, str]) -> None:
    data = json.dumps(dict(metadata), sort_keys=True).encode()
    write_atomically(path, lambda handle: handle.write(data))


def pending_bytes(sha256: str, metadata: Mapping[str, str]) -> bytes:
    """A record before its file is in place, with the file's sha256 to recognise it by."""
    return json.dumps({"sha256": sha256, "metadata": dict(metadata)}, sort_keys=True).encode()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise os_error("read", path, exc) from exc
    return digest.hexdigest()
