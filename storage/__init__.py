"""Where bytes live: one small interface over local folders (and, later, s3:// URIs)."""

from __future__ import annotations

from pathlib import PurePosixPath

from storage.base import Storage
from storage.errors import StorageError, T2VError
from storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StorageError", "T2VError", "open_location", "open_storage"]


def open_storage(uri: str) -> Storage:
    """The backend for a destination: a local folder (more schemes plug in here)."""
    scheme, sep, _ = uri.partition("://")
    if sep and scheme != "file":
        raise StorageError(f"unsupported location {uri!r}: only local paths are supported")
    return LocalStorage(uri.removeprefix("file://"))


def open_location(uri: str) -> tuple[Storage, str]:
    """Split the location of one object into its parent's storage and its key."""
    path = PurePosixPath(uri.removeprefix("file://"))
    if not path.name:
        raise StorageError(f"{uri!r} names a folder, not a file")
    return open_storage(str(path.parent)), path.name
