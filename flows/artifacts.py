"""What a run shows in the Prefect UI: live progress, a table of results, a summary."""

from __future__ import annotations

import time
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.progress import RenderedBatch
from storage import open_storage
from tasks.gallery import GALLERY_HTML
from tasks.results import RESULTS_CSV, ResultRow, RunSummary, format_counts

PROGRESS_KEY, RESULTS_KEY, SUMMARY_KEY = "render-progress", "render-results", "render-summary"
# Enough updates to look live, few enough that a 10,000-row run does not flood the API.
PROGRESS_UPDATE_S = 2.0
TABLE_PROMPT_CHARS = 200


class ProgressArtifact:
    """A progress listener that keeps the run's progress artifact up to date."""

    def __init__(self) -> None:
        self._id: UUID | None = None
        self._total = 0
        self._finished = 0
        self._flagged = 0
        self._updated = 0.0

    def phase(self, text: str) -> None:
        """Phases go to the run's logs; this artifact shows the share of rows finished."""

    def started(self, total_rows: int) -> None:
        self._total = total_rows
        # Called from the flow's own (sync) thread, so Prefect's dispatch returns the id.
        self._id = cast(
            UUID,
            create_progress_artifact(
                0.0, key=PROGRESS_KEY, description=progress_description(0, 0, total_rows)
            ),
        )
        self._updated = time.monotonic()

    def batch_rendered(self, batch: RenderedBatch) -> None:
        """This artifact shows the share of rows finished."""

    def row_finished(self, result: ResultRow) -> None:
        self._finished += 1
        self._flagged += result.flagged_video
        done = self._finished >= self._total
        if self._id is None or not (done or time.monotonic() - self._updated >= PROGRESS_UPDATE_S):
            return
        update_progress_artifact(
            self._id,
            100.0 * self._finished / max(self._total, 1),
            description=progress_description(self._finished, self._flagged, self._total),
        )
        self._updated = time.monotonic()


def progress_description(finished: int, flagged: int, total: int) -> str:
    """The progress artifact's text: the rows finished, and how many of their videos the
    quality checks or the scorer flagged (what a reviewer will want to look at)."""
    text = f"{finished} of {total} rows finished"
    return f"{text}; {flagged} of their videos flagged." if finished else f"{text}."


def publish_results(results: list[ResultRow], summary: RunSummary) -> None:
    """The table of every row and the markdown summary that names the results manifest."""
    create_table_artifact(
        results_table(results),
        key=RESULTS_KEY,
        description=f"One row per manifest row; the full manifest is {summary.results}.",
    )
    create_markdown_artifact(
        summary_markdown(summary),
        key=SUMMARY_KEY,
        description="Counts, speed, and links to results.csv and the gallery.",
    )


def results_table(results: list[ResultRow]) -> list[dict[str, Any]]:
    return [
        {
            "status": result.status,
            "error": result.error,  # beside the status: why a row failed, without scrolling
            "id": result.id,
            "prompt": _clip(result.prompt, TABLE_PROMPT_CHARS),
            "output": result.output,
            "flags": result.flags,
        }
        for result in results
    ]


def summary_markdown(summary: RunSummary) -> str:
    return "\n".join(
        [
            "# Render summary",
            "",
            f"{summary.rows} rows: {format_counts(summary.counts)}",
            "",
            "| metric | value |",
            "|---|---|",
            f"| flagged videos | {summary.flagged} |",
            f"| videos per minute | {summary.videos_per_minute} |",
            f"| wall time | {summary.wall_s:.1f} s |",
            f"| model | `{_code(summary.model)}` on `{_code(summary.device)}` |",
            f"| destination | `{_code(summary.destination)}` |",
            "",
            f"- {_location(RESULTS_CSV, summary.destination, RESULTS_CSV)}",
            f"- {_location('gallery', summary.destination, GALLERY_HTML)}",
        ]
    )


def _location(text: str, destination: str, key: str) -> str:
    """A browser opens neither file:// links from the UI nor s3:// ones: they are shown as
    text to copy. Never a presigned URL: it would put a key id, and read access to the
    bucket, into the Prefect server's records."""
    return f"{text}: `{_code(open_storage(destination).uri(key))}`"


def _code(text: str) -> str:
    return text.replace("`", "'")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
