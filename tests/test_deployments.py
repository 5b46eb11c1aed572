"""prefect.yaml for real: a Prefect server, the `gpu` pool, a worker, and a run started in the UI.

The make targets a user follows in the README (`server`, `deploy`, `worker`) run here
against a copy of the project, as if freshly cloned; the browser is Debian's Chromium.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM_FLAGS, REPO

pytestmark = pytest.mark.slow

MANIFEST = "id,prompt,num_frames,height,width,num_inference_steps\n" + "".join(
    f"ui-{n},a small paper boat number {n},4,64,64,2\n" for n in range(3)
)


@dataclass
class Server:
    url: str  # the UI; the API is under /api
    env: dict[str, str]
    project: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _make(project: Path, *arguments: str) -> list[str]:
    """`make TARGET` in the copied project, using this test run's installed .venv as is."""
    venv = Path(sys.executable).parent.parent
    return ["make", "-C", str(project), "-o", str(venv / ".installed"), f"VENV={venv}", *arguments]


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # A session of its own, so stopping it stops every process it started.
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the process's whole session: politely, then for sure."""
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while _session(process) and time.monotonic() < deadline:
            process.poll()  # reaps the leader once it exits
            time.sleep(0.2)


def _session(process: subprocess.Popen[bytes]) -> list[str]:
    """The processes still in the session the command was started in."""
    listing = subprocess.run(
        ["ps", "-eo", "sid=,pid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [
        line.strip()
        for line in listing.splitlines()
        if line.split()[0] == str(process.pid) and "Z" not in line.split()[2]
    ]


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _copy_project(destination: Path) -> Path:
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`make server` on a free loopback port with its own PREFECT_HOME (SQLite)."""
    port = _free_port()
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    project = _copy_project(tmp_path / "project")
    process = _start(_make(project, "server", f"PREFECT_PORT={port}"), env, tmp_path / "s.log")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _healthy(url), 120, f"the Prefect server at {url}")
        yield Server(url, env, project)
    finally:
        _stop(process)
        assert not _session(process), "the Prefect server left processes behind"


@pytest.fixture
def worker(server: Server, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    subprocess.run(_make(server.project, "deploy"), env=server.env, check=True)
    process = _start(_make(server.project, "worker"), server.env, tmp_path / "w.log")
    try:
        yield process
    finally:
        _stop(process)
        assert not _session(process), "the worker left processes behind"


def _flow_runs(server: Server, deployment: str) -> list[Any]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with SyncPrefectClient(server.api) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def _run_deployment(server: Server, name: str, parameters: dict[str, Any]) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(server.api) as client:
        deployment = client.read_deployment_by_name(f"render-manifest/{name}")
        return client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id


def _bad_row_request(tmp_path: Path) -> dict[str, Any]:
    manifest = tmp_path / "one-bad-row.csv"
    manifest.write_text(MANIFEST.splitlines()[0] + "\ngood,a cat,4,64,64,2\nbad,a dog,4,100,64,2\n")
    return {"request": {"manifest": str(manifest), "destination": str(tmp_path / "bad-out")}}


def test_ui_started_run_renders_and_shows_artifacts(
    server: Server, worker: subprocess.Popen[bytes], chromium: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    # The nightly deployment holds its upcoming runs at 02:00 UTC.
    _wait_for(lambda: bool(_flow_runs(server, "nightly")), 90, "the nightly schedule's runs")
    nightly = _flow_runs(server, "nightly")
    for run in nightly:
        start = run.expected_start_time.astimezone(UTC)
        assert (run.state_type.value, start.hour, start.minute) == ("SCHEDULED", 2, 0)

    # Typed with {date}: an unscheduled run reads it as the worker's local date.
    today = dt.date.today().isoformat()
    (tmp_path / f"prompts-{today}.csv").write_text(MANIFEST)
    destination = tmp_path / "renders" / today
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on(
            "response",
            lambda r: (
                problems.append(f"{r.status} {r.url}: {r.text()[:500]}")
                if r.status >= 400
                else None
            ),
        )
        try:
            page.goto(f"{server.url}/deployments")
            page.get_by_role("link", name="on-demand").first.click()
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()

            def field(label: str) -> Any:
                # Labels nest (the `request` model holds every field): take the innermost.
                labelled = page.locator(".p-label", has=page.get_by_text(label, exact=True))
                return labelled.last.locator("textarea, input").first

            # A bad value is refused by the form, before any run exists.
            field("Batch Size (Optional)").fill("0")
            page.get_by_role("button", name="Submit").click()
            expect(page.get_by_text("0 is less than the minimum of 1").first).to_be_visible()
            assert _flow_runs(server, "on-demand") == []

            # A fresh form for the real run: the UI can fail to resubmit after a refusal.
            page.reload()
            field("Batch Size (Optional)").fill("2")
            field("Manifest (Optional)").fill(str(tmp_path / "prompts-{date}.csv"))
            field("Destination (Optional)").fill(str(tmp_path / "renders" / "{date}"))
            page.get_by_role("button", name="Submit").click()
            _wait_for(
                lambda: bool(_flow_runs(server, "on-demand")), 30, f"the UI's run: {problems}"
            )
            (run,) = _flow_runs(server, "on-demand")

            page.goto(f"{server.url}/runs/flow-run/{run.id}")
            state = page.locator(".page-heading-flow-run__meta .state-badge")
            expect(state).to_have_text("Completed", timeout=240_000)
            page.get_by_text("Artifacts", exact=True).click()
            for key in ("render-progress", "render-results", "render-summary"):
                expect(page.get_by_text(key).first).to_be_visible()
            page.screenshot(path=str(tmp_path / "flow-run.png"), full_page=True)
            page.get_by_text("render-summary").first.click()
            expect(page.get_by_text("videos per minute").first).to_be_visible()
            page.screenshot(path=str(tmp_path / "summary.png"), full_page=True)

            # A run with a bad row writes its results, then shows Failed with the reason.
            failed = _run_deployment(server, "on-demand", _bad_row_request(tmp_path))
            page.goto(f"{server.url}/runs/flow-run/{failed}")
            expect(state).to_have_text("Failed", timeout=240_000)
            expect(page.get_by_text("1 ok, 1 invalid; see").first).to_be_visible()
            page.screenshot(path=str(tmp_path / "failed-run.png"), full_page=True)
        finally:
            page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
            browser.close()

    videos = sorted(path.name.split("-")[0:2] for path in destination.glob("*.mp4"))
    assert videos == [["ui", str(n)] for n in range(3)]
    assert {"results.csv", "results.json", "index.html"} <= {p.name for p in destination.iterdir()}
    assert (tmp_path / "flow-run.png").stat().st_size > 10_000
