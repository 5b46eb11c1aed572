"""A terminal progress bar fed by the flow's progress events."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tasks.results import ResultRow


class ProgressBar:
    """Rows finished out of rows in the manifest, with the count that failed so far."""

    def __init__(self) -> None:
        self._problems = 0
        self._progress = Progress(
            TextColumn("rendering"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[problems]}"),
            console=Console(file=sys.stderr),
            transient=True,
            disable=not sys.stderr.isatty(),
        )
        self._task = self._progress.add_task("render", total=None, problems="")

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def started(self, total_rows: int) -> None:
        self._progress.update(self._task, total=total_rows)

    def row_finished(self, result: ResultRow) -> None:
        if result.status in ("failed", "invalid"):
            self._problems += 1
        problems = f"{self._problems} failed or invalid" if self._problems else ""
        self._progress.update(self._task, advance=1, problems=problems)
