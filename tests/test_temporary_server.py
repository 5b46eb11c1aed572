"""The temporary Prefect server of a `t2v render` with no PREFECT_API_URL: a database of its
own, safe first starts side by side, and signals that land while it starts."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.processes import alive, child_running, processes, wait_for

pytestmark = pytest.mark.slow
T2V = [sys.executable, "-m", "flows.cli"]


def _start(tmp_path: Path, home: Path, name: str) -> subprocess.Popen[str]:
    manifest = tmp_path / f"{name}.csv"
    manifest.write_text(
        "id,prompt,num_frames,height,width,num_inference_steps\na,a boat,2,64,64,1\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), OMP_NUM_THREADS="1")
    command = [*T2V, "render", str(manifest), "--model", "tiny-random",
               "--out", str(tmp_path / f"out-{name}")]  # fmt: skip
    return subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def _finish(t2v: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, err = t2v.communicate(timeout=300)
    finally:
        if t2v.poll() is None:
            os.killpg(t2v.pid, signal.SIGKILL)
    return t2v.returncode, out + err


def test_temporary_runs_keep_out_of_the_database_make_server_serves(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    code, output = _finish(_start(tmp_path, home, "one"))
    assert code == 0, output
    # `prefect server start` (make server) serves PREFECT_HOME/prefect.db: a CLI run is
    # not a team's run, and shows up in no team's UI.
    assert not (home / "prefect.db").exists()
    assert (home / "t2v-temporary.db").is_file()
    # No crash detection watches a server that dies with t2v: its run sends no heartbeat,
    # whose thread would hold up the run's end by up to a second.
    with contextlib.closing(sqlite3.connect(home / "t2v-temporary.db")) as db:
        events = dict(db.execute("SELECT event, count(*) FROM events GROUP BY event").fetchall())
    assert events.get("prefect.flow-run.Completed") == 1, events
    assert "prefect.flow-run.heartbeat" not in events, events


def test_two_first_runs_at_once_both_render(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"  # new: both runs' servers create its database
    runs = [_start(tmp_path, home, name) for name in ("one", "two")]
    outcomes = [_finish(run) for run in runs]
    for code, output in outcomes:
        assert code == 0, output
        assert "1 ok" in output


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_the_server_starts_ends_t2v_and_the_server_at_once(
    tmp_path: Path, signum: int, code: int
) -> None:
    t2v = _start(tmp_path, tmp_path / "prefect-home", "one")
    try:
        server: list[int] = []

        def started() -> bool:
            try:
                server.append(child_running(t2v.pid, "flows.serve_temporary"))
            except AssertionError:
                return False
            return True

        wait_for(started, 120, "the temporary server's process", poll=0.05)
        os.killpg(t2v.pid, signum)
        _, stderr = t2v.communicate(timeout=30)
        ended = time.monotonic()
    finally:
        if t2v.poll() is None:
            os.killpg(t2v.pid, signal.SIGKILL)
    assert t2v.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert lines == [
        f"t2v: interrupted by {signal.Signals(signum).name} before the run started; "
        "nothing was rendered"
    ], stderr
    wait_for(lambda: not alive(server[0]), 1, "the server to be gone", poll=0.05)
    assert time.monotonic() - ended < 1


def test_a_refused_manifest_leaves_no_temporary_server_behind(tmp_path: Path) -> None:
    """The server is launched before the input is checked, so that it boots meanwhile: a
    refusal ends it too."""
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home))
    command = [*T2V, "render", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "missing.csv" in done.stderr, done.stderr
    wait_for(lambda: not _servers_of(home), 5, "the temporary server to end", poll=0.1)
    assert not (tmp_path / "out").exists()


def _servers_of(home: Path) -> list[int]:
    """Temporary servers running with PREFECT_HOME=home."""
    found = []
    for pid, *_, args in processes():
        if "flows.serve_temporary" not in args:
            continue
        with contextlib.suppress(OSError):
            if f"PREFECT_HOME={home}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
    return found


def test_the_server_is_launched_before_t2v_imports_torch(tmp_path: Path) -> None:
    """The server's boot (seconds) overlaps t2v's imports of torch, diffusers and Prefect
    (seconds): `flows.cli` and the launch import neither."""
    probe = (
        "import sys; from flows.cli import main; from flows.temporary_server import server_for\n"
        "with server_for(['render', 'x.csv']) as launched:\n"
        "    print(launched is not None and launched.exit_code() is None,\n"
        "          sorted(m for m in ('torch', 'diffusers', 'prefect') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"))
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "[]"]


@pytest.mark.parametrize(
    ("argv", "api"),
    [
        (["check", "m.csv"], None),
        (["models"], None),
        (["render", "m.csv"], "http://127.0.0.1:9/api"),
    ],
)
def test_no_server_is_launched_for_other_commands_or_a_configured_api(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], api: str | None
) -> None:
    from flows.temporary_server import server_for

    if api is None:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
    else:
        monkeypatch.setenv("PREFECT_API_URL", api)
    with server_for(argv) as launched:
        assert launched is None
