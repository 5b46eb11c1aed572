"""Output keys, skip-if-exists, upload, and the results manifest (CSV, JSON, gallery)."""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import html
import io
import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args
from urllib.parse import quote

from storage import LocalStorage, Storage, open_storage
from tasks.encode import encode_mp4
from tasks.manifest import InvalidRow, Manifest, RenderRow

if TYPE_CHECKING:
    from tasks.presets import ModelRef
    from tasks.render import RenderedVideo

OUTPUT_FORMAT_VERSION = 1
RESULTS_CSV, RESULTS_JSON, GALLERY_HTML = "results.csv", "results.json", "index.html"
Status = Literal["ok", "skipped", "failed", "invalid"]
STATUSES: tuple[Status, ...] = get_args(Status)
Cell = str | int | float | None
# A create-only write found the key taken: by another run over the same destination, or
# by an earlier try of this upload whose answer the network lost.
ALREADY_STORED = "already stored while this run rendered it"


def output_key(row: RenderRow, model_identity: str) -> str:
    """`<id>-<h>.mp4`: `h` hashes the model and every parameter that changes the video."""
    parameters = {
        "format": OUTPUT_FORMAT_VERSION,
        "model": model_identity,
        "prompt": row.prompt,
        "negative_prompt": row.negative_prompt,
        "seed": row.seed,
        "num_frames": row.num_frames,
        "height": row.height,
        "width": row.width,
        "num_inference_steps": row.num_inference_steps,
        "guidance_scale": float(row.guidance_scale),  # 9 and 9.0 are the same video
        "fps": row.fps,
    }
    canonical = json.dumps(parameters, sort_keys=True, ensure_ascii=False)
    return f"{row.id}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}.mp4"


@dataclass(frozen=True)
class ResultRow:
    """One line of the results manifest; fields in results.csv's column order, then extras."""

    id: str
    status: Status
    output: str
    error: str
    warning: str
    prompt: str
    negative_prompt: str
    seed: Cell
    num_frames: Cell
    height: Cell
    width: Cell
    num_inference_steps: Cell
    guidance_scale: Cell
    fps: Cell
    model: str
    render_s: float | None
    bytes: int | None
    sha256: str
    extra: dict[str, str] = field(default_factory=dict)
    line: int = 0  # the manifest's data row; orders the results, not written as a column

    @classmethod
    def for_row(
        cls,
        row: RenderRow,
        status: Status,
        model: str,
        *,
        output: str = "",
        error: str = "",
        warning: str = "",
        render_s: float | None = None,
        bytes: int | None = None,
        sha256: str = "",
    ) -> ResultRow:
        return cls(
            row.id, status, output, error, warning, row.prompt, row.negative_prompt, row.seed,
            row.num_frames, row.height, row.width, row.num_inference_steps, row.guidance_scale,
            row.fps, model, None if render_s is None else round(render_s, 3), bytes, sha256,
            dict(row.extra), row.line,
        )  # fmt: skip

    @classmethod
    def for_invalid(cls, row: InvalidRow, model: str) -> ResultRow:
        """Raw cells as the manifest had them, so the user sees what was refused."""
        cells = row.cells
        return cls(
            id=row.id,
            status="invalid",
            output="",
            error=row.error,
            warning="",
            prompt=cells.get("prompt", ""),
            negative_prompt=cells.get("negative_prompt", ""),
            **{name: cells.get(name) or None for name in PARAMETER_COLUMNS},
            model=model,
            render_s=None,
            bytes=None,
            sha256="",
            extra={k: v for k, v in cells.items() if k not in KNOWN_COLUMNS},
            line=row.line,
        )


RESULT_COLUMNS = tuple(
    f.name for f in dataclasses.fields(ResultRow) if f.name not in ("extra", "line")
)
PARAMETER_COLUMNS = RESULT_COLUMNS[RESULT_COLUMNS.index("seed") : RESULT_COLUMNS.index("model")]
KNOWN_COLUMNS = frozenset({"id", "prompt", "negative_prompt", *PARAMETER_COLUMNS})


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for results.json, the CLI's last line and the flow's return value."""

    counts: dict[str, int]
    rows: int
    wall_s: float
    videos_per_minute: float
    model: str
    device: str
    destination: str
    results: str
    started_at: str
    finished_at: str
    versions: dict[str, str]

    def one_line(self) -> str:
        counts = ", ".join(f"{self.counts[status]} {status}" for status in STATUSES)
        return (
            f"{self.rows} rows: {counts} in {self.wall_s:.1f} s "
            f"({self.videos_per_minute:.1f} videos/min); results: {self.results}"
        )


def summarize(
    results: list[ResultRow], model: str, device: str, destination: str, started: float
) -> RunSummary:
    finished = time.time()
    counts: dict[str, int] = {s: sum(r.status == s for r in results) for s in STATUSES}
    wall_s = finished - started
    storage = open_storage(destination)
    return RunSummary(
        counts=counts,
        rows=len(results),
        wall_s=round(wall_s, 3),
        videos_per_minute=round(counts["ok"] * 60 / wall_s, 2) if wall_s > 0 else 0.0,
        model=model,
        device=device,
        destination=storage.uri(),
        results=storage.uri(RESULTS_CSV),
        started_at=_iso(started),
        finished_at=_iso(finished),
        versions=package_versions(),
    )


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("t2v-batch", "torch", "diffusers", "transformers", "prefect"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


# The results manifest: CSV for spreadsheets, JSON for programs, HTML for people.


def results_csv(results: list[ResultRow], extra_columns: list[str]) -> bytes:
    """One row per result, columns as DESIGN orders them, formula-looking cells defused."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    header = [*RESULT_COLUMNS, *(_extra_header(name) for name in extra_columns)]
    writer.writerow([_csv_cell(name) for name in header])
    for result in results:
        cells = [getattr(result, column) for column in RESULT_COLUMNS]
        extras = [result.extra.get(column, "") for column in extra_columns]
        writer.writerow([_csv_cell(cell) for cell in [*cells, *extras]])
    return buffer.getvalue().encode("utf-8")


def _extra_header(name: str) -> str:
    """A manifest column named like a results column (a results.csv fed back in) is renamed."""
    return f"manifest_{name}" if name.lower() in RESULT_COLUMNS else name


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):
        return repr(value)
    # A spreadsheet runs cells starting with these as formulas (CSV injection).
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def results_json(results: list[ResultRow], summary: RunSummary) -> bytes:
    document = {
        "summary": dataclasses.asdict(summary),
        "rows": [dataclasses.asdict(result) for result in results],
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def gallery_html(
    results: list[ResultRow], summary: RunSummary, link: Callable[[str], str] = quote
) -> bytes:
    """A self-contained page that plays every video, with its prompt and parameters.

    `link` turns a key in DEST into the page's URL for it: by default the relative
    key, which works wherever index.html is served from beside the videos.
    """
    videos = "\n".join(_figure(r, link) for r in results if r.status in ("ok", "skipped"))
    problems = "\n".join(
        f"<li><b>{_e(r.id)}</b> ({r.status}): {_e(r.error)}</li>"
        for r in results
        if r.status in ("failed", "invalid")
    )
    counts = _e(", ".join(f"{n} {status}" for status, n in summary.counts.items()))
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>t2v-batch: {_e(summary.model)}, {summary.rows} rows</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; background: #fafafa; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; padding: .75rem; background: #fff; border: 1px solid #ddd; }}
video {{ width: 100%; background: #000; image-rendering: pixelated; }}
figcaption p {{ margin: .4rem 0; white-space: pre-wrap; overflow-wrap: anywhere; }}
.params, .negative {{ color: #555; font-size: 12px; }}
</style>
</head>
<body>
<h1>t2v-batch results</h1>
<p>{counts} &middot; model {_e(summary.model)} on {_e(summary.device)} &middot;
{summary.videos_per_minute} videos/min &middot; finished {_e(summary.finished_at)} &middot;
<a href="{_e(link(RESULTS_CSV))}">{RESULTS_CSV}</a> &middot;
<a href="{_e(link(RESULTS_JSON))}">{RESULTS_JSON}</a></p>
<div class="grid">
{videos}
</div>
{f"<h2>Rows not rendered</h2><ul>{problems}</ul>" if problems else ""}
</body>
</html>
"""
    return page.encode("utf-8")


def _figure(result: ResultRow, link: Callable[[str], str]) -> str:
    # Videos sit in DEST beside index.html: a video's key is its file name.
    src = _e(link(result.output.rsplit("/", 1)[-1]))
    negative = (
        f'<p class="negative">not: {_e(result.negative_prompt)}</p>'
        if result.negative_prompt
        else ""
    )
    return f"""<figure id="{_e(result.id)}">
<video src="{src}" controls loop muted playsinline preload="metadata"></video>
<figcaption><p><b>{_e(result.id)}</b> {_e(result.prompt)}</p>{negative}
<p class="params">{result.width}×{result.height}, {result.num_frames} frames at {result.fps} fps,
{result.num_inference_steps} steps, guidance {result.guidance_scale}, seed {result.seed}
&middot; {result.status}</p></figcaption>
</figure>"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# Running a manifest: which rows need rendering, publishing them, writing the results.


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
    from tasks.presets import resolve_model  # imports torch: only when planning a real run

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
