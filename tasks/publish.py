"""Store each rendered video create-only, skip the ones already stored, write the results."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from storage import LocalStorage, Storage, open_storage
from tasks.destination import check_results_files_are_ours
from tasks.encode import encode_mp4
from tasks.gallery import (
    GALLERY_HTML,
    RECORD_ATTEMPTS,
    record_videos,
    run_videos,
    store_start_images,
    videos_since,
)
from tasks.gallery_page import gallery_html
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
from tasks.speed.levers import EXACT, Levers, key_settings
from tasks.stored import (
    UNKNOWN,
    StoredBy,
    StoredKey,
    foreign_error,
    inspect_key,
    video_metadata,
)

if TYPE_CHECKING:
    from tasks.presets import ModelRef
    from tasks.render_call import RenderedVideo
    from tasks.scoring import Scoring

# A create-only write found the key taken: by another run over the same destination, or
# by an earlier try of this upload whose answer the network lost.
ALREADY_STORED = "already stored while this run rendered it"


@dataclass(frozen=True)
class PublishedVideo:
    output: str
    bytes: int
    sha256: str


def publish_video(
    storage: Storage, key: str, source: Path, *, exclusive: bool = False, by: StoredBy = UNKNOWN
) -> PublishedVideo | None:
    """Store a finished local MP4 under `key` with its size, sha256 and storing run `by`
    recorded, returning its location, size and digest; None when `exclusive` and the key
    holds something."""
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    metadata = video_metadata(size, digest.hexdigest(), by)
    if not storage.write_file(key, source, exclusive=exclusive, metadata=metadata):
        return None
    return PublishedVideo(storage.uri(key), size, digest.hexdigest())


@dataclass(frozen=True)
class OutputPlan:
    """The run's model, each valid row's output key, the rows left to render, the rest."""

    model: ModelRef  # resolved once per run: the keys hash it and every render uses it
    keys: dict[int, str]  # by RenderRow.line
    to_render: list[RenderRow]
    done: list[ResultRow]  # invalid rows, rows whose video is stored, rows t2v may not write
    total: int
    levers: Levers = EXACT  # the speed levers the keys hash and the renders use
    scoring: Scoring | None = None  # the scorer each rendered video goes through

    def failed(self, row: RenderRow, error: str) -> ResultRow:
        return ResultRow.for_row(row, "failed", self.model.name, error=error)


def plan_outputs(
    manifest: Manifest,
    ref: ModelRef,
    destination: str,
    force: bool,
    levers: Levers = EXACT,
    scoring: Scoring | None = None,
) -> OutputPlan:
    """Key every valid row, rendered with `levers`. A row whose key holds a video t2v stored
    is `skipped` (unless `force`); one whose key holds anything t2v did not store is `failed`,
    never rendered."""
    model = ref.name
    storage = open_storage(destination)
    if isinstance(storage, LocalStorage):
        # What a run killed mid-write left; S3 has no such files (a PUT that never
        # completed is invisible).
        storage.remove_dead_temporaries()
    speed = key_settings(levers, ref.family.speed)
    scorer = "none" if scoring is None else scoring.name
    keys = {row.line: output_key(row, ref.identity, speed, scorer) for row in manifest.rows}
    done = [ResultRow.for_invalid(row, model) for row in manifest.invalid]
    to_render = []
    for row in manifest.rows:
        key = keys[row.line]
        stored = inspect_key(storage, key)
        if stored.state == "foreign":
            done.append(
                ResultRow.for_row(row, "failed", model, error=foreign_error(storage.uri(key)))
            )
        elif stored.state == "video" and not force:
            done.append(
                skipped_row(row, model, storage.uri(key), stored, audio=ref.family.has_sound)
            )
        else:
            to_render.append(row)
    total = len(manifest.rows) + len(manifest.invalid)
    return OutputPlan(ref, keys, to_render, done, total, levers, scoring)


def skipped_row(
    row: RenderRow,
    model: str,
    output: str,
    stored: StoredKey,
    warning: str = "",
    audio: bool | None = None,
) -> ResultRow:
    """A row whose video is stored at `output`, naming the run and worker that stored it."""
    skipped = ResultRow.for_row(
        row,
        "skipped",
        model,
        output=output,
        warning=warning,
        bytes=stored.bytes,
        sha256=stored.sha256,
        audio=audio,
    )
    return dataclasses.replace(skipped, worker=stored.by.worker, flow_run=stored.by.run)


def stored_meanwhile(by: StoredBy) -> str:
    """Why a row this run planned to render is skipped: another run stored it meanwhile."""
    if not by.run:
        return "stored by another run after this run planned it"
    return f"stored by run {by.run} on worker {by.worker or '(unknown)'} after this run planned it"


def publish_rendered(
    destination: str,
    video: RenderedVideo,
    key: str,
    model: str,
    *,
    exclusive: bool,
    by: StoredBy = UNKNOWN,
) -> ResultRow:
    """Encode a rendered row to MP4 in a scratch folder, store it under `key` as stored `by`
    this run, report it.

    `exclusive` (every run but `--force`) only creates the key. When the key was taken
    while this row rendered: by a sound video, the row is `skipped` and points at it; by
    a broken video t2v stored, that is replaced; by anything else, the row is `failed`.
    """
    storage = open_storage(destination)
    with tempfile.TemporaryDirectory(prefix="t2v-encode-") as scratch:
        path = Path(scratch) / key
        encode_mp4(video.frames, video.row.fps, path, video.sound)
        published = publish_video(storage, key, path, exclusive=exclusive, by=by)
        stored = inspect_key(storage, key) if published is None else None
        if stored is not None and stored.state in ("broken", "missing"):
            published = publish_video(storage, key, path, by=by)
    if stored is not None and stored.state == "video":
        return skipped_row(
            video.row, model, storage.uri(key), stored, ALREADY_STORED, video.sound is not None
        )
    if published is None:
        return ResultRow.for_row(video.row, "failed", model, error=foreign_error(storage.uri(key)))
    return ResultRow.for_row(
        video.row,
        "ok",
        model,
        output=published.output,
        warning=video.warning,
        render_s=video.render_s,
        bytes=published.bytes,
        sha256=published.sha256,
        flags=video.flags,
        score=video.score,
        candidates=video.candidates,
        audio=video.sound is not None,
    )


def write_results(
    destination: str,
    results: list[ResultRow],
    extra_columns: list[str],
    summary: RunSummary,
    presign_expiry: int | None = None,
) -> None:
    """results.csv, results.json (this run's rows) and index.html (every video recorded
    in DEST), written as one set once this run's videos are merged into the gallery's
    record; with `presign_expiry`, the gallery links presigned URLs valid for that many
    seconds."""
    storage = open_storage(destination)
    check_results_files_are_ours(storage)  # again: one may have appeared while rendering
    link: Callable[[str], str] = quote
    if presign_expiry is not None:
        link = functools.partial(storage.presigned_url, expires_in=presign_expiry)
    start_images = store_start_images(storage, results)
    videos, version = record_videos(storage, run_videos(results, summary.finished_at, start_images))
    storage.write_many(
        {
            RESULTS_CSV: results_csv(results, extra_columns),
            RESULTS_JSON: results_json(results, summary),
            GALLERY_HTML: gallery_html(videos, results, summary, link),
        }
    )
    # A run that merged its videos after this one may have written its page first: the
    # page follows the record until the record no longer changes under it.
    for _ in range(RECORD_ATTEMPTS):
        if (latest := videos_since(storage, version)) is None:
            break
        videos, version = latest
        storage.write_bytes(GALLERY_HTML, gallery_html(videos, results, summary, link))
