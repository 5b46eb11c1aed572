"""Running the flow under supervision: this (main) thread handles SIGINT and SIGTERM and
watches the Prefect server (the temporary one's process, a configured one's answers) while
the flow runs in a thread of its own.

Prefect's flow engine swaps in a SIGTERM handler of its own when it runs in the main
thread; in another thread it leaves signals to us.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from flows.salvage import SettledRows, end_without_server
from flows.server_watch import ServerWatch
from tasks.errors import T2VError

if TYPE_CHECKING:
    from flows.parameters import RenderRequest
    from flows.progress_bar import ProgressBar
    from flows.temporary_server import TemporaryServer
    from tasks.manifest import Manifest

# After a first Ctrl-C or SIGTERM, the run gets this long to publish what it rendered and
# write its results; containers send SIGKILL 10-30 s after SIGTERM.
STOP_GRACE_S = 4.0
SUPERVISE_EVERY_S = 0.2
EXIT_INTERRUPTED_BASE, EXIT_SERVER_DIED = 128, 1


@dataclass(frozen=True)
class Supervised:
    """The run to supervise: its request, its manifest as preflight read it, and when the
    command started (time.monotonic())."""

    request: RenderRequest
    manifest: Manifest
    started: float


def run_supervised(
    run: Supervised,
    api_url: str,
    server: TemporaryServer | None,
    bar: ProgressBar,
    sharding: dict[str, Any] | None = None,
) -> tuple[Any, int | None]:
    """Run the flow in a thread while this (main) thread handles signals and watches the
    server: `render-manifest`, or with `sharding` (its own parameters), `render-sharded`.
    Returns the flow's outcome and the signal that stopped it, if any."""
    from flows import progress
    from tasks import interrupt

    outcome: list[Any] = []
    thread = threading.Thread(
        target=_run_flow,
        # A temporary server dies with t2v: no crash detection watches it, and Prefect's
        # default heartbeat (every 180 s) would only delay the end by up to a second.
        args=(run.request, api_url, sharding, outcome, server is None),
        name="t2v-flow",
        daemon=True,
    )
    settled = SettledRows()
    watch = ServerWatch(api_url).start() if server is None else None
    received: list[int] = []
    stopping_since: list[float] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if received:
            bar.stop()
            _exit_now(f"stopped at once by a second {signal.Signals(signum).name}", signum)
        received.append(signum)
        stopping_since.append(time.monotonic())
        interrupt.request_stop(f"interrupted by {signal.Signals(signum).name}")
        bar.phase("stopping: publishing finished videos, writing results")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with progress.listening(settled):
            thread.start()
            while thread.is_alive():
                thread.join(SUPERVISE_EVERY_S)
                if (gone := _server_gone(run, api_url, server, watch, settled)) is not None:
                    bar.stop()
                    _exit_now(gone, None)
                if stopping_since and time.monotonic() - stopping_since[0] > STOP_GRACE_S:
                    bar.stop()
                    _exit_now(
                        f"interrupted; the run did not finish its results within "
                        f"{STOP_GRACE_S:g} s. Videos already stored are kept: rerun the same "
                        "command to resume",
                        received[0],
                    )
        failed = isinstance(outcome[0], BaseException) and not isinstance(outcome[0], T2VError)
        if failed and watch is not None and watch.confirms_gone():
            # Prefect's API calls failed before the watch noticed: the same end.
            bar.stop()
            _exit_now(
                end_without_server(run.request, run.manifest, settled, api_url, run.started), None
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return outcome[0], received[0] if received else None


def _server_gone(
    run: Supervised,
    api_url: str,
    server: TemporaryServer | None,
    watch: ServerWatch | None,
    settled: SettledRows,
) -> str | None:
    """The line to end with when the run's server is gone: the temporary one exited, or a
    configured one stopped answering (then the results of what finished are written here)."""
    if server is not None and server.died():
        return (
            f"the temporary Prefect server exited (status {server.exit_code()}) during the "
            "run; videos already stored are kept: rerun the same command to resume"
        )
    if watch is not None and watch.gone():
        return end_without_server(run.request, run.manifest, settled, api_url, run.started)
    return None


def _run_flow(
    request: Any,
    api_url: str,
    sharding: dict[str, Any] | None,
    outcome: list[Any],
    heartbeats: bool,
) -> None:
    from prefect import tags
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    from flows.crash_detection import HEARTBEAT_SECONDS, RUN_TAG
    from flows.render_flow import render_manifest
    from flows.sharded_flow import render_sharded

    # Heartbeats and the tag crash detection watches, as deployed runs have: a killed t2v's
    # run then ends Crashed on a configured server, instead of showing Running for good.
    settings = {
        PREFECT_API_URL: api_url,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_SECONDS if heartbeats else None,
    }
    with temporary_settings(updates=settings), tags(RUN_TAG):
        try:
            state: Any = (
                render_manifest(**request.parameters(), return_state=True)
                if sharding is None
                else render_sharded(**request.parameters(), **sharding, return_state=True)
            )
            outcome.append(state.result(raise_on_failure=False))
        except BaseException as exc:  # handed to the main thread, which reports it
            outcome.append(exc)
        finally:
            _drain_prefect_workers()


def _drain_prefect_workers() -> None:
    """Send the run's last logs and events before the server they go to stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=5)
        except RuntimeError:
            continue  # never started


def _exit_now(message: str, signum: int | None) -> None:
    """Leave at once: a second signal, a dead server. Stored videos stay; a rerun resumes."""
    print(f"t2v: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_SERVER_DIED if signum is None else EXIT_INTERRUPTED_BASE + signum)
