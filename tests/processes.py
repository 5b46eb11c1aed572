"""Processes, ports and waiting, for tests that start servers, workers and `t2v` itself."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def processes() -> list[tuple[int, int, int, str, str]]:
    """(pid, ppid, sid, stat, args) of every process on the machine; `-ww`: whole command
    lines, whatever COLUMNS says."""
    command = ["ps", "-ww", "-eo", "pid=,ppid=,sid=,stat=,args="]
    listing = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in listing.splitlines():
        pid, ppid, sid, stat, *args = line.split(maxsplit=4)
        rows.append((int(pid), int(ppid), int(sid), stat, " ".join(args)))
    return rows


def sessions_of(pid: int) -> set[int]:
    """The session `pid` leads, and every session one of its descendants is in."""
    listed = processes()
    children: dict[int, list[int]] = {}
    for child, parent, *_ in listed:
        children.setdefault(parent, []).append(child)
    session = {row[0]: row[2] for row in listed}
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return {pid} | {session[p] for p in found if p in session}


def alive_in(sessions: set[int]) -> list[str]:
    """The processes still running (not zombies) in these sessions."""
    return [
        f"{pid} {args}"
        for pid, _, sid, stat, args in processes()
        if sid in sessions and "Z" not in stat
    ]


def signal_sessions(sessions: set[int], sig: signal.Signals) -> None:
    for pid, _, sid, stat, _ in processes():
        if sid in sessions and "Z" not in stat:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def wait_for(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.5) -> None:
    """Return once `check()` holds; fail the test after `timeout` seconds, naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def child_running(parent: int, needle: str) -> int:
    """The child of `parent` whose command line holds `needle`."""
    for pid, ppid, _, stat, args in processes():
        if ppid == parent and needle in args and "Z" not in stat:
            return pid
    raise AssertionError(f"process {parent} has no child running {needle!r}")
