"""The one small interface every storage backend implements."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol


class Storage(Protocol):
    """Bytes under one root (a folder or a bucket prefix), addressed by relative keys."""

    def uri(self, key: str = "") -> str:
        """The full location of `key`, for messages and manifests."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """Return the object's bytes; `StorageError` if it is missing or unreadable."""
        ...

    def open_read(self, key: str, max_bytes: int | None = None) -> AbstractContextManager[BinaryIO]:
        """The object's bytes as a stream, closed on leaving the `with`; `StorageError` if it
        is missing, is not a regular file, or is known before reading to be larger than
        `max_bytes`, and for failures met while the stream is read inside the `with`."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store `data` so that readers see the old object or the whole new one, never a part."""
        ...

    def write_file(self, key: str, source: Path, *, exclusive: bool = False) -> bool:
        """Store a local file's bytes atomically, like `write_bytes`; True when stored.

        With `exclusive` the write only creates: when `key` already holds an object,
        even one another writer stored a moment ago, it is left as it is and the
        answer is False. Of writers racing for one key, exactly one gets True.
        """
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, in sorted order."""
        ...

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A URL that reads `key` without credentials for `expires_in` seconds."""
        ...
