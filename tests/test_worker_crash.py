"""A worker's machine dies mid-run, or its worker is stopped: the run ends Crashed, its `gpu`
slot comes back, a new run resumes. The README's set-up for real (`make server`, `make deploy`,
`make worker`) on a copy of the project; the machine "dies" by SIGKILL to every process the
worker started.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.prefect_stack import (
    Server,
    alive_in,
    make,
    run_deployment,
    running_server,
    running_worker,
    sessions_of,
    signal_sessions,
    wait_for,
)

# One server and deployment for the module: its tests share one process under xdist.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("worker_crash")]

ROWS = 6
# About 2 s a row on one CPU thread: slow enough to kill between videos, fast enough to resume.
MANIFEST = "id,prompt,num_frames,height,width,num_inference_steps\n" + "".join(
    f"boat-{n},a paper boat number {n} on a pond,16,64,64,50\n" for n in range(ROWS)
)
# Shorter than `make deploy`'s 90 s so the test waits less; still 15 s above the heartbeat.
CRASH_AFTER_S = 45


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the README's set-up: the `gpu` pool, limit, crash detection, deployments."""
    with running_server(tmp_path_factory.mktemp("prefect")) as server:
        command = make(server.project, "deploy", "gpu-limit", f"CRASH_AFTER_S={CRASH_AFTER_S}")
        subprocess.run(command, env=server.env, check=True)
        yield server


def _client(server: Server) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(server.api)


def _state(server: Server, run_id: Any) -> Any:
    with _client(server) as client:
        return client.read_flow_run(run_id).state


def _gpu_slot_holders(server: Server) -> set[Any]:
    """Task runs holding a slot of the `gpu` tag's concurrency limit."""
    with _client(server) as client:
        return set(client.read_concurrency_limit_by_tag("gpu").active_slots)


def _task_runs(server: Server, run_id: Any, task: str) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client(server) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    return [run for run in runs if run.name.rsplit("-", 1)[0] == task]


def _request(tmp_path: Path) -> dict[str, Any]:
    manifest = tmp_path / "boats.csv"
    manifest.write_text(MANIFEST)
    destination = str(tmp_path / "renders")
    return {"manifest": str(manifest), "destination": destination, "batch_size": 1}


def _videos(destination: Path) -> dict[str, tuple[int, int]]:
    """Each finished video's (inode, mtime_ns): a rewrite changes one or the other."""
    return {
        video.name: (video.stat().st_ino, video.stat().st_mtime_ns)
        for video in destination.glob("*.mp4")
    }


def _kill_machine(server: Server, sessions: set[int], run_id: Any) -> None:
    """SIGKILL every process in `sessions`, as when the machine dies, at a moment the run holds
    the `gpu` slot. Frozen first (twice: an encoder may be starting), so none can react."""

    def frozen_holding_the_slot() -> bool:
        signal_sessions(sessions, signal.SIGSTOP)
        signal_sessions(sessions, signal.SIGSTOP)
        renders = {run.id for run in _task_runs(server, run_id, "render")}
        if renders & _gpu_slot_holders(server):
            return True
        signal_sessions(sessions, signal.SIGCONT)
        return False

    wait_for(frozen_holding_the_slot, 60, "a moment the run holds the gpu slot")
    signal_sessions(sessions, signal.SIGKILL)
    wait_for(lambda: not alive_in(sessions), 10, "the killed processes to end")


def test_run_on_a_dead_machine_crashes_frees_its_gpu_slot_and_resumes(
    deployed: Server, tmp_path: Path
) -> None:
    request = _request(tmp_path)
    destination = Path(request["destination"])

    # 1. A worker renders until two videos exist, then its machine dies.
    with running_worker(deployed, tmp_path / "worker-1.log") as worker:
        crashed = run_deployment(deployed, "on-demand", request)
        wait_for(lambda: len(_videos(destination)) >= 2, 180, "two videos")
        sessions = sessions_of(worker.pid)
        assert len(sessions) == 2, f"the flow run has a session of its own: {alive_in(sessions)}"
        _kill_machine(deployed, sessions, crashed)
        killed = time.monotonic()
        before = _videos(destination)
        assert 2 <= len(before) < ROWS
        (held,) = _gpu_slot_holders(deployed)
        assert held in {run.id for run in _task_runs(deployed, crashed, "render")}

    # 2. Prefect marks the run Crashed once its heartbeats stop; then, as a user would, a new
    # worker and a new run start. The dead run's `gpu` slot comes back when its lease expires.
    times: dict[str, float] = {}  # seconds from the kill to each event, as first seen

    def seen() -> set[str]:
        events = {
            "Crashed": _state(deployed, crashed).is_crashed(),
            "slot free": held not in _gpu_slot_holders(deployed),
        }
        for event in (event for event, happened in events.items() if happened):
            times.setdefault(event, time.monotonic() - killed)
        return set(times)

    wait_for(lambda: "Crashed" in seen(), CRASH_AFTER_S + 45, "the dead run to be Crashed")
    assert "heartbeat" in _state(deployed, crashed).message
    assert _videos(destination) == before, "a video was written after the machine died"

    # 3. A new worker and a new run render only the missing videos.
    with running_worker(deployed, tmp_path / "worker-2.log"):
        resumed = run_deployment(deployed, "on-demand", request)
        wait_for(
            lambda: "slot free" in seen() and _state(deployed, resumed).is_final(),
            240,
            "the dead run's slot and the resumed run",
        )
        times["resumed run done"] = time.monotonic() - killed
    assert _state(deployed, resumed).is_completed(), _state(deployed, resumed).message
    assert len(_task_runs(deployed, resumed, "render")) == ROWS - len(before)

    after = _videos(destination)
    assert len(after) == ROWS
    assert {name: after[name] for name in before} == before, "a finished video was rewritten"
    with (destination / "results.csv").open(newline="", encoding="utf-8-sig") as results:
        rows = list(csv.DictReader(results))
    assert [row["id"] for row in rows] == [f"boat-{n}" for n in range(ROWS)]
    statuses = {Path(row["output"]).name: row["status"] for row in rows}
    assert statuses == {name: "skipped" if name in before else "ok" for name in after}
    summary = json.loads((destination / "results.json").read_text())["summary"]
    assert summary["counts"]["skipped"] == len(before)
    assert summary["counts"]["ok"] == ROWS - len(before)

    leftovers = [p.name for p in destination.iterdir() if p.name.endswith(".tmp")]
    print(
        f"\n{len(before)} of {ROWS} videos before the kill; "
        + ", ".join(f"kill → {what} {seconds:.1f} s" for what, seconds in times.items())
        + f"; temporary files left by the killed run: {leftovers}"
    )


def test_run_outliving_its_killed_worker_crashes_itself(deployed: Server, tmp_path: Path) -> None:
    """Only the worker dies: its flow run, in a session of its own, outlives it until its next
    log line hits the worker's closed pipe; then it reports itself Crashed and frees its slot."""
    request = _request(tmp_path)
    destination = Path(request["destination"])
    with running_worker(deployed, tmp_path / "worker.log") as worker:
        run_id = run_deployment(deployed, "on-demand", request)
        wait_for(lambda: len(_videos(destination)) >= 1, 180, "a video")
        sessions = sessions_of(worker.pid)
        os.killpg(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: not alive_in({worker.pid}), 10, "the worker to die")
        orphans = alive_in(sessions - {worker.pid})
        assert any("prefect.engine" in orphan for orphan in orphans), orphans

        wait_for(lambda: _state(deployed, run_id).is_final(), 60, "the orphaned run to end")
        crashed_after = time.monotonic() - killed
        wait_for(lambda: not alive_in(sessions), 30, "the orphaned run's process to exit")
        state = _state(deployed, run_id)
        assert state.is_crashed(), state
        assert len(_videos(destination)) < ROWS
        # Released by the render task's own Crashed state, long before its lease (60 s) expires.
        wait_for(lambda: not _gpu_slot_holders(deployed), 10, "the run's gpu slot")
        slot_free_after = time.monotonic() - killed
    print(
        f"\nthe worker killed alone: its run Crashed itself after {crashed_after:.1f} s, "
        f"its gpu slot free after {slot_free_after:.1f} s: {state.message}"
    )


def test_a_killed_cli_run_on_a_configured_server_ends_crashed(
    deployed: Server, tmp_path: Path
) -> None:
    """`t2v render` against `make server`, SIGKILLed mid-run: Prefect shows no zombie."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    request = _request(tmp_path)
    destination = Path(request["destination"])
    command = [sys.executable, "-m", "flows.cli", "render", request["manifest"], "--out",
               request["destination"], "--model", "tiny-random", "--batch-size", "1"]  # fmt: skip
    t2v = subprocess.Popen(
        command, env={**deployed.env, "PREFECT_API_URL": deployed.api}, cwd=deployed.project,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: len(_videos(destination)) >= 1, 180, "a video")
    finally:
        os.killpg(t2v.pid, signal.SIGKILL)
        t2v.wait(timeout=30)
    killed = time.monotonic()
    with _client(deployed) as client:
        tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=["t2v"]))
        runs = [r for r in client.read_flow_runs(flow_run_filter=tagged) if not r.deployment_id]
    (run,) = runs
    wait_for(lambda: _state(deployed, run.id).is_crashed(), CRASH_AFTER_S + 45, "Crashed")
    print(f"\nthe killed CLI run was Crashed {time.monotonic() - killed:.0f} s after the kill")


@pytest.mark.parametrize("how", ["SIGINT to its process group", "SIGTERM to make"])
def test_a_stopped_worker_ends_in_seconds_and_a_rerun_resumes(
    deployed: Server, tmp_path: Path, how: str
) -> None:
    request = _request(tmp_path)
    destination = Path(request["destination"])
    with running_worker(deployed, tmp_path / "w.log") as worker:
        run_id = run_deployment(deployed, "on-demand", request)
        wait_for(lambda: len(_videos(destination)) >= 1, 180, "a first video")
        sessions = sessions_of(worker.pid)
        signalled = time.monotonic()
        if how.startswith("SIGINT"):
            os.killpg(worker.pid, signal.SIGINT)  # a terminal's Ctrl-C
        else:
            os.kill(worker.pid, signal.SIGTERM)
        wait_for(lambda: worker.poll() is not None, 60, "the worker to stop", poll=0.1)
        stopped_s = time.monotonic() - signalled
        wait_for(lambda: not alive_in(sessions), 10, "its flow run's processes to end")
    print(f"\n{how}: the worker stopped {stopped_s:.1f} s after the signal")
    assert stopped_s < 10
    assert _state(deployed, run_id).type.value == "CRASHED"
    kept = _videos(destination)
    assert 0 < len(kept) < ROWS

    with running_worker(deployed, tmp_path / "w2.log"):
        again = run_deployment(deployed, "on-demand", request)
        wait_for(lambda: _state(deployed, again).is_final(), 300, "the rerun")
    assert _state(deployed, again).is_completed()
    videos = _videos(destination)
    assert len(videos) == ROWS
    assert {name: videos[name] for name in kept} == kept, "a stored video was written again"
