"""Sharded runs for real: `make server`, `make deploy`, `gpu` workers on loopback, moto's S3
server as the shared destination, and `t2v render --shards N` as the parent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.cli import EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE, main
from flows.shard_runs import EARLIER_TRY
from flows.sharded_flow import SHARD_DEPLOYMENT
from tasks.shards import MAX_SHARDS, manifest_sha256, read_shard_record, write_run_marker
from tests.conftest import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from tests.factories import t2v
from tests.prefect_stack import (
    Server,
    alive_in,
    flow_runs,
    make,
    running_server,
    running_worker,
    sessions_of,
    signal_sessions,
    stop,
    wait_for,
)

# One server, workers and S3 for the module (`stack`): its tests share one process under xdist.
pytestmark = pytest.mark.xdist_group("shards")
HEADER = "id,prompt,num_frames,height,width,num_inference_steps\n"
CRASH_AFTER_S = 45


def _manifest(rows: int, frames: int = 4, steps: int = 2, size: int = 64) -> str:
    return HEADER + "".join(
        f"boat-{n},a paper boat number {n} on a pond,{frames},{size},{size},{steps}\n"
        for n in range(rows)
    )


def test_shards_without_a_prefect_server_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(_manifest(2))
    assert "PREFECT_API_URL" not in os.environ
    code = main(["render", str(manifest), "--out", "s3://bucket/out", "--shards", "2"])
    assert code == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.splitlines() == [
        "t2v: error: --shards needs a Prefect server with workers: set PREFECT_API_URL "
        "(make server, make deploy, make worker)"
    ]


@pytest.mark.parametrize("given", ["0", "100000", "many"])
def test_a_shard_count_out_of_bounds_exits_2_naming_the_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's own exit, before any server
        main(["render", "m.csv", "--out", "s3://bucket/out", "--shards", given])
    assert exited.value.code == EXIT_USAGE
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == (
        f"t2v render: error: argument --shards: {given!r} is not a whole number "
        f"from 1 to {MAX_SHARDS}"
    )


def test_a_shard_start_timeout_out_of_bounds_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["render", "m.csv", "--shards", "2", "--shard-start-timeout", "0"])
    assert exited.value.code == EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[-1] == (
        "t2v render: error: argument --shard-start-timeout: '0' is not a number of seconds "
        "from 1 to 604800"
    )


def test_shards_on_a_server_without_the_shard_deployment_exit_2_with_one_line(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # The session's test server: no `make deploy` ran there.
    manifest = tmp_path / "m.csv"
    manifest.write_text(_manifest(2))
    env = {**cli_env, "T2V_SHARED_FOLDER": "1"}
    done = t2v("render", str(manifest), "--out", str(tmp_path / "out"), "--shards", "2", env=env)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"t2v: error: the Prefect server has no deployment {SHARD_DEPLOYMENT!r}, which runs "
        "the shards: run make deploy (then make worker on each GPU machine)"
    ]


@pytest.mark.usefixtures("prefect_api_url")
def test_a_shard_started_by_hand_with_no_lines_fails_in_one_line(tmp_path: Path) -> None:
    from flows.shard_flow import render_shard

    state = render_shard(
        manifest=str(tmp_path / "m.csv"),
        destination=str(tmp_path / "out"),
        model="tiny-random",
        model_identity="tiny-random",
        manifest_sha256="",
        lines=[],
        parent_run="parent",
        shard=1,
        return_state=True,
    )
    assert state.is_failed()
    assert state.message.endswith(
        "ShardError: render-shard was given no manifest lines to render: it runs the shards "
        "of `t2v render --shards N` (flow render-sharded), not on its own"
    )


@pytest.mark.usefixtures("prefect_api_url")
def test_a_shard_that_reads_a_changed_manifest_refuses_it(tmp_path: Path) -> None:
    from flows.shard_flow import render_shard
    from tasks.presets import resolve_model

    manifest, out = tmp_path / "m.csv", str(tmp_path / "out")
    manifest.write_text(_manifest(2))
    pinned = manifest_sha256(str(manifest))
    manifest.write_text(_manifest(3))  # overwritten after the parent planned
    write_run_marker(out, "parent")
    state = render_shard(
        manifest=str(manifest),
        destination=out,
        model="tiny-random",
        model_identity=resolve_model("tiny-random").identity,
        manifest_sha256=pinned,
        lines=[1, 2],
        parent_run="parent",
        shard=1,
        return_state=True,
    )
    assert state.is_failed()
    record = read_shard_record(out, "parent", 1)
    assert record is not None and record.complete and record.rows == []
    assert record.refused.startswith("the manifest changed since the run started")
    assert state.message.endswith(record.refused)
    assert not list((tmp_path / "out").glob("*.mp4"))


def _shard_deployment_without_worker() -> None:
    """The `shard` deployment on pool `gpu` of the session's test server, where no worker runs."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.shard_flow import render_shard

    # The pool may exist already, made by an earlier test of the session.
    with get_client(sync_client=True) as client, contextlib.suppress(Exception):
        client.create_work_pool(WorkPoolCreate(name="gpu", type="process"))
    render_shard.to_deployment(name="shard", work_pool_name="gpu").apply()


@pytest.mark.usefixtures("prefect_api_url")
def test_shards_no_worker_takes_end_failed_within_the_start_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.sharded_flow import render_sharded

    _shard_deployment_without_worker()
    monkeypatch.setenv("T2V_SHARED_FOLDER", "1")
    manifest, out = tmp_path / "m.csv", tmp_path / "out"
    manifest.write_text(_manifest(2))
    started = time.monotonic()
    state = render_sharded(
        manifest=str(manifest),
        destination=str(out),
        model="tiny-random",
        batch_size=1,
        shards=2,
        shard_start_timeout=3,
        return_state=True,
    )
    assert time.monotonic() - started < 60
    assert state.is_failed()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(row["status"], row["error"]) for row in rows] == [
        ("failed", f"no gpu worker took shard {n} within 3 s") for n in (1, 2)
    ]


@pytest.mark.usefixtures("prefect_api_url")
def test_relative_locations_reach_the_shards_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards run in their worker's folder (a cloned commit, with CODE_REPO): a relative path
    means the parent's folder."""
    from prefect import get_client

    from flows.sharded_flow import render_sharded

    _shard_deployment_without_worker()
    monkeypatch.setenv("T2V_SHARED_FOLDER", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    Path("m.csv").write_text(_manifest(1))
    state = render_sharded(
        manifest="m.csv",
        destination="out",
        image_root="images",
        model="tiny-random",
        shards=1,
        shard_start_timeout=1,
        return_state=True,
    )
    assert state.is_failed()  # no worker took the shard
    parent = str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        shards = [
            run for run in client.read_flow_runs() if run.parameters.get("parent_run") == parent
        ]
    assert [
        {name: run.parameters[name] for name in ("manifest", "destination", "image_root")}
        for run in shards
    ] == [
        {
            "manifest": str(tmp_path / "m.csv"),
            "destination": str(tmp_path / "out"),
            "image_root": str(tmp_path / "images"),
        }
    ]


def _s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@dataclass
class Stack:
    server: Server
    workers: dict[str, subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Stack]:
    """A deployed server (`gpu` pool, crash detection, the `shard` deployment) whose
    environment reaches moto's S3, with three `gpu` workers, w1, w2 and w3."""
    folder = tmp_path_factory.mktemp("shards")
    with running_server(folder) as server:
        server.env.update(_s3_env(s3_server))
        command = make(server.project, "deploy", f"CRASH_AFTER_S={CRASH_AFTER_S}")
        subprocess.run(command, env=server.env, check=True, capture_output=True)
        with contextlib.ExitStack() as workers:
            names = ("w1", "w2", "w3")
            yield Stack(
                server,
                {
                    name: workers.enter_context(
                        running_worker(server, folder / f"{name}.log", name)
                    )
                    for name in names
                },
            )


def _client(server: Server) -> Any:
    import boto3

    env = server.env
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def _bucket(server: Server, manifest: str) -> str:
    """A new versioned bucket holding the manifest: each version of a key is one PUT."""
    bucket = f"t2v-{uuid.uuid4().hex[:12]}"
    client = _client(server)
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket=bucket, Key="prompts.csv", Body=manifest.encode())
    return bucket


def _render(server: Server, bucket: str, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "flows.cli", "render", f"s3://{bucket}/prompts.csv"]
    command += ["--out", f"s3://{bucket}/out", "--model", "tiny-random", *options]
    return subprocess.Popen(
        command, env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(render: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    out, err = render.communicate(timeout=timeout)
    return render.returncode, out + err


def _results(server: Server, bucket: str) -> dict[str, Any]:
    body = _client(server).get_object(Bucket=bucket, Key="out/results.json")["Body"]
    document: dict[str, Any] = json.loads(body.read())
    return document


def _video_puts(server: Server, bucket: str) -> Counter[str]:
    """How many times each video was stored (the bucket keeps every version)."""
    listing = _client(server).list_object_versions(Bucket=bucket, Prefix="out/")
    return Counter(v["Key"] for v in listing.get("Versions", []) if v["Key"].endswith(".mp4"))


def _shard_runs(server: Server, since: float) -> list[Any]:
    return [r for r in flow_runs(server, "shard") if r.created.timestamp() >= since]


@pytest.mark.slow
def test_rows_spread_over_workers_each_video_stored_once(stack: Stack) -> None:
    server = stack.server
    # A shard is a fresh process on its worker (seconds of imports): one per worker.
    bucket = _bucket(server, _manifest(12))
    since = time.time()
    code, output = _finish(_render(server, bucket, "--shards", "3", "--batch-size", "1"), 300)
    assert code == EXIT_OK, output
    assert "12 rows: 12 ok, 0 skipped, 0 failed, 0 invalid" in output

    rows = _results(server, bucket)["rows"]
    assert [row["id"] for row in rows] == [f"boat-{n}" for n in range(12)]
    assert {row["status"] for row in rows} == {"ok"}
    assert len({row["worker"] for row in rows}) >= 2, Counter(row["worker"] for row in rows)
    shards = _shard_runs(server, since)
    assert {row["flow_run"] for row in rows} == {str(run.id) for run in shards}
    assert len(shards) == 3
    puts = _video_puts(server, bucket)
    assert len(puts) == 12 and set(puts.values()) == {1}, puts


@pytest.mark.slow
def test_a_shard_whose_rows_fail_is_not_started_again(stack: Stack) -> None:
    server = stack.server
    bucket = _bucket(server, _manifest(4))
    since = time.time()
    # Every render runs past its timeout: the rows fail, each shard reports them.
    render = _render(
        server, bucket, "--shards", "2", "--batch-size", "1", "--render-timeout-scale", "0.000001"
    )
    code, output = _finish(render, 240)
    assert code == EXIT_ROWS_FAILED, output
    rows = _results(server, bucket)["rows"]
    assert {row["status"] for row in rows} == {"failed"}
    assert all("timed out" in row["error"] or "not rendered" in row["error"] for row in rows)
    shards = _shard_runs(server, since)
    assert len(shards) == 2, "one run per shard: a shard that reported its failed rows ran again"
    assert {run.state_type.value for run in shards} == {"FAILED"}
    assert _video_puts(server, bucket) == Counter()


@pytest.mark.slow
def test_a_shard_the_user_cancels_is_not_started_again(stack: Stack) -> None:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.states import Cancelling

    server = stack.server
    # About 4 s a row on one thread: time to cancel a shard while it renders.
    bucket = _bucket(server, _manifest(6, frames=16, steps=30, size=128))
    since = time.time()
    render = _render(server, bucket, "--shards", "2", "--batch-size", "1")
    cancelled: list[Any] = []

    def cancel_a_running_shard() -> bool:
        for run in _shard_runs(server, since):
            if run.state.is_running():
                with SyncPrefectClient(server.api) as client:
                    client.set_flow_run_state(run.id, Cancelling(), force=True)
                cancelled.append(run)
                return True
        return False

    wait_for(cancel_a_running_shard, 180, "a running shard")
    code, output = _finish(render, 300)
    assert code == EXIT_ROWS_FAILED, output
    mine = {line - 1 for line in cancelled[0].parameters["lines"]}
    rows = {int(row["id"].split("-")[1]): row for row in _results(server, bucket)["rows"]}
    failed = {n for n, row in rows.items() if row["status"] == "failed"}
    assert failed and failed <= mine
    assert {rows[n]["error"] for n in failed} == {"cancelled"}
    assert len(_shard_runs(server, since)) == 2, "the cancelled shard was started again"


@pytest.mark.slow
def test_rows_another_run_stored_meanwhile_are_skipped_naming_it_not_a_crashed_try(
    stack: Stack,
) -> None:
    """A CLI run stores the rows while the shard waits for a worker; the shard's first run
    then crashes and its next finds them stored, by that other run."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.states import Crashed

    server = stack.server
    bucket = _bucket(server, _manifest(2))
    since = time.time()
    frozen = set().union(*(sessions_of(worker.pid) for worker in stack.workers.values()))
    signal_sessions(frozen, signal.SIGSTOP)  # no worker takes a shard yet
    try:
        render = _render(server, bucket, "--shards", "1")
        wait_for(lambda: len(_shard_runs(server, since)) == 1, 60, "the shard's run")
        other = _render(server, bucket)  # the other run, e.g. the nightly
        code, output = _finish(other, 120)
        assert code == EXIT_OK and "2 ok" in output, output
        stored_by = {(row["flow_run"], row["worker"]) for row in _results(server, bucket)["rows"]}
        (first,) = _shard_runs(server, since)
        with SyncPrefectClient(server.api) as client:
            client.set_flow_run_state(first.id, Crashed(message="its machine died"), force=True)
        wait_for(lambda: len(_shard_runs(server, since)) == 2, 60, "the shard started again")
    finally:
        signal_sessions(frozen, signal.SIGCONT)
    code, output = _finish(render, 180)
    assert code == EXIT_OK, output
    assert "2 rows: 0 ok, 2 skipped, 0 failed, 0 invalid" in output
    ((run, worker),) = stored_by
    rows = _results(server, bucket)["rows"]
    assert [(row["status"], row["warning"], row["flow_run"]) for row in rows] == [
        ("skipped", f"stored by run {run} on worker {worker} after this run planned it", run)
    ] * 2
    assert set(_video_puts(server, bucket).values()) == {1}


def _stored_rows(server: Server, bucket: str) -> set[int]:
    """The row numbers whose video is stored (boat-N-<hash>.mp4)."""
    return {int(key.split("-")[1]) for key in _video_puts(server, bucket)}


def _kill_mid_shard(
    stack: Stack, bucket: str, shard_rows: int, since: float, render: subprocess.Popen[str]
) -> tuple[str, set[int]]:
    """SIGKILL the worker running a shard and that shard's run, as when their machine dies,
    once some of the shard's videos are stored and not all of them. Frozen first (twice: an
    encoder may be starting), so nothing it does after the check lands. Returns the worker's
    name and the shard's rows stored before the kill."""
    killed: list[tuple[str, set[int], set[int]]] = []

    def frozen_mid_shard() -> bool:
        if render.poll() is not None:
            raise AssertionError(f"the run ended before a kill: {_finish(render, 10)}")
        for run in _shard_runs(stack.server, since):
            if not run.state.is_running() or not run.infrastructure_pid:
                continue
            pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
            mine = {line - 1 for line in run.parameters["lines"]}  # boat-0 is line 1
            for name, worker in stack.workers.items():
                sessions = sessions_of(worker.pid)
                if pid not in sessions:
                    continue
                signal_sessions(sessions, signal.SIGSTOP)
                signal_sessions(sessions, signal.SIGSTOP)
                stored = _stored_rows(stack.server, bucket) & mine
                if 0 < len(stored) < shard_rows:
                    signal_sessions(sessions, signal.SIGKILL)
                    killed.append((name, sessions, stored))
                    return True
                signal_sessions(sessions, signal.SIGCONT)
        return False

    wait_for(frozen_mid_shard, 180, "a shard with some of its videos stored")
    ((name, sessions, stored),) = killed
    wait_for(lambda: not alive_in(sessions), 10, "the killed processes to end")
    return name, stored


@pytest.mark.slow
def test_a_worker_killed_mid_shard_its_rows_render_elsewhere_once(stack: Stack) -> None:
    """Runs after the others but the last: it kills one of the module's workers."""
    server, rows_count = stack.server, 12
    # About 4 s a row on one thread: slow enough to kill a shard between its videos.
    bucket = _bucket(server, _manifest(rows_count, frames=16, steps=30, size=128))
    since = time.time()
    render = _render(server, bucket, "--shards", "3", "--batch-size", "1")
    killed, stored = _kill_mid_shard(stack, bucket, rows_count // 3, since, render)
    kill = time.monotonic()
    # The dead run is marked Crashed once its heartbeats stop, then its shard runs again.
    code, output = _finish(render, CRASH_AFTER_S + 300)
    print(
        f"\nkilled {killed} with {len(stored)} of its shard's {rows_count // 3} videos stored; "
        f"the run ended {time.monotonic() - kill:.1f} s after the kill"
    )
    assert code == EXIT_OK, output
    assert f"{rows_count} rows: {rows_count} ok, 0 skipped, 0 failed, 0 invalid" in output

    rows = {int(row["id"].split("-")[1]): row for row in _results(server, bucket)["rows"]}
    assert {row["status"] for row in rows.values()} == {"ok"}
    shards = _shard_runs(server, since)
    assert len(shards) == 4, "each shard once, and the killed one again"
    crashed = [run for run in shards if run.state_type.value == "CRASHED"]
    assert len(crashed) == 1, [(run.name, run.state_type) for run in shards]
    again = max(shards, key=lambda run: run.created)
    assert again.parameters["shard"] == crashed[0].parameters["shard"]
    assert set(again.parameters["lines"]) <= set(crashed[0].parameters["lines"])
    for n in stored:  # kept, not rendered again: reported by the dead run or found by the next
        assert rows[n]["flow_run"] == str(crashed[0].id) or rows[n]["warning"] == EARLIER_TRY
    left = {line - 1 for line in again.parameters["lines"]} - stored
    rendered_again = [rows[n] for n in left]
    assert rendered_again, "the killed shard had rows left"
    assert all(row["flow_run"] == str(again.id) for row in rendered_again)
    assert all(row["worker"] not in ("", killed) for row in rendered_again)
    puts = _video_puts(server, bucket)
    assert len(puts) == rows_count and set(puts.values()) == {1}, puts


@pytest.mark.slow
def test_a_server_that_stops_mid_run_ends_the_parent_in_seconds_with_its_results(
    stack: Stack,
) -> None:
    """Runs last: it stops the module's server."""
    server = stack.server
    bucket = _bucket(server, _manifest(6, frames=16, steps=30, size=128))
    render = _render(server, bucket, "--shards", "2", "--batch-size", "1")
    wait_for(lambda: len(_stored_rows(server, bucket)) >= 1, 180, "a first video")
    stop(server.process)  # `make server` stopped
    stopped = time.monotonic()
    _, stderr = render.communicate(timeout=120)
    took = time.monotonic() - stopped
    print(f"\nthe server stopped; the parent exited {took:.1f} s later")
    assert render.returncode == EXIT_ROWS_FAILED, stderr
    assert took < 15
    gone = f"the Prefect server at {server.api} stopped answering during the run"
    assert stderr.strip().splitlines()[-1] == (
        f"t2v: {gone}; results of the rows that finished: s3://{bucket}/out/results.csv (the "
        "others failed); videos already stored are kept: rerun the same command to resume"
    ), stderr
    assert "Traceback" not in stderr
    rows = _results(server, bucket)["rows"]
    assert len(rows) == 6
    failed = [row for row in rows if row["status"] == "failed"]
    assert failed and {row["error"] for row in failed} == {f"not rendered: {gone}; rerun to resume"}
    assert {row["status"] for row in rows} <= {"ok", "failed"}
