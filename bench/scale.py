"""How a sharded run scales over `gpu` workers on this machine: one manifest of tiny-random
rows rendered by `t2v render --shards 2×W` with W = 1, then 2 workers (OMP_NUM_THREADS=1
each), on a real Prefect server (`make server`, `make deploy`, `make worker`) on a free
loopback port, into a local folder shared through T2V_SHARED_FOLDER=1.

Rows are sized first: one row's render time sets the row count, so that each shard of the
2-worker run renders for at least --shard-seconds and rendering, not each shard's fixed
cost, dominates. Every process started is stopped, with the flow runs its workers started,
also on Ctrl-C; the whole run is bounded by --budget-s.

    python -m bench.scale                 # updates the scale section of bench/RESULTS.md
    python -m bench.scale --shard-seconds 10 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from statistics import mean
from types import FrameType
from uuid import UUID

from bench.report import environment, markdown_table, number, publish_section

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent
TARGET_RATIO = 1.8
BATCH_SIZE = 4  # the CLI's default: shards are whole batches
HEADER = "id,prompt,seed,num_frames,height,width,num_inference_steps,fps\n"

# One row's render time, in a fresh process with one thread as a worker renders: the second
# batch, after a first that loads the model and warms the kernels.
CALIBRATE = """
import sys, torch
from tasks.batching import plan_batches
from tasks.devices import get_pipeline
from tasks.manifest import read_manifest
from tasks.presets import resolve_model
from tasks.render_call import render_batch
pipe = get_pipeline(resolve_model("tiny-random"), torch.device("cpu"))
batches = list(plan_batches(read_manifest(sys.argv[1]).rows, int(sys.argv[2])))
list(render_batch(pipe, batches[0]))
videos = list(render_batch(pipe, batches[1]))
print(sum(video.render_s for video in videos) / len(videos))
"""


@dataclass(frozen=True)
class Shape:
    frames: int
    size: int
    steps: int


@dataclass(frozen=True)
class ShardTiming:
    """One shard's run: when the parent created it, when it ran, who ran it, and the
    seconds its rows spent rendering (their render_s)."""

    worker: str
    created: float
    start: float
    end: float
    render_s: float


@dataclass(frozen=True)
class Measured:
    workers: int
    rows: int
    wall_s: float
    shards: list[ShardTiming]

    @property
    def videos_per_min(self) -> float:
        return 60 * self.rows / self.wall_s

    @property
    def render_s(self) -> float:
        return sum(shard.render_s for shard in self.shards)

    @property
    def pick_up_s(self) -> float:
        """Mean seconds from a shard's worker being free for it (created, or the worker's
        previous run ended) to its run starting: the worker's poll, a process start, imports."""
        gaps = []
        previous_end: dict[str, float] = {}
        for shard in sorted(self.shards, key=lambda shard: shard.start):
            free = max(shard.created, previous_end.get(shard.worker, shard.created))
            gaps.append(shard.start - free)
            previous_end[shard.worker] = shard.end
        return mean(gaps)

    @property
    def in_run_fixed_s(self) -> float:
        """Mean seconds of a shard's run spent not rendering: model load, reading and
        planning, encoding and storing the last batch, the results file, state changes."""
        return mean(shard.end - shard.start - shard.render_s for shard in self.shards)

    @property
    def fixed_per_shard_s(self) -> float:
        return self.pick_up_s + self.in_run_fixed_s


def write_manifest(path: Path, rows: int, shape: Shape) -> None:
    path.write_text(
        HEADER
        + "".join(
            f"s{n},a paper boat number {n} on a pond,{n},{shape.frames},{shape.size},"
            f"{shape.size},{shape.steps},8\n"
            for n in range(rows)
        )
    )


def row_seconds(shape: Shape, folder: Path, env: dict[str, str], timeout: float) -> float:
    manifest = folder / "calibrate.csv"
    write_manifest(manifest, 2 * BATCH_SIZE, shape)
    done = subprocess.run(
        [sys.executable, "-c", CALIBRATE, str(manifest), str(BATCH_SIZE)],
        cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=timeout,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


def rows_for(row_s: float, shard_seconds: float, shards: int) -> int:
    """Rows for `shards` shards of whole batches, each rendering for at least shard_seconds."""
    batches_per_shard = math.ceil(shard_seconds / (row_s * BATCH_SIZE))
    return shards * batches_per_shard * BATCH_SIZE


class Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self, what: str) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the benchmark ran out of its time budget before {what}")
        return left


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, sid, stat) of every process on the machine."""
    listing = subprocess.run(
        ["ps", "-eo", "pid=,ppid=,sid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    return [
        (int(pid), int(ppid), int(sid), stat)
        for pid, ppid, sid, stat in (line.split() for line in listing.splitlines())
    ]


def _sessions_of(pid: int) -> set[int]:
    """The session `pid` leads and every session of its descendants: a process worker
    starts each flow run in a session of its own."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for child, parent, _, _ in processes:
        children.setdefault(parent, []).append(child)
    session = {child: sid for child, _, sid, _ in processes}
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return {pid} | {session[p] for p in found if p in session}


def _signal_sessions(sessions: set[int], sig: signal.Signals) -> bool:
    """Signal every live process in these sessions; whether there was one."""
    sent = False
    for pid, _, sid, stat in _processes():
        if sid in sessions and "Z" not in stat:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                sent = True
    return sent


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """Run `command` in a session of its own; on the way out stop it and every session it
    started, politely and then for sure."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        sessions = _sessions_of(process.pid)
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            end = time.monotonic() + grace
            while _signal_sessions(sessions, sig) and time.monotonic() < end:
                process.poll()
                time.sleep(0.5)
        process.poll()


def _make(project: Path, *arguments: str) -> list[str]:
    """`make TARGET` in the copied project with this interpreter's virtualenv as it is."""
    stamp = VENV / ".installed"
    return ["make", "-C", str(project), "-o", str(stamp), f"VENV={VENV}", *arguments]


def _copy_project(destination: Path) -> Path:
    """The files a clone would have: deployments run flows from the folder deployed from."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for(check: Callable[[], bool], deadline: Deadline, what: str) -> None:
    while not check():
        deadline.left(what)
        time.sleep(0.5)


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _online(api: str, name: str) -> bool:
    """Whether worker `name` has polled pool `gpu`."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api) as client:
        workers = client.read_workers_for_work_pool("gpu")
    return any(worker.name == name and worker.status.value == "ONLINE" for worker in workers)


def _timestamp(moment: datetime | None) -> float:
    if moment is None:
        raise ValueError("a shard run without a start or end time")
    return moment.timestamp()


def shard_timings(api: str, destination: Path) -> list[ShardTiming]:
    """Each shard run of the render into `destination`, from its Prefect timestamps and the
    merged results' rows (render_s is each row's share of its batch's render)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    rows = json.loads((destination / "results.json").read_text())["rows"]
    render: dict[str, float] = {}
    worker: dict[str, str] = {}
    for row in rows:
        render[row["flow_run"]] = render.get(row["flow_run"], 0.0) + (row["render_s"] or 0.0)
        worker[row["flow_run"]] = row["worker"]
    with SyncPrefectClient(api) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run) for run in render]))
        )
    return [
        ShardTiming(
            worker[str(run.id)],
            run.created.timestamp() if run.created else _timestamp(run.start_time),
            _timestamp(run.start_time),
            _timestamp(run.end_time),
            render[str(run.id)],
        )
        for run in runs
    ]


def render(
    project: Path, env: dict[str, str], folder: Path, workers: int, rows: int,
    deadline: Deadline,
) -> Measured:  # fmt: skip
    destination = folder / f"out-{workers}"
    command = [sys.executable, "-m", "flows.cli", "render", str(folder / "manifest.csv")]
    command += ["--out", str(destination), "--model", "tiny-random"]
    command += ["--shards", str(2 * workers), "--batch-size", str(BATCH_SIZE)]
    begun = time.perf_counter()
    done = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True,
        timeout=deadline.left(f"rendering with {workers} workers"),
    )  # fmt: skip
    wall = time.perf_counter() - begun
    if done.returncode != 0 or f"{rows} ok" not in done.stdout + done.stderr:
        raise RuntimeError(f"t2v render with {workers} workers failed:\n{done.stdout}{done.stderr}")
    return Measured(workers, rows, wall, shard_timings(env["PREFECT_API_URL"], destination))


def measure(
    shape: Shape, shard_seconds: float, poll_s: float, budget_s: float
) -> tuple[float, list[Measured]]:
    """One row's render seconds, and the runs with 1 and 2 workers."""
    deadline = Deadline(budget_s)
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="t2v-scale-")))
        port = _free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = {
            **os.environ,
            "PREFECT_HOME": str(folder / "prefect-home"),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": f"{poll_s:g}",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "T2V_SHARED_FOLDER": "1",
        }
        row_s = row_seconds(shape, folder, env, deadline.left("sizing the rows"))
        rows = rows_for(row_s, shard_seconds, shards=4)
        write_manifest(folder / "manifest.csv", rows, shape)
        project = _copy_project(folder / "project")
        # Flow runs import `flows` and `tasks` from the copy, not from an installed project.
        env["PYTHONPATH"] = str(project)
        server = _make(project, "server", f"PREFECT_PORT={port}")
        stack.enter_context(started(server, env, folder / "server.log"))
        _wait_for(lambda: _healthy(api), deadline, "the Prefect server answered")
        subprocess.run(
            _make(project, "deploy"), env=env, check=True, capture_output=True,
            timeout=deadline.left("make deploy"),
        )  # fmt: skip
        results = []
        for workers in (1, 2):
            name = f"w{workers}"
            worker = _make(project, "worker", f"WORKER_NAME={name}")
            stack.enter_context(started(worker, env, folder / f"{name}.log"))
            _wait_for(partial(_online, api, name), deadline, f"worker {name} polled")
            results.append(render(project, env, folder, workers, rows, deadline))
        return row_s, results


def section(shape: Shape, row_s: float, poll_s: float, results: Sequence[Measured]) -> str:
    one, two = results
    ratio = two.videos_per_min / one.videos_per_min
    table = markdown_table(
        [
            "workers", "shards", "wall s", "rendering s", "videos/min", "pick-up s",
            "in-run fixed s", "fixed per shard s",
        ],
        [
            [
                str(run.workers), str(len(run.shards)), number(run.wall_s, 1),
                number(run.render_s, 1), number(run.videos_per_min, 1), number(run.pick_up_s, 1),
                number(run.in_run_fixed_s, 1), number(run.fixed_per_shard_s, 1),
            ]
            for run in results
        ],
    )  # fmt: skip
    return (
        "## Scaling over `gpu` workers (measured)\n\n"
        f"{environment('CPU')}\n\n"
        f"{one.rows} rows of tiny-random ({shape.frames} frames, {shape.size}×{shape.size}, "
        f"{shape.steps} steps; {row_s:.2f} s a row with one thread) in batches of "
        f"{BATCH_SIZE}, rendered by `t2v render --shards 2×workers` into a folder shared with "
        "T2V_SHARED_FOLDER=1, on a `make server` on loopback after `make deploy`, with "
        f"`make worker` (OMP_NUM_THREADS=1, a poll every {poll_s:g} s) started once, then "
        f"twice.\n\n{table}\n"
        f"**2 workers: {ratio:.2f}× the videos/min of 1** (target {TARGET_RATIO}×). "
        "Rendering s is the sum of the rows' render times; pick-up is a shard's wait from "
        "its worker being free to its run starting (the poll, a process start, imports); "
        "in-run fixed is the rest of its run that was not rendering (model load, planning, "
        "the last batch's encode, the results file). This machine has 2 CPU cores shared by "
        "the server, the parent, both workers' runs and other jobs: two one-thread workers "
        "can at best double the rate, and anything else running takes from that.\n"
    )


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the processes started, as Ctrl-C does


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shard-seconds", type=float, default=30.0)
    parser.add_argument("--poll-s", type=float, default=10.0, help="the workers' poll")
    parser.add_argument("--budget-s", type=float, default=570.0)
    parser.add_argument("--no-write", action="store_true", help="print instead of updating")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    shape = Shape(args.frames, args.size, args.steps)
    row_s, results = measure(shape, args.shard_seconds, args.poll_s, args.budget_s)
    publish_section("scale", section(shape, row_s, args.poll_s, results), args.no_write)


if __name__ == "__main__":
    main()
