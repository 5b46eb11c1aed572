"""A process-wide request to stop: the CLI sets it on SIGINT/SIGTERM; renders and the flow poll it.

Renders in flight are abandoned (their rows `failed` with INTERRUPTED), videos already
rendered are still published, and the results manifest is written.
"""

from __future__ import annotations

import threading

INTERRUPTED = "interrupted; rerun to resume"

_stop = threading.Event()
_reason: list[str] = []


def request_stop(reason: str) -> None:
    """Ask every render and the flow of this process to stop as soon as they can."""
    if not _stop.is_set():
        _reason.append(reason)
        _stop.set()


def stop_requested() -> str | None:
    """Why this process was asked to stop, or None."""
    return _reason[0] if _stop.is_set() else None


def wait_for_stop(timeout: float) -> bool:
    """Sleep up to `timeout` seconds; True as soon as a stop is requested."""
    return _stop.wait(timeout)


def clear() -> None:
    """Forget a stop request (tests, and a long-lived process that starts a new run)."""
    _reason.clear()
    _stop.clear()
