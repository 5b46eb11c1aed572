"""Progress events from a running flow (its phase, each batch's hold on the device, each row
settled) to whoever listens: the CLI's bar, the run's progress artifact, a shard's results
file.

Listeners are side channels: one that fails (an API blip, a write refused) is logged in a
line and the run goes on."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from tasks.errors import first_line
from tasks.results import ResultRow


@dataclass(frozen=True)
class RenderedBatch:
    """A batch's render: its number in the run, its rows' manifest lines, and when it took
    the device and gave it back (time.time())."""

    number: int
    lines: list[int]
    started: float
    ended: float


class ProgressListener(Protocol):
    def phase(self, text: str) -> None: ...

    def started(self, total_rows: int) -> None: ...

    def batch_rendered(self, batch: RenderedBatch) -> None: ...

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
    _deliver("phase", text)


def started(total_rows: int) -> None:
    _deliver("started", total_rows)


def batch_rendered(batch: RenderedBatch) -> None:
    _deliver("batch_rendered", batch)


def row_finished(result: ResultRow) -> None:
    """A row's result, as soon as it is settled (its video stored, or its failure known)."""
    _deliver("row_finished", result)


def _deliver(event: str, value: Any) -> None:
    for listener in list(_listeners):
        try:
            getattr(listener, event)(value)
        except Exception as exc:
            _logger().warning(
                "progress listener %s failed on %s, the run goes on: %s",
                type(listener).__name__,
                event,
                first_line(exc),
            )


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """The run's logger; outside a run (the CLI before its flow starts), t2v's."""
    # Imported here: Prefect sets up its logging on import, and the CLI, which imports this
    # module, quiets Prefect's console before that.
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("t2v")
