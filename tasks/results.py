"""The results manifest: one `ResultRow` per input row, the run's summary, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal, get_args

from storage import open_storage
from tasks.columns import KNOWN_COLUMNS
from tasks.manifest import InvalidRow, RenderRow
from tasks.quality import Candidate

RESULTS_CSV, RESULTS_JSON = "results.csv", "results.json"
Status = Literal["ok", "skipped", "failed", "invalid"]
STATUSES: tuple[Status, ...] = get_args(Status)
Cell = str | int | float | None
# Per model family: the speed levers applied, with their settings, and those skipped, with why.
SpeedLevers = dict[str, dict[str, dict[str, str]]]


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
    speed: str = ""  # the run's speed profile: exact, fast, fastest
    image: str = ""  # where the start image was read (the raw cell for an invalid row)
    image_sha256: str = ""
    flags: str = ""  # what the quality checks found (tasks.quality), space-separated
    score: float | None = None  # the text–video score, when a scorer ran (tasks.scoring)
    audio: str = ""  # `yes` when the stored video has a sound track, `no` when not
    extra: dict[str, str] = field(default_factory=dict)
    line: int = 0  # the manifest's data row; orders the results, not written as a column
    # Who rendered the row (WORKER_NAME, else the host) and in which flow run: in results.json,
    # the results artifact and the gallery; results.csv keeps its documented columns.
    worker: str = ""
    flow_run: str = ""
    # Best of N: each candidate's seed, flags, score and whether it was kept (results.json).
    candidates: list[dict[str, Any]] = field(default_factory=list)

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
        flags: tuple[str, ...] = (),
        score: float | None = None,
        candidates: Sequence[Candidate] = (),
        audio: bool | None = None,
    ) -> ResultRow:
        return cls(
            id=row.id,
            status=status,
            output=output,
            error=error,
            warning=warning,
            prompt=row.prompt,
            negative_prompt=row.negative_prompt,
            seed=row.seed,
            num_frames=row.num_frames,
            height=row.height,
            width=row.width,
            num_inference_steps=row.num_inference_steps,
            guidance_scale=row.guidance_scale,
            fps=row.fps,
            model=model,
            render_s=None if render_s is None else round(render_s, 3),
            bytes=bytes,
            sha256=sha256,
            image=row.image.uri if row.image else "",
            image_sha256=row.image.sha256 if row.image else "",
            flags=" ".join(flags),
            score=score,
            audio="" if audio is None else "yes" if audio else "no",
            candidates=[dataclasses.asdict(candidate) for candidate in candidates],
            extra=dict(row.extra),
            line=row.line,
        )

    @property
    def flagged_video(self) -> bool:
        """An `ok` row whose video the quality checks or the scorer flagged."""
        return self.status == "ok" and bool(self.flags)

    @classmethod
    def for_invalid(cls, row: InvalidRow, model: str) -> ResultRow:
        """Raw cells as the manifest had them, so the user sees what was refused."""
        cells = row.cells
        parameters: dict[str, Any] = {name: cells.get(name) or None for name in PARAMETER_COLUMNS}
        return cls(
            id=row.id,
            status="invalid",
            output="",
            error=row.error,
            warning="",
            prompt=cells.get("prompt", ""),
            negative_prompt=cells.get("negative_prompt", ""),
            **parameters,
            model=model,
            render_s=None,
            bytes=None,
            sha256="",
            image=cells.get("image", ""),
            extra={k: v for k, v in cells.items() if k not in KNOWN_COLUMNS},
            line=row.line,
        )


RESULT_COLUMNS = tuple(
    f.name
    for f in dataclasses.fields(ResultRow)
    if f.name not in ("extra", "line", "worker", "flow_run", "candidates")
)
PARAMETER_COLUMNS = RESULT_COLUMNS[RESULT_COLUMNS.index("seed") : RESULT_COLUMNS.index("model")]


def format_counts(counts: Mapping[str, int]) -> str:
    """`2 ok, 1 skipped, 0 failed, 1 invalid`: every status, in one order, wherever shown."""
    return ", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES)


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
    speed: str = "exact"
    speed_levers: SpeedLevers = field(default_factory=dict)
    flagged: int = 0  # rows whose `flagged_video` is true

    def one_line(self, command_s: float | None = None) -> str:
        """The summary; given the command's wall time (which includes starting Prefect), it
        leads, with the run's own share."""
        took = f"{self.wall_s:.1f} s"
        if command_s is not None:
            took = f"{command_s:.1f} s, {took} of it the run"
        return (
            f"{self.rows} rows: {format_counts(self.counts)} in {took} "
            f"({self.videos_per_minute:.1f} videos/min); results: {self.results}"
        )


def summarize(
    results: list[ResultRow],
    model: str,
    device: str,
    destination: str,
    started: float,
    speed: str = "exact",
    speed_levers: SpeedLevers | None = None,
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
        speed=speed,
        speed_levers=speed_levers or {},
        flagged=sum(r.flagged_video for r in results),
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


def results_csv(results: list[ResultRow], extra_columns: list[str]) -> bytes:
    """One row per result, columns in the documented order, formula-looking cells defused;
    UTF-8 with a BOM, so spreadsheets do not read prompts as Latin-1."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    header = [*RESULT_COLUMNS, *_extra_headers(extra_columns)]
    writer.writerow([_csv_cell(name) for name in header])
    for result in results:
        cells = [getattr(result, column) for column in RESULT_COLUMNS]
        extras = [result.extra.get(column, "") for column in extra_columns]
        writer.writerow([_csv_cell(cell) for cell in [*cells, *extras]])
    return buffer.getvalue().encode("utf-8-sig")


def _extra_headers(extra_columns: list[str]) -> list[str]:
    """The extra columns' headers: one named like a results column (a results.csv fed back
    in) becomes `manifest_<name>`, numbered from 2 past any header already taken, so that
    every header stays unique (up to case, as a spreadsheet compares them)."""
    taken = {name.lower() for name in [*RESULT_COLUMNS, *extra_columns]}
    headers = []
    for name in extra_columns:
        if name.lower() in RESULT_COLUMNS:
            renamed, number = f"manifest_{name}", 2
            while renamed.lower() in taken:
                renamed, number = f"manifest_{name}_{number}", number + 1
            taken.add(renamed.lower())
            name = renamed
        headers.append(name)
    return headers


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):
        return repr(value)
    # A spreadsheet runs cells starting with these as formulas (CSV injection).
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def results_json(results: list[ResultRow], summary: RunSummary) -> bytes:
    document = {
        "generator": "t2v-batch",  # first: t2v knows its own results.json by it
        "summary": dataclasses.asdict(summary),
        "rows": [dataclasses.asdict(result) for result in results],
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
