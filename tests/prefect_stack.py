"""A real Prefect set-up for end-to-end tests: the README's make targets on a copy of the project.

`running_server` is `make server` on a free loopback port with its own PREFECT_HOME (SQLite);
`running_worker` is `make worker`. Each command runs in a session of its own, and stopping it
stops every session it started (a process worker starts each flow run in a new session).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO
from tests.processes import alive_in, free_port, sessions_of, signal_sessions, wait_for


@dataclass
class Server:
    url: str  # the UI; the API is under /api
    env: dict[str, str]
    project: Path
    process: subprocess.Popen[bytes]  # `make server`: stop() it to stop the server

    @property
    def api(self) -> str:
        return f"{self.url}/api"


def make(project: Path, *arguments: str) -> list[str]:
    """`make TARGET` in the copied project, using this test run's installed .venv as is."""
    venv = Path(sys.executable).parent.parent
    return ["make", "-C", str(project), "-o", str(venv / ".installed"), f"VENV={venv}", *arguments]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # A session of its own, so stopping it stops every process it started.
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> set[int]:
    """Stop the command's session and the sessions its processes started: politely, then for
    sure. Returns the sessions, collected first: orphans of a stopped process lose their parent."""
    sessions = sessions_of(process.pid)
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        signal_sessions(sessions, sig)
        deadline = time.monotonic() + grace
        while alive_in(sessions) and time.monotonic() < deadline:
            process.poll()  # reaps the leader once it exits
            time.sleep(0.2)
    return sessions


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def copy_project(destination: Path) -> Path:
    """The files a fresh clone would have (tracked, plus new files not yet committed)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def listening_addresses(port: int) -> set[str]:
    """The local addresses of every socket listening on `port`, from the kernel's tables."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    # The kernel writes each 32-bit word in host (little-endian) order.
                    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
                    addresses.add(str(ipaddress.ip_address(b"".join(words))))
    return addresses


@contextlib.contextmanager
def running_server(tmp_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """`make server` on a free loopback port with its own PREFECT_HOME (SQLite, unless
    `extra_env` names another database)."""
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    project = copy_project(tmp_path / "project")
    process = start(make(project, "server", f"PREFECT_PORT={port}"), env, tmp_path / "s.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(url), 120, f"the Prefect server at {url}")
        # `make server` listens on loopback only: nobody else can reach the API.
        assert listening_addresses(port) == {"127.0.0.1"}
        yield Server(url, env, project, process)
    finally:
        assert not alive_in(stop(process)), "the Prefect server left processes behind"


@contextlib.contextmanager
def running_worker(
    server: Server, log: Path, name: str | None = None, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`make worker` (`WORKER_NAME=name`, with `env` added to the server's environment);
    the flow runs it started are stopped with it."""
    arguments = [] if name is None else [f"WORKER_NAME={name}"]
    process = start(make(server.project, "worker", *arguments), {**server.env, **(env or {})}, log)
    try:
        yield process
    finally:
        assert not alive_in(stop(process)), "the worker left processes behind"


def flow_runs(server: Server, deployment: str) -> list[Any]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with SyncPrefectClient(server.api) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def run_deployment(server: Server, name: str, parameters: dict[str, Any]) -> Any:
    """Start a run of `render-manifest/NAME`, as the UI's Run button does; returns its id."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(server.api) as client:
        deployment = client.read_deployment_by_name(f"render-manifest/{name}")
        return client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id
