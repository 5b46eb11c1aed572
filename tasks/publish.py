"""Store each rendered video create-only, skip the ones already stored, write the results."""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from storage import LocalStorage, Storage, open_storage
from tasks.encode import encode_mp4
from tasks.gallery import GALLERY_HTML, gallery_html
from tasks.keys import output_key
from tasks.manifest import Manifest, RenderRow
from tasks.results import (
    RESULTS_CSV,
    RESULTS_JSON,
    ResultRow,
    RunSummary,
    results_csv,
    results_json,
)

if TYPE_CHECKING:
    from tasks.models import ModelRef
    from tasks.render import RenderedVideo

# A create-only write found the key taken: by another run over the same destination, or
# by an earlier try of this upload whose answer the network lost.
ALREADY_STORED = "already stored while this run rendered it"


@dataclass(frozen=True)
class PublishedVideo:
    output: str
    bytes: int
    sha256: str


def publish_video(
    storage: Storage, key: str, source: Path, *, exclusive: bool = False
) -> PublishedVideo | None:
    """Store a finished local MP4 under `key`, returning its location, size and digest;
    None when `exclusive` and the key already holds a video."""
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    if not storage.write_file(key, source, exclusive=exclusive):
        return None
    return PublishedVideo(storage.uri(key), size, digest.hexdigest())


@dataclass(frozen=True)
class OutputPlan:
    """The run's model, each valid row's output key, the rows left to render, the rest."""

    model: ModelRef  # resolved once per run: the keys hash it and every render uses it
    keys: dict[int, str]  # by RenderRow.line
    to_render: list[RenderRow]
    done: list[ResultRow]  # invalid rows, and rows whose video exists
    total: int

    def failed(self, row: RenderRow, error: str) -> ResultRow:
        return ResultRow.for_row(row, "failed", self.model.name, error=error)


def plan_outputs(manifest: Manifest, model: str, destination: str, force: bool) -> OutputPlan:
    """Key every valid row; rows whose key exists are `skipped` unless `force`."""
    from tasks.models import resolve_model  # imports torch: only when planning a real run

    storage = open_storage(destination)
    if isinstance(storage, LocalStorage):
        # What a run killed mid-write left; S3 has no such files (an upload never
        # completed is invisible, and a bucket lifecycle rule aborts it).
        storage.remove_dead_temporaries()
    ref = resolve_model(model)
    keys = {row.line: output_key(row, ref.identity) for row in manifest.rows}
    done = [ResultRow.for_invalid(row, model) for row in manifest.invalid]
    to_render = []
    for row in manifest.rows:
        key = keys[row.line]
        if not force and storage.exists(key):
            done.append(ResultRow.for_row(row, "skipped", model, output=storage.uri(key)))
        else:
            to_render.append(row)
    return OutputPlan(ref, keys, to_render, done, len(manifest.rows) + len(manifest.invalid))


def publish_rendered(
    destination: str, video: RenderedVideo, key: str, model: str, *, exclusive: bool
) -> ResultRow:
    """Encode a rendered row to MP4 in a scratch folder, store it under `key`, report it.

    `exclusive` (every run but `--force`) only creates the key: when it was stored while
    this row rendered, the row is `skipped` and points at the video already there.
    """
    storage = open_storage(destination)
    with tempfile.TemporaryDirectory(prefix="t2v-encode-") as scratch:
        path = Path(scratch) / key
        encode_mp4(video.frames, video.row.fps, path)
        published = publish_video(storage, key, path, exclusive=exclusive)
    if published is None:
        return ResultRow.for_row(
            video.row,
            "skipped",
            model,
            output=storage.uri(key),
            warning=ALREADY_STORED,
        )
    return ResultRow.for_row(
        video.row,
        "ok",
        model,
        output=published.output,
        warning=video.warning,
        render_s=video.render_s,
        bytes=published.bytes,
        sha256=published.sha256,
    )


def write_results(
    destination: str,
    results: list[ResultRow],
    extra_columns: list[str],
    summary: RunSummary,
    presign_expiry: int | None = None,
) -> None:
    """results.csv, results.json and index.html, each written atomically; with
    `presign_expiry`, the gallery links presigned URLs valid for that many seconds."""
    storage = open_storage(destination)
    link: Callable[[str], str] = quote
    if presign_expiry is not None:
        link = functools.partial(storage.presigned_url, expires_in=presign_expiry)
    storage.write_bytes(RESULTS_CSV, results_csv(results, extra_columns))
    storage.write_bytes(RESULTS_JSON, results_json(results, summary))
    storage.write_bytes(GALLERY_HTML, gallery_html(results, summary, link))
