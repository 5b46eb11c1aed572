"""The end of a `t2v render` whose Prefect server stopped answering: the run can neither
report nor follow anything through it, so this process writes the results itself (the rows
settled so far as they were reported, every other row `failed` with the reason), releases
its claims, and says so in one line."""

from __future__ import annotations

import dataclasses
import threading
import time

from flows.parameters import RenderRequest
from flows.progress import RenderedBatch
from tasks.claims import release_every_claim
from tasks.errors import T2VError
from tasks.manifest import Manifest
from tasks.publish import write_results
from tasks.results import ResultRow, summarize


class SettledRows:
    """A progress listener that keeps each row's result as it is reported, by line."""

    def __init__(self) -> None:
        self._rows: dict[int, ResultRow] = {}
        self._lock = threading.Lock()

    def phase(self, text: str) -> None:
        pass

    def started(self, total_rows: int) -> None:
        pass

    def batch_rendered(self, batch: RenderedBatch) -> None:
        pass

    def row_finished(self, result: ResultRow) -> None:
        with self._lock:
            self._rows[result.line] = result

    def rows(self) -> dict[int, ResultRow]:
        with self._lock:
            return dict(self._rows)


def end_without_server(
    request: RenderRequest, manifest: Manifest, settled: SettledRows, api_url: str, started: float
) -> str:
    """Write the results of what finished, release this process's claims; the line to say."""
    gone = f"the Prefect server at {api_url} stopped answering during the run"
    release_every_claim()
    try:
        where = write_what_finished(
            request, manifest, settled.rows(), f"not rendered: {gone}; rerun to resume", started
        )
    except T2VError as exc:
        return f"{gone}, and its results could not be written: {exc}; rerun the same command"
    return (
        f"{gone}; results of the rows that finished: {where} (the others failed); videos "
        "already stored are kept: rerun the same command to resume"
    )


def write_what_finished(
    request: RenderRequest,
    manifest: Manifest,
    settled: dict[int, ResultRow],
    error: str,
    started: float,
) -> str:
    """results.csv, results.json and the gallery: each settled row as reported, every other
    row `failed` with `error`; returns where results.csv is."""
    model = request.model
    results = [
        settled.get(row.line) or ResultRow.for_invalid(row, model) for row in manifest.invalid
    ]
    results += [
        settled.get(row.line) or ResultRow.for_row(row, "failed", model, error=error)
        for row in manifest.rows
    ]
    results = sorted(
        (dataclasses.replace(result, speed=request.speed) for result in results),
        key=lambda result: result.line,
    )
    wall = time.monotonic() - started
    summary = summarize(
        results, model, "none", request.destination, time.time() - wall, request.speed
    )
    write_results(
        request.destination, results, manifest.extra_columns, summary, request.presign_expiry
    )
    return summary.results
