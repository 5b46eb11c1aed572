"""prefect.yaml for real: a Prefect server, the `gpu` pool, a worker, and a run started in the UI.

The make targets a user follows in the README (`server`, `deploy`, `worker`) run here
against a copy of the project, as if freshly cloned; the browser is Debian's Chromium.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM_FLAGS
from tests.factories import commit_to_bare_repo, git
from tests.prefect_stack import (
    Server,
    copy_project,
    flow_runs,
    make,
    run_deployment,
    running_server,
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.slow

MANIFEST = "id,prompt,num_frames,height,width,num_inference_steps\n" + "".join(
    f"ui-{n},a small paper boat number {n},4,64,64,2\n" for n in range(3)
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path) as server:
        yield server


@pytest.fixture
def worker(server: Server, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    subprocess.run(make(server.project, "deploy"), env=server.env, check=True)
    with running_worker(server, tmp_path / "w.log") as process:
        yield process


def _bad_row_request(tmp_path: Path) -> dict[str, Any]:
    manifest = tmp_path / "one-bad-row.csv"
    manifest.write_text(MANIFEST.splitlines()[0] + "\ngood,a cat,4,64,64,2\nbad,a dog,4,100,64,2\n")
    return {"manifest": str(manifest), "destination": str(tmp_path / "bad-out")}


def test_ui_started_run_renders_and_shows_artifacts(
    server: Server, worker: subprocess.Popen[bytes], chromium: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    # The nightly deployment holds its upcoming runs at 02:00 UTC.
    wait_for(lambda: bool(flow_runs(server, "nightly")), 90, "the nightly schedule's runs")
    nightly = flow_runs(server, "nightly")
    for run in nightly:
        start = run.expected_start_time.astimezone(UTC)
        assert (run.state_type.value, start.hour, start.minute) == ("SCHEDULED", 2, 0)

    # Typed with {date}: an unscheduled run reads it as the worker's local date, today's or,
    # past midnight, tomorrow's.
    today = dt.date.today()
    for day in (today, today + dt.timedelta(days=1)):
        (tmp_path / f"prompts-{day.isoformat()}.csv").write_text(MANIFEST)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        problems: list[str] = []

        def new_page() -> Any:
            """A page in a browser context of its own that records errors in `problems`."""
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(30_000)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on(
                "response",
                lambda r: (
                    problems.append(f"{r.status} {r.url}: {r.text()[:500]}")
                    if r.status >= 400
                    else None
                ),
            )
            return page

        def open_custom_run_form(page: Any) -> None:
            page.goto(f"{server.url}/deployments")
            page.get_by_role("link", name="on-demand").first.click()
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()

        page = new_page()
        try:
            open_custom_run_form(page)

            def field(label: str) -> Any:
                labelled = page.locator(".p-label", has=page.get_by_text(label, exact=True))
                return labelled.last.locator("textarea, input").first

            # A bad value is refused by the form, before any run exists.
            field("batch_size (Optional)").fill("0")
            page.get_by_role("button", name="Submit").click()
            expect(page.get_by_text("0 is less than the minimum of 1").first).to_be_visible()
            assert flow_runs(server, "on-demand") == []

            # A fresh form for the real run, in a browser context of its own: after a
            # refusal, the UI can submit the refused value again, even past a reload. Each
            # value is checked before submitting: a loading form can drop what was typed.
            page.close()
            page = new_page()
            open_custom_run_form(page)
            values = {
                "batch_size (Optional)": "2",
                "manifest (Optional)": str(tmp_path / "prompts-{date}.csv"),
                "destination (Optional)": str(tmp_path / "renders" / "{date}"),
            }
            for label, value in values.items():
                expect(field(label)).to_be_editable()
                field(label).fill(value)
            for label, value in values.items():
                expect(field(label)).to_have_value(value)
            page.get_by_role("button", name="Submit").click()
            wait_for(lambda: bool(flow_runs(server, "on-demand")), 30, f"the UI's run: {problems}")
            (run,) = flow_runs(server, "on-demand")

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
            failed = run_deployment(server, "on-demand", _bad_row_request(tmp_path))
            page.goto(f"{server.url}/runs/flow-run/{failed}")
            expect(state).to_have_text("Failed", timeout=240_000)
            expect(
                page.get_by_text("1 ok, 0 skipped, 0 failed, 1 invalid; see").first
            ).to_be_visible()
            page.screenshot(path=str(tmp_path / "failed-run.png"), full_page=True)
        finally:
            page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
            browser.close()

    # One parameter overridden from the command line; the deployment's others are kept.
    prefect = str(Path(sys.executable).parent / "prefect")
    command = [prefect, "deployment", "run", "render-manifest/on-demand", "--param", "batch_size=3"]
    subprocess.run(command, env=server.env, cwd=server.project, check=True, capture_output=True)
    (by_cli,) = [r for r in flow_runs(server, "on-demand") if r.parameters.get("batch_size") == 3]
    assert by_cli.parameters == {
        "manifest": "examples/prompts.csv",
        "destination": "out",
        "model": "tiny-random",
        "batch_size": 3,
    }
    wait_for(lambda: _state(server, by_cli.id)[0] == "COMPLETED", 240, "the --param run")
    assert len(list((server.project / "out").glob("*.mp4"))) == 8

    (destination,) = (tmp_path / "renders").iterdir()
    assert destination.name in {today.isoformat(), (today + dt.timedelta(days=1)).isoformat()}
    videos = sorted(path.name.split("-")[0:2] for path in destination.glob("*.mp4"))
    assert videos == [["ui", str(n)] for n in range(3)]
    assert {"results.csv", "results.json", "index.html"} <= {p.name for p in destination.iterdir()}
    assert (tmp_path / "flow-run.png").stat().st_size > 10_000


# Appended to the deployed commit's flows/__init__.py: says where a process imported it from.
IMPORTED_FROM = """
import os as _os

if "T2V_IMPORTED_FROM" in _os.environ:
    with open(_os.environ["T2V_IMPORTED_FROM"], "w") as _out:
        _out.write(__file__)
"""


def test_a_worker_elsewhere_runs_the_deployed_commit_from_its_own_clone(
    server: Server, tmp_path: Path
) -> None:
    # The team's repository holds a commit whose demo manifest and `flows` package differ
    # from the worker's copy of the project, so what ran shows where its code came from.
    source = copy_project(tmp_path / "source")
    (source / "examples" / "prompts.csv").write_text(MANIFEST)
    with (source / "flows" / "__init__.py").open("a") as init:
        init.write(IMPORTED_FROM)
    commit = commit_to_bare_repo(source, tmp_path / "t2v.git")
    deployer = tmp_path / "deployer"
    git(tmp_path, "clone", "--quiet", (tmp_path / "t2v.git").as_uri(), str(deployer))

    # Work not committed would not be in the workers' clones: refused, in one line. (Files
    # git does not track, such as an output folder, are not code and refuse nothing.)
    (deployer / "notes.txt").write_text("not tracked\n")
    (deployer / "examples" / "prompts.csv").write_text("prompt\nwork in progress\n")
    deploy = make(deployer, "deploy", "CODE_REPO=origin")
    refused = subprocess.run(deploy, env=server.env, capture_output=True, text=True)
    assert refused.returncode != 0
    url = (tmp_path / "t2v.git").as_uri()
    assert refused.stderr.splitlines()[0] == (
        f"make deploy: T2V_CODE_REPO={url} deploys a commit, but {deployer} has 1 uncommitted "
        "change(s) (first: M examples/prompts.csv): commit and push them, or deploy without "
        "T2V_CODE_REPO to run this folder as it is"
    )
    assert "work-pool" not in refused.stdout  # refused before anything was created
    git(deployer, "checkout", "--", "examples/prompts.csv")
    deployed = subprocess.run(deploy, env=server.env, check=True, capture_output=True, text=True)
    assert f"workers run commit {commit} of {url}, cloned once per machine" in deployed.stdout

    # The worker runs in another folder (server.project, not a git repository).
    cache, imported_from = tmp_path / "worker-cache", tmp_path / "imported-from"
    checkout = cache / "t2v" / "code" / commit
    env = {"XDG_CACHE_HOME": str(cache), "T2V_IMPORTED_FROM": str(imported_from)}
    ended = {"COMPLETED", "FAILED", "CRASHED"}
    with running_worker(server, tmp_path / "w.log", env=env):
        # The demo's relative `out` would land inside the clone: refused in one line.
        relative = run_deployment(server, "on-demand", {})
        wait_for(lambda: _state(server, relative)[0] in ended, 300, "the relative run")
        absolute = {"manifest": str(checkout / "examples" / "prompts.csv")}
        absolute["destination"] = str(tmp_path / "out")
        run = run_deployment(server, "on-demand", absolute)
        wait_for(lambda: _state(server, run)[0] in ended, 300, "the on-demand run")
    refused, message = _state(server, relative)
    assert refused == "FAILED"
    assert message.endswith(
        "CodeError: manifest 'examples/prompts.csv' is a relative path, and this run's code is "
        f"commit {commit} cloned in {checkout.parent}, where it would resolve: give an absolute "
        "path (a folder every worker sees) or an s3:// URI"
    )
    assert _state(server, run)[0] == "COMPLETED"

    assert imported_from.read_text() == str(checkout / "flows" / "__init__.py")
    videos = sorted(path.name.split("-")[0:2] for path in (tmp_path / "out").glob("*.mp4"))
    assert videos == [["ui", str(n)] for n in range(3)]
    assert not (checkout / "out").exists()
    assert not (server.project / "out").exists()
    assert not (deployer / "out").exists()


def test_a_shard_whose_worker_cannot_fetch_the_code_fails_with_the_workers_cause(
    server: Server, tmp_path: Path
) -> None:
    commit_to_bare_repo(copy_project(tmp_path / "source"), tmp_path / "t2v.git")
    deployer = tmp_path / "deployer"
    url = (tmp_path / "t2v.git").as_uri()
    git(tmp_path, "clone", "--quiet", url, str(deployer))
    deploy = make(deployer, "deploy", "CODE_REPO=origin", "CRASH_AFTER_S=45")
    subprocess.run(deploy, env=server.env, check=True, capture_output=True)
    (tmp_path / "t2v.git").rename(tmp_path / "moved.git")  # the repository moved away
    manifest = tmp_path / "m.csv"
    manifest.write_text(MANIFEST)
    env = {**server.env, "T2V_SHARED_FOLDER": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with running_worker(server, tmp_path / "w.log", env=env):
        command = [sys.executable, "-m", "flows.cli", "render", str(manifest), "--shards", "1"]
        command += ["--out", str(tmp_path / "out"), "--model", "tiny-random"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    errors = {row["error"] for row in rows}
    assert len(errors) == 1, errors
    (error,) = errors
    assert error.startswith(
        f"shard 1's run ended Crashed 3 times, last: cannot clone {url}: fatal: "
    ), error
    assert "\n" not in error


def _state(server: Server, run_id: Any) -> tuple[str, str]:
    """The run's state type and message."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(server.api) as client:
        state = client.read_flow_run(run_id).state
    return (state.type.value, state.message or "") if state else ("", "")
