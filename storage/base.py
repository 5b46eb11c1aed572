"""The one small interface every storage backend implements."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoredObject:
    """What a key holds: its size, whether it is a plain file or object (not a symlink,
    a folder or a device), and the metadata stored with it by `write_file`."""

    size: int
    regular: bool
    metadata: dict[str, str] = field(default_factory=dict)


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

    def write_file(
        self,
        key: str,
        source: Path,
        *,
        exclusive: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        """Store a local file's bytes atomically, like `write_bytes`; True when stored.

        With `exclusive` the write only creates: when `key` already holds an object,
        even one another writer stored a moment ago, it is left as it is and the
        answer is False. Of writers racing for one key, exactly one gets True.
        `metadata` (lower-case names) is stored with the object and read back by `stat`.
        """
        ...

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """A small object's bytes and its version, an opaque token for `write_if` and
        `delete_if`; None when `key` holds nothing. Equal bytes may share one version:
        writers that compare versions write bytes of their own (a nonce, a counter)."""
        ...

    def write_if(self, key: str, data: bytes, expected: str | None) -> str | None:
        """Store a small object atomically only if `key` holds nothing (`expected` None) or
        still holds version `expected`; its new version, or None when the condition failed.
        Of writers racing with one condition, at most one succeeds."""
        ...

    def delete_if(self, key: str, expected: str) -> bool:
        """Delete `key` only if it still holds version `expected`; whether it did."""
        ...

    def write_many(self, files: Mapping[str, bytes]) -> None:
        """Store several objects as one set as far as the backend allows: on a failure
        before the first is in place, every old object stays as it was."""
        ...

    def names(self, folder: str) -> list[str]:
        """The names of the objects directly in `folder` (a key prefix); none when empty."""
        ...

    def stat(self, key: str) -> StoredObject | None:
        """What `key` holds, without following links; None when it holds nothing."""
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes of `key` from `start`; fewer at the end of the object."""
        ...

    def check_writable(self, free_bytes: int) -> None:
        """Refuse, in one sentence, a destination that cannot take `free_bytes` more now."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        ...

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A URL that reads `key` without credentials for `expires_in` seconds."""
        ...
