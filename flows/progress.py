"""Progress events from a running flow (its phase, each row finished) to whoever listens:
the CLI's bar, the run's progress artifact."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol

from tasks.results import ResultRow


class ProgressListener(Protocol):
    def phase(self, text: str) -> None: ...

    def started(self, total_rows: int) -> None: ...

    def row_finished(self, result: ResultRow) -> None: ...


_listeners: list[ProgressListener] = []
_lock = threading.Lock()


@contextlib.contextmanager
def listening(listener: ProgressListener) -> Iterator[None]:
    """Deliver progress events to `listener` while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def phase(text: str) -> None:
    """What the run is doing now, e.g. "loading tiny-random on cpu"."""
    for listener in list(_listeners):
        listener.phase(text)


def started(total_rows: int) -> None:
    for listener in list(_listeners):
        listener.started(total_rows)


def row_finished(result: ResultRow) -> None:
    for listener in list(_listeners):
        listener.row_finished(result)
