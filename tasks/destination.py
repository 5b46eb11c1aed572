"""Checks on DEST before any model loads: writable, and nothing there t2v may not replace.

t2v replaces only results files it wrote itself. It knows them by a marker in the first
bytes: results.csv's header, results.json's `generator`, index.html's generator meta tag
(and the same files of earlier releases by their header, summary and title). A marker,
not a record of hashes, because it cannot disagree with the file after a crash between
two writes, and it survives a spreadsheet saving results.csv with the header kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from storage import Storage, StorageError, open_location, open_storage
from tasks.gallery import GALLERY_HTML, GALLERY_RECORD
from tasks.manifest import RenderRow
from tasks.results import RESULT_COLUMNS, RESULTS_CSV, RESULTS_JSON

MARKER_BYTES = 4096
# H.264 at t2v's quality keeps well under an eighth of the raw RGB frames; the results
# files add about this much per manifest row.
ENCODED_SHARE = 8
RESULT_BYTES_PER_ROW = 2048
# What each results file of t2v's starts with (CSV, JSON) or holds near its top (HTML).
# Columns are only ever added after `sha256`: the header up to it is every release's.
STARTS: dict[str, tuple[bytes, ...]] = {
    RESULTS_CSV: (",".join(RESULT_COLUMNS[: RESULT_COLUMNS.index("sha256") + 1]).encode(),),
    RESULTS_JSON: (b'{\n  "generator": "t2v-batch"', b'{\n  "summary": {\n    "counts"'),
}
HOLDS: dict[str, tuple[bytes, ...]] = {
    GALLERY_HTML: (b'<meta name="generator" content="t2v-batch">', b"<h1>t2v-batch results</h1>"),
}
WRITTEN_FILES = (RESULTS_CSV, RESULTS_JSON, GALLERY_HTML, GALLERY_RECORD)
PROBES = ".t2v/probes"


def check_destination(destination: str, manifest: str, first_batch_bytes: int) -> None:
    """Everything about DEST that would fail the run after its renders, checked first:
    writable with room for the first batch, conditional writes honoured, results that
    cannot overwrite the manifest, and no results file there that t2v did not write."""
    storage = open_storage(destination)
    storage.check_writable(first_batch_bytes)
    check_conditional_writes(storage)
    check_not_manifest(storage, manifest)
    check_results_files_are_ours(storage)


def check_conditional_writes(storage: Storage) -> None:
    """Refuse a store that ignores create-only writes (some S3-compatible servers ignore
    If-None-Match): storing each video once and claims both rest on them. The probe
    creates a key of its own twice, expects the second refused, and deletes it."""
    probe = f"{PROBES}/{uuid.uuid4().hex}.json"
    version = storage.write_if(probe, b"{}", None)
    if version is None:
        return  # taken already: the store refused to create it again
    second = storage.write_if(probe, b"{}", None)
    storage.delete_if(probe, second or version)
    if second is not None:
        raise StorageError(
            f"{storage.uri()} ignores conditional writes (a create-only PUT with "
            "If-None-Match: * replaced an object): t2v needs them to store each video once "
            "and to claim rows; use a store that honours If-None-Match and If-Match"
        )


def first_batch_bytes(rows: Sequence[RenderRow], batch_size: int, total_rows: int) -> int:
    """A generous estimate of what the first batch's videos and the results files take."""
    videos = sum(row.num_frames * row.height * row.width * 3 for row in rows[:batch_size])
    return videos // ENCODED_SHARE + RESULT_BYTES_PER_ROW * total_rows


def check_not_manifest(storage: Storage, manifest: str) -> None:
    """Refuse a DEST where a results file would land on the input manifest."""
    source = _identity(manifest)
    for name in WRITTEN_FILES:
        if _identity(storage.uri(name)) == source:
            raise StorageError(
                f"the results file {storage.uri(name)} would overwrite the manifest "
                f"{manifest}: choose another --out"
            )


def check_results_files_are_ours(storage: Storage) -> None:
    """Refuse a results file, or anything at its name, that t2v did not write."""
    for name in (RESULTS_CSV, RESULTS_JSON, GALLERY_HTML):
        found = storage.stat(name)
        if found is None:
            continue
        head = storage.read_range(name, 0, MARKER_BYTES) if found.regular else b""
        head = head.removeprefix(b"\xef\xbb\xbf")
        ours = any(head.startswith(marker) for marker in STARTS.get(name, ())) or any(
            marker in head for marker in HOLDS.get(name, ())
        )
        if not ours:
            raise StorageError(
                f"{storage.uri(name)} was not written by t2v-batch: move it away or "
                "choose another --out (t2v never replaces it)"
            )


def _identity(uri: str) -> str:
    """One spelling per location: a resolved local path, or a normalised s3:// URI."""
    if uri.startswith("s3://"):
        parent, key = open_location(uri)
        return parent.uri(key)
    return str(Path(uri.removeprefix("file://")).expanduser().resolve())
