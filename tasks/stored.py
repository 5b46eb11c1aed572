"""What an output key holds: a video t2v stored and can vouch for, or something else.

A video counts as done only when t2v recorded it when storing it (its size and sha256, and
the run that stored it: S3 object metadata, or a local `.t2v/<key>.json`), its size still
matches, and its MP4
boxes are sound (read from their headers alone). A recorded video that fails is t2v's
own, broken: rendered and replaced. Anything t2v did not record (a foreign file, a link,
a folder) is never replaced and never taken for a video.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from storage import Storage

SHA256, SIZE = "t2v-sha256", "t2v-bytes"
# The flow run and worker that stored it; S3 metadata is ASCII, so the worker is %-quoted.
RUN, WORKER = "t2v-run", "t2v-worker"
# Enough for the ftyp and moov boxes of a faststart MP4: usually one read covers every
# box header but mdat's.
HEAD_BYTES = 64 * 1024
MAX_BOXES = 64  # an MP4 of ours has four top-level boxes; thousands mean garbage

State = Literal["missing", "video", "broken", "foreign"]


@dataclass(frozen=True)
class StoredBy:
    """The flow run and worker that store a video; empty where unknown (a video stored by a
    version that did not record them, or outside a flow run)."""

    run: str = ""
    worker: str = ""


UNKNOWN = StoredBy()


@dataclass(frozen=True)
class StoredKey:
    """What a key holds; `bytes`, `sha256` and who stored it as recorded, for a sound
    `video`."""

    state: State
    bytes: int | None = None
    sha256: str = ""
    by: StoredBy = UNKNOWN


def video_metadata(size: int, sha256: str, by: StoredBy) -> dict[str, str]:
    """What t2v records with each video it stores."""
    recorded = {SHA256: sha256, SIZE: str(size), RUN: by.run, WORKER: quote(by.worker)}
    return {name: value for name, value in recorded.items() if value}


def inspect_key(storage: Storage, key: str) -> StoredKey:
    found = storage.stat(key)
    if found is None:
        return StoredKey("missing")
    sha256, size = found.metadata.get(SHA256, ""), found.metadata.get(SIZE, "")
    if not found.regular or not sha256:
        return StoredKey("foreign")
    if size != str(found.size) or not mp4_boxes_sound(storage, key, found.size):
        return StoredKey("broken")
    by = StoredBy(found.metadata.get(RUN, ""), unquote(found.metadata.get(WORKER, "")))
    return StoredKey("video", found.size, sha256, by)


def foreign_error(location: str) -> str:
    return (
        f"{location} holds a file, link or folder that t2v did not store: "
        "move it away and rerun (t2v never replaces it)"
    )


def mp4_boxes_sound(storage: Storage, key: str, size: int) -> bool:
    """ftyp first, then boxes whose sizes add up to `size`, with moov and mdat among them."""
    start, window = 0, storage.read_range(key, 0, min(size, HEAD_BYTES))
    offset, kinds = 0, list[bytes]()
    while offset < size and len(kinds) < MAX_BOXES:
        if offset + min(16, size - offset) > start + len(window):
            start, window = offset, storage.read_range(key, offset, 16)
        header = window[offset - start : offset - start + 16]
        if len(header) < 8:
            return False
        box_size, kind = struct.unpack(">I4s", header[:8])
        if box_size == 1 and len(header) == 16:
            box_size = struct.unpack(">Q", header[8:16])[0]
        elif box_size == 0:  # the last box runs to the end of the file
            box_size = size - offset
        if box_size < 8:
            return False
        kinds.append(kind)
        offset += box_size
    return offset == size and kinds[:1] == [b"ftyp"] and {b"moov", b"mdat"} <= set(kinds)
