"""The `render_manifest` flow on the session's Prefect test server, with the tiny model."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from flows.errors import RowsFailedError
from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from tasks.families.modelscope import ModelScope
from tasks.publish import ResultRow
from tests.factories import gallery_videos, tiny_manifest

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def _task_names(state: Any) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(run.name.rsplit("-", 1)[0] for run in runs)


def _run_logs(state: Any) -> list[str]:
    """Every log line of the flow run and its tasks, as the UI shows them."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs]


def _videos(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.mp4"))}


def test_demo_manifest_renders_every_row(rendered_demo: tuple[Path, list[ResultRow]]) -> None:
    folder, results = rendered_demo
    assert [r.status for r in results] == ["ok"] * 8
    assert sorted(Path(r.output).name for r in results) == sorted(_videos(folder))
    assert {"results.csv", "results.json", "index.html"} <= {p.name for p in folder.iterdir()}
    summary = json.loads((folder / "results.json").read_text())["summary"]
    assert summary["counts"]["ok"] == 8
    assert summary["model"] == "tiny-random"


def test_videos_removed_from_dest_leave_the_next_runs_gallery(tmp_path: Path) -> None:
    manifest, out = tiny_manifest(tmp_path, rows=4), tmp_path / "out"
    render_manifest(**RenderRequest(manifest=str(manifest), destination=str(out)).parameters())
    for video in sorted(out.glob("*.mp4"))[::2]:  # a user removes half of them
        video.unlink()
    again = RenderRequest(manifest=str(manifest), destination=str(out), limit=1)
    render_manifest(**again.parameters())
    links = [video["src"] for video in gallery_videos((out / "index.html").read_text())]
    assert sorted(links) == sorted(_videos(out)) and len(links) < 4


def test_rerun_skips_everything_without_rendering(tmp_path: Path) -> None:
    manifest = tiny_manifest(tmp_path, rows=3)
    request = RenderRequest(manifest=str(manifest), destination=str(tmp_path / "out"))
    render_manifest(**request.parameters())
    before = _videos(tmp_path / "out")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.mp4")}

    state = render_manifest(**request.parameters(), return_state=True)

    assert state.is_completed()
    assert state.result().counts == {"ok": 0, "skipped": 3, "failed": 0, "invalid": 0}
    assert "render" not in _task_names(state)
    assert "encode-and-publish" not in _task_names(state)
    assert _videos(tmp_path / "out") == before
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.mp4")} == mtimes
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open(encoding="utf-8-sig")))
    assert [row["status"] for row in rows] == ["skipped"] * 3
    assert all(Path(row["output"]).name in before for row in rows)


def test_force_renders_existing_rows_again(tmp_path: Path) -> None:
    manifest = tiny_manifest(tmp_path, rows=2)
    request = RenderRequest(manifest=str(manifest), destination=str(tmp_path / "out"))
    render_manifest(**request.parameters())
    inodes = {p.name: p.stat().st_ino for p in (tmp_path / "out").glob("*.mp4")}
    summary = render_manifest(**request.model_copy(update={"force": True}).parameters())
    assert summary.counts["ok"] == 2
    # Replaced, not kept: `--force` writes are not create-only.
    replaced = {p.name: p.stat().st_ino for p in (tmp_path / "out").glob("*.mp4")}
    assert replaced.keys() == inodes.keys() and all(replaced[k] != inodes[k] for k in inodes)


def test_changed_parameters_render_a_new_key(tmp_path: Path) -> None:
    manifest = tiny_manifest(tmp_path, rows=1)
    out = tmp_path / "out"
    render_manifest(**RenderRequest(manifest=str(manifest), destination=str(out)).parameters())
    manifest.write_text(manifest.read_text().replace(",8\n", ",12\n"))  # fps 8 -> 12
    summary = render_manifest(
        **RenderRequest(manifest=str(manifest), destination=str(out)).parameters()
    )
    assert summary.counts["ok"] == 1
    assert len(_videos(out)) == 2


def test_twenty_rows_load_the_model_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Weights no other test loads: the process caches pipelines by content.
    ModelScope().build_tiny(seed=20).save_pretrained(tmp_path / "model")
    manifest = tiny_manifest(tmp_path, rows=20)
    caplog.set_level(logging.INFO, logger="t2v")
    request = RenderRequest(
        manifest=str(manifest),
        destination=str(tmp_path / "out"),
        model=str(tmp_path / "model"),
        batch_size=3,
    )
    summary = render_manifest(**request.parameters())
    assert summary.counts["ok"] == 20
    assert len([r for r in caplog.records if r.getMessage().startswith("loaded ")]) == 1


def test_invalid_rows_fail_the_run_after_writing_results(tmp_path: Path) -> None:
    manifest = tmp_path / "mixed.csv"
    manifest.write_text(
        "id,prompt,num_frames,height,width,num_inference_steps\n"
        "good,a cat,4,64,64,2\n"
        "bad,a dog,4,100,64,2\n"
        "good,a repeat,4,64,64,2\n"
    )
    out = tmp_path / "out"
    state = render_manifest(
        **RenderRequest(manifest=str(manifest), destination=str(out)).parameters(),
        return_state=True,
    )
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, RowsFailedError)
    assert error.summary.counts == {"ok": 1, "skipped": 0, "failed": 0, "invalid": 2}
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8-sig")))
    assert [(r["id"], r["status"]) for r in rows] == [
        ("good", "ok"),
        ("bad", "invalid"),
        ("good", "invalid"),
    ]
    # The run's logs say what happened in a line each; an expected failure has no traceback.
    logs = _run_logs(state)
    assert any(
        line.startswith("rendered 1 of 1 rows (4 frames of 64×64, 2 steps) with tiny-random on ")
        for line in logs
    ), logs
    assert "3 rows: 1 ok, 0 skipped, 0 failed, 2 invalid in" in "\n".join(logs)
    assert not [line for line in logs if "Traceback" in line], logs
    assert "height" in rows[1]["error"]


def test_limit_processes_only_the_first_rows(tmp_path: Path) -> None:
    manifest = tiny_manifest(tmp_path, rows=5)
    out = tmp_path / "out"
    summary = render_manifest(
        **RenderRequest(manifest=str(manifest), destination=str(out), limit=2).parameters()
    )
    assert summary.counts["ok"] == 2
    assert len(list(csv.DictReader((out / "results.csv").open(encoding="utf-8-sig")))) == 2


def _run_date(state: Any) -> str:
    """The local date of the flow run's scheduled start: what {date} stands for outside a
    deployment."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.expected_start_time is not None
    return run.expected_start_time.astimezone().date().isoformat()


def test_date_in_paths_is_the_run_date(tmp_path: Path) -> None:
    # A run starts after this line, today or, past midnight, tomorrow: both manifests exist.
    today = dt.date.today()
    for day in (today, today + dt.timedelta(days=1)):
        tiny_manifest(tmp_path, rows=1, name=f"prompts-{day.isoformat()}.csv")
    request = RenderRequest(
        manifest=str(tmp_path / "prompts-{date}.csv"), destination=str(tmp_path / "{date}")
    )
    state = render_manifest(**request.parameters(), return_state=True)
    summary = state.result()
    run_date = _run_date(state)
    assert summary.counts["ok"] == 1
    assert summary.results == str(tmp_path / run_date / "results.csv")


def test_missing_dated_manifest_fails_naming_the_file(tmp_path: Path) -> None:
    request = RenderRequest(manifest=str(tmp_path / "{date}.csv"), destination=str(tmp_path))
    state = render_manifest(**request.parameters(), return_state=True)
    assert state.is_failed()
    expected = tmp_path / f"{_run_date(state)}.csv"
    assert str(state.result(raise_on_failure=False)) == (
        f"cannot read {expected}: No such file or directory"
    )
    assert list(tmp_path.iterdir()) == []


def test_progress_says_what_the_run_is_doing(tmp_path: Path) -> None:
    from flows import progress

    class Recorder:
        def __init__(self) -> None:
            self.events: list[str] = []

        def phase(self, text: str) -> None:
            self.events.append(text)

        def started(self, total_rows: int) -> None:
            self.events.append(f"{total_rows} rows")

        def row_finished(self, result: ResultRow) -> None:
            self.events.append(result.status)

    recorder = Recorder()
    manifest = tiny_manifest(tmp_path, rows=3)
    request = RenderRequest(manifest=str(manifest), destination=str(tmp_path / "out"), batch_size=2)
    with progress.listening(recorder):
        render_manifest(**request.parameters())
    assert recorder.events == [
        "reading the manifest",
        "3 rows",
        "loading tiny-random on auto",
        "rendering batch 1 of 2 on cpu",
        "rendering batch 2 of 2 on cpu",
        "ok",
        "ok",
        "ok",
    ]


def test_a_failing_progress_listener_is_logged_and_the_run_goes_on(tmp_path: Path) -> None:
    from flows import progress

    class Unreachable:
        """A listener whose every event fails, as an artifact update does in an API blip."""

        def phase(self, text: str) -> None:
            raise ConnectionError("the API is away")

        def started(self, total_rows: int) -> None:
            raise ConnectionError("the API is away")

        def row_finished(self, result: ResultRow) -> None:
            raise ConnectionError("the API is away")

    manifest = tiny_manifest(tmp_path, rows=2)
    request = RenderRequest(manifest=str(manifest), destination=str(tmp_path / "out"))
    with progress.listening(Unreachable()):
        state = render_manifest(**request.parameters(), return_state=True)
    assert state.is_completed()
    assert state.result().counts["ok"] == 2
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open(encoding="utf-8-sig")))
    assert [row["status"] for row in rows] == ["ok", "ok"]
    failures = [line for line in _run_logs(state) if "the API is away" in line]
    assert failures and all("\n" not in line and "Traceback" not in line for line in failures)


def test_batches_take_the_device_in_manifest_order_and_publish_as_each_ends(
    tmp_path: Path,
) -> None:
    import time

    from flows import progress
    from flows.progress import RenderedBatch

    class Timeline:
        def __init__(self) -> None:
            self.batches: list[RenderedBatch] = []
            self.finished: dict[int, float] = {}  # by manifest line

        def phase(self, text: str) -> None:
            """Phases are not timed here."""

        def started(self, total_rows: int) -> None:
            """Nor the start."""

        def batch_rendered(self, batch: RenderedBatch) -> None:
            self.batches.append(batch)

        def row_finished(self, result: ResultRow) -> None:
            self.finished[result.line] = time.time()

    manifest = tmp_path / "m.csv"
    rows = [f"clip-{n},a tiny scene number {n},{n},8,64,64,12,8\n" for n in range(5)]
    manifest.write_text(
        "id,prompt,seed,num_frames,height,width,num_inference_steps,fps\n" + "".join(rows)
    )
    out = tmp_path / "out"
    timeline = Timeline()
    request = RenderRequest(manifest=str(manifest), destination=str(out), batch_size=2)
    with progress.listening(timeline):
        summary = render_manifest(**request.parameters())
    assert summary.counts["ok"] == 5
    by_start = sorted(timeline.batches, key=lambda batch: batch.started)
    assert [batch.number for batch in by_start] == [1, 2, 3]
    assert [batch.lines for batch in by_start] == [[1, 2], [3, 4], [5]]
    for before, after in itertools.pairwise(by_start):
        assert before.ended <= after.started  # one at a time
    first, _, last = by_start
    # Batch 1's videos are stored while batch 3 still waits for the device or renders.
    assert max(timeline.finished[line] for line in first.lines) < last.ended
    results = list(csv.DictReader((out / "results.csv").open(encoding="utf-8-sig")))
    for batch in by_start:
        # render_s counts from taking the device, never the wait for it.
        spent = sum(float(results[line - 1]["render_s"]) for line in batch.lines)
        assert spent <= batch.ended - batch.started + 0.01
        assert all(timeline.finished[line] >= batch.ended for line in batch.lines)


def test_a_bad_variable_the_flow_could_not_take_is_one_line_in_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T2V_BATCH_SIZE", "abc")
    manifest = tiny_manifest(tmp_path, rows=1)
    request = RenderRequest(manifest=str(manifest), destination=str(tmp_path / "out"), batch_size=2)
    state = render_manifest(**request.parameters(), return_state=True)
    assert state.is_completed()
    warnings = [line for line in _run_logs(state) if line.startswith("T2V_BATCH_SIZE='abc': ")]
    assert len(warnings) == 1 and warnings[0].endswith("; this run does not use it"), warnings
