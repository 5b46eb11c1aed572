"""`make worker`: Prefect's worker, stopped within seconds by the first Ctrl-C or SIGTERM.

Prefect's own worker, on a first signal, stops taking runs but waits for the ones it runs
(a night of renders), and a second one kills it, leaving those runs rendering on their own.
Here the first signal also ends the runs it started (every process below this one): SIGTERM,
SIGKILL after `STOP_GRACE_S`, then each run not yet final is marked `Crashed`, as when its
machine dies: a sharded run's parent starts that shard again on another worker, and a rerun
skips the videos already stored. Claims of a killed run are taken over at once by a run on
this machine and lapse after their lease elsewhere. A second signal kills everything at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from uuid import UUID

STOP_GRACE_S = 3.0  # for a run to unwind (and release its claims) before SIGKILL
POLL_S = 0.1
SCAN_S = 1.0
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def main(arguments: list[str]) -> int:
    """Run `prefect worker start ARGUMENTS` until it ends or a signal stops it."""
    # Processes orphaned below this one (a run whose worker exited first) stay its
    # descendants, so the runs can still be found and ended.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", *arguments])
    # A stop marks runs Crashed with Prefect's client: imported now, while nothing waits,
    # rather than after the signal (seconds of the stop on a busy machine).
    threading.Thread(target=importlib.import_module, args=("prefect",), daemon=True).start()
    received: list[int] = []
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if received:
            _signal_all(_descendants(), signal.SIGKILL)
            print("worker: stopped at once by a second signal", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        received.append(signum)
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    # The runs below as of the last poll: a Ctrl-C reaches the terminal's whole process
    # group, so a run may be gone before the stop below could read its id.
    running: set[str] = set()
    scanned = 0.0
    while worker.poll() is None and not stopping.wait(POLL_S):
        if time.monotonic() - scanned >= SCAN_S:  # a walk of /proc: not ten times a second
            running, scanned = flow_runs(), time.monotonic()
    if not received:
        return worker.returncode
    name = signal.Signals(received[0]).name
    print(f"worker: stopping on {name}: ending its flow runs", file=sys.stderr, flush=True)
    runs = running | flow_runs()
    _end([pid for pid in _descendants() if pid != worker.pid], STOP_GRACE_S)
    mark_crashed(sorted(runs), f"its worker was stopped by {name}; rerun to resume")
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # Prefect's own stop: no run left to wait for
    _end([worker.pid], STOP_GRACE_S)
    return 128 + received[0]


def flow_runs() -> set[str]:
    """The ids of the flow runs that processes below this one run."""
    found = (_environment(pid).get("PREFECT__FLOW_RUN_ID") for pid in _descendants())
    return {run for run in found if run is not None}


def mark_crashed(runs: list[str], message: str) -> None:
    """Mark each run that is not final yet `Crashed` (the run's engine may have done so)."""
    if not runs:
        return
    from prefect import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            for run in runs:
                state = client.read_flow_run(UUID(run)).state
                if state is None or not state.is_final():
                    client.set_flow_run_state(UUID(run), Crashed(message=message), force=True)
    except Exception as exc:  # the API is away: crash detection marks them once it is back
        print(f"worker: cannot mark runs {', '.join(runs)} crashed: {exc}", file=sys.stderr)


def _end(pids: list[int], grace: float) -> None:
    """SIGTERM these processes, SIGKILL those left after `grace` seconds."""
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        _reap()
        time.sleep(POLL_S)
    _signal_all([pid for pid in pids if _alive(pid)], signal.SIGKILL)
    _reap()


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap() -> None:
    """Collect the exit of every child that ended (orphans adopted here included)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _descendants() -> list[int]:
    """Every process below this one, parents before their children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.partition(b"=") for entry in raw.split(b"\0") if entry)
    return {
        name.decode(errors="replace"): value.decode(errors="replace") for name, _, value in pairs
    }


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, reaped or not, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
