"""Ctrl-C, SIGTERM and SIGKILL of a real `t2v render` with its temporary Prefect server, and
servers that die under a run.

Each test starts `t2v` in a process group of its own and signals the whole group, as a
terminal's Ctrl-C does; the temporary server must survive that, finish the run, and die
with t2v however t2v ends.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.prefect_stack import running_server, stop
from tests.processes import alive, child_running, wait_for

pytestmark = pytest.mark.slow
T2V = [sys.executable, "-m", "flows.cli"]
# Rows slow enough on CPU that a signal lands while some are still rendering.
SLOW_ROWS = 10


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "slow.csv"
    rows = [f"slow-{n},a slow scene {n},16,128,128,40" for n in range(SLOW_ROWS)]
    path.write_text("id,prompt,num_frames,height,width,num_inference_steps\n" + "\n".join(rows))
    return path


def _start(tmp_path: Path, api: str | None = None) -> subprocess.Popen[str]:
    """`t2v render` of slow rows, on the Prefect server at `api`, else a temporary one."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"
    )
    if api is not None:
        env["PREFECT_API_URL"] = api
    command = [*T2V, "render", str(_manifest(tmp_path)), "--model", "tiny-random",
               "--batch-size", "1", "--out", str(tmp_path / "out")]  # fmt: skip
    return subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def _rendering(tmp_path: Path) -> bool:
    return any((tmp_path / "out").glob("*.mp4"))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_promptly_keeps_videos_and_writes_results(
    tmp_path: Path, signum: int, code: int
) -> None:
    t2v = _start(tmp_path)
    try:
        wait_for(lambda: _rendering(tmp_path), 300, "the first video")
        server = child_running(t2v.pid, "flows.serve_temporary")
        signalled = time.monotonic()
        os.killpg(t2v.pid, signum)
        stdout, stderr = t2v.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if t2v.poll() is None:
            os.killpg(t2v.pid, signal.SIGKILL)
    assert t2v.returncode == code, stderr
    assert took < 20, f"{took:.1f} s to stop"  # about 2-5 s on an idle machine
    assert "Traceback" not in stderr, stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(f"t2v: interrupted by {signal.Signals(signum).name}")
    )
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open(encoding="utf-8-sig")))
    assert len(rows) == SLOW_ROWS
    ok = [row for row in rows if row["status"] == "ok"]
    interrupted = [row for row in rows if row["status"] == "failed"]
    assert ok and interrupted
    assert all(row["error"] == "interrupted; rerun to resume" for row in interrupted)
    assert {Path(row["output"]).name for row in ok} == {
        p.name for p in (tmp_path / "out").glob("*.mp4")
    }
    assert f"{len(ok)} ok" in stdout
    wait_for(lambda: not alive(server), 10, "the temporary server to end")


def test_sigkill_of_t2v_takes_its_temporary_server_with_it(tmp_path: Path) -> None:
    t2v = _start(tmp_path)
    try:
        wait_for(lambda: _rendering(tmp_path), 300, "the first video")
        server = child_running(t2v.pid, "flows.serve_temporary")
        t2v.kill()
        t2v.wait(timeout=30)
        wait_for(lambda: not alive(server), 10, "the orphaned server to end")
    finally:
        if t2v.poll() is None:
            os.killpg(t2v.pid, signal.SIGKILL)


def test_a_dead_temporary_server_ends_the_run_in_seconds_with_one_line(tmp_path: Path) -> None:
    t2v = _start(tmp_path)
    try:
        wait_for(lambda: _rendering(tmp_path), 300, "the first video")
        os.kill(child_running(t2v.pid, "flows.serve_temporary"), signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = t2v.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        if t2v.poll() is None:
            os.killpg(t2v.pid, signal.SIGKILL)
    assert t2v.returncode == 1
    assert took < 15, f"{took:.1f} s to notice"
    assert (
        stderr.strip().splitlines() == [stderr.strip().splitlines()[-1]]
        and "temporary Prefect server exited" in stderr
    ), stderr


def test_a_configured_server_that_stops_ends_the_run_in_seconds_with_its_results(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "server") as server:
        t2v = _start(tmp_path, server.api)
        try:
            wait_for(lambda: _rendering(tmp_path), 300, "the first video")
            stop(server.process)  # `make server` stopped: SIGTERM, as Ctrl-C in its terminal
            stopped = time.monotonic()
            _, stderr = t2v.communicate(timeout=120)
            took = time.monotonic() - stopped
        finally:
            if t2v.poll() is None:
                os.killpg(t2v.pid, signal.SIGKILL)
    print(f"\nthe server stopped; t2v exited {took:.1f} s later")
    assert t2v.returncode == 1
    assert took < 15, f"{took:.1f} s to notice"
    lines = stderr.strip().splitlines()
    gone = f"the Prefect server at {server.api} stopped answering during the run"
    assert lines[-1] == (
        f"t2v: {gone}; results of the rows that finished: {tmp_path / 'out' / 'results.csv'} "
        "(the others failed); videos already stored are kept: rerun the same command to resume"
    ), stderr
    assert "Traceback" not in stderr
    with (tmp_path / "out" / "results.csv").open(encoding="utf-8-sig") as results:
        rows = list(csv.DictReader(results))
    assert len(rows) == SLOW_ROWS
    stored = {path.name for path in (tmp_path / "out").glob("*.mp4")}
    ok = {Path(row["output"]).name for row in rows if row["status"] == "ok"}
    assert ok and ok <= stored
    failed = [row for row in rows if row["status"] == "failed"]
    assert failed and {row["error"] for row in failed} == {f"not rendered: {gone}; rerun to resume"}
    assert not list((tmp_path / "out" / ".t2v" / "claims").glob("*.json")), "claims left"
