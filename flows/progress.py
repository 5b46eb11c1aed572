"""Row-level progress events from a running flow to whoever listens (the CLI's bar)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol

from tasks.results import ResultRow


class ProgressListener(Protocol):
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


def started(total_rows: int) -> None:
    for listener in list(_listeners):
        listener.started(total_rows)


def row_finished(result: ResultRow) -> None:
    for listener in list(_listeners):
        listener.row_finished(result)
