"""Where bytes live: one small interface over local folders and s3:// URIs."""

from __future__ import annotations

from pathlib import PurePosixPath

from storage.base import Storage
from storage.errors import StorageError, T2VError
from storage.local import LocalStorage
from storage.s3 import S3Storage, split_s3_uri

__all__ = [
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "T2VError",
    "open_location",
    "open_storage",
]


def open_storage(uri: str) -> Storage:
    """The backend for a destination: `s3://bucket/prefix` or a local folder."""
    scheme, sep, _ = uri.partition("://")
    if scheme == "s3":
        return S3Storage(*split_s3_uri(uri))
    if sep and scheme != "file":
        raise StorageError(f"unsupported location {uri!r}: use a local path or s3://bucket/prefix")
    return LocalStorage(uri.removeprefix("file://"))


def open_location(uri: str) -> tuple[Storage, str]:
    """Split the location of one object into its parent's storage and its key."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        prefix, _, name = key.rpartition("/")
        if not name or uri.endswith("/"):
            raise StorageError(f"{uri!r} names a bucket or a prefix, not an object")
        return S3Storage(bucket, prefix), name
    path = PurePosixPath(uri.removeprefix("file://"))
    if not path.name:
        raise StorageError(f"{uri!r} names a folder, not a file")
    return open_storage(str(path.parent)), path.name
