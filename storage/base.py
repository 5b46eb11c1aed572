"""The one small interface every storage backend implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    """Bytes under one root (a folder or a bucket prefix), addressed by relative keys."""

    def uri(self, key: str = "") -> str:
        """The full location of `key`, for messages and manifests."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """Return the object's bytes; `StorageError` if it is missing or unreadable."""
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

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A URL that reads `key` without credentials for `expires_in` seconds."""
        ...
