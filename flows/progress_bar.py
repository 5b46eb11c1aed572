"""A terminal progress bar fed by the flow's progress events."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.progress import RenderedBatch
from tasks.results import ResultRow


class ProgressBar:
    """What the run is doing, rows finished out of rows in the manifest, and the count that
    failed so far; from the moment the command starts, not only once Prefect is up."""

    def __init__(self) -> None:
        self._problems = 0
        self._progress = Progress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[problems]}"),
            console=Console(file=sys.stderr),
            transient=True,
            disable=not sys.stderr.isatty(),
        )
        self._task = self._progress.add_task("starting", total=None, problems="")

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Clear the bar from the terminal, so that a last message stands alone."""
        self._progress.stop()

    def phase(self, text: str) -> None:
        self._progress.update(self._task, description=text)

    def started(self, total_rows: int) -> None:
        self._progress.update(self._task, total=total_rows)

    def batch_rendered(self, batch: RenderedBatch) -> None:
        """The bar counts rows; the phase says which batch renders."""

    def row_finished(self, result: ResultRow) -> None:
        if result.status in ("failed", "invalid"):
            self._problems += 1
        problems = f"{self._problems} failed or invalid" if self._problems else ""
        self._progress.update(self._task, advance=1, problems=problems)
