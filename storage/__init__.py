"""Where bytes live: one small interface over local folders and s3:// URIs."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from storage.base import Storage, StoredObject
from storage.errors import StorageError, T2VError
from storage.local import LocalStorage
from storage.s3 import S3Storage, split_s3_uri

# `scheme:/…`, any scheme, or `s3:x`/`s3//x` and other storage schemes without slashes.
URI_LOOKALIKE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*:/|(s3[an]?|gs|gcs|https?|ftp|file|az|abfss?|wasbs?)(:|//)",
    re.IGNORECASE,
)

__all__ = [
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "StoredObject",
    "T2VError",
    "open_location",
    "open_storage",
]


def open_storage(uri: str) -> Storage:
    """The backend for a destination: `s3://bucket/prefix` or a local folder."""
    if uri.startswith("s3://"):
        return S3Storage(*split_s3_uri(uri))
    return LocalStorage(_local_path(uri))


def open_location(uri: str) -> tuple[Storage, str]:
    """Split the location of one object into its parent's storage and its key."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        prefix, _, name = key.rpartition("/")
        if not name or uri.endswith("/"):
            raise StorageError(f"{uri!r} names a bucket or a prefix, not an object")
        return S3Storage(bucket, prefix), name
    path = PurePosixPath(_local_path(uri))
    if not path.name:
        raise StorageError(f"{uri!r} names a folder, not a file")
    return open_storage(str(path.parent)), path.name


def _local_path(uri: str) -> str:
    """A local path, refusing what looks like a URI: a mistyped `s3://` would otherwise
    become a local folder named `s3:` (`--out s3:/bucket/x`)."""
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    if URI_LOOKALIKE.match(uri):
        raise StorageError(
            f"unsupported location {uri!r}: use a local path or s3://bucket/prefix "
            "(lower-case s3, two slashes)"
        )
    return uri
