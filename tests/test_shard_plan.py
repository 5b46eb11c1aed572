"""Sharded runs without a server: how rows split, which locations workers share, the shard
results file, and when a shard whose run ended is started again."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from prefect import states

from flows import progress
from flows.shard_flow import ShardRecorder
from flows.shard_runs import (
    CANCELLED,
    EARLIER_TRY,
    MAX_TRIES,
    ShardRun,
    next_step,
    shards_applied,
)
from tasks.batching import batch_shape
from tasks.errors import ShardError
from tasks.presets import resolve_model
from tasks.publish import OutputPlan
from tasks.results import ResultRow
from tasks.shards import (
    ShardRecord,
    check_run_marker,
    read_shard_record,
    shard_key,
    shared_location,
    split_into_shards,
    write_run_marker,
    write_shard_record,
)
from tests.factories import render_row


def test_shards_hold_whole_batches_of_compatible_rows_in_order() -> None:
    rows = [render_row(n, height=32 if n % 2 else 64) for n in range(1, 13)]
    shards = split_into_shards(rows, batch_size=2, shards=4, shard_rows=100)
    assert len(shards) == 4
    assert sorted(row.line for shard in shards for row in shard) == list(range(1, 13))
    for shard in shards:
        # Each shard's rows come in batches of one shape: no batch is split across shards.
        shapes = [batch_shape(row) for row in shard]
        assert all(shapes[i] == shapes[i + 1] for i in range(0, len(shapes), 2))
    assert [len(shard) for shard in shards] == [4, 4, 2, 2]  # 6 batches of 2 into 4 shards


def test_shard_count_follows_shard_rows_and_never_exceeds_the_batches() -> None:
    rows = [render_row(n) for n in range(1, 11)]
    assert [len(s) for s in split_into_shards(rows, 1, None, shard_rows=4)] == [4, 3, 3]
    assert len(split_into_shards(rows, batch_size=5, shards=6, shard_rows=4)) == 2
    assert split_into_shards([], 1, 3, 4) == []


def test_local_locations_need_the_user_to_say_every_worker_shares_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("T2V_SHARED_FOLDER", raising=False)
    assert shared_location("s3://bucket/out") == "s3://bucket/out"
    with pytest.raises(ShardError, match="T2V_SHARED_FOLDER=1"):
        shared_location("out")
    monkeypatch.setenv("T2V_SHARED_FOLDER", "1")
    monkeypatch.chdir(tmp_path)
    assert shared_location("out") == str(tmp_path / "out")


def test_a_worker_that_does_not_see_the_destination_refuses_before_writing(
    tmp_path: Path,
) -> None:
    # The user said the folder is shared, but this worker's path is another folder.
    parent_sees, worker_sees = tmp_path / "mounted", tmp_path / "local"
    write_run_marker(str(parent_sees), "run-1")
    check_run_marker(str(parent_sees), "run-1", "w1")
    with pytest.raises(ShardError, match=r"worker w2 does not see .*local.* as the run's parent"):
        check_run_marker(str(worker_sees), "run-1", "w2")
    assert not worker_sees.exists(), "nothing was written where the parent will not look"
    with pytest.raises(ShardError, match="does not see"):
        check_run_marker(str(parent_sees), "run-2", "w1")  # another run's marker is not this run's


def _state(name: str) -> Any:
    return getattr(states, name)()


def _record(run: ShardRun, complete: bool, rows: list[ResultRow]) -> ShardRecord:
    return ShardRecord(run.number, str(run.flow_run), "w1", "cpu", complete, rows)


def test_shard_record_round_trips_through_the_destination(tmp_path: Path) -> None:
    row = ResultRow.for_row(render_row(3), "ok", "tiny-random", output="x.mp4", bytes=5)
    record = ShardRecord(2, "run-id", "w1", "cpu", True, [row])
    assert read_shard_record(str(tmp_path), "parent", 2) is None
    write_shard_record(str(tmp_path), "parent", record)
    assert (tmp_path / shard_key("parent", 2)).is_file()
    assert read_shard_record(str(tmp_path), "parent", 2) == record


def test_a_shard_record_of_another_version_reads_in_one_line(tmp_path: Path) -> None:
    row = ResultRow.for_row(render_row(3), "ok", "tiny-random", output="x.mp4", bytes=5)
    write_shard_record(str(tmp_path), "parent", ShardRecord(2, "run-id", "w1", "cpu", True, [row]))
    path = tmp_path / shard_key("parent", 2)
    document = json.loads(path.read_text())
    # A newer version's fields are ignored.
    document["rows"][0]["new_column"], document["new_field"] = "x", 1
    path.write_text(json.dumps(document))
    assert read_shard_record(str(tmp_path), "parent", 2) == ShardRecord(
        2, "run-id", "w1", "cpu", True, [row]
    )
    # An older version's record lacks fields this one needs.
    del document["rows"][0]["status"]
    path.write_text(json.dumps(document))
    with pytest.raises(ShardError) as raised:
        read_shard_record(str(tmp_path), "parent", 2)
    assert str(raised.value) == (
        f"{tmp_path / shard_key('parent', 2)} was written by another version of t2v (its "
        "workers run the deployed commit): make deploy from this checkout, then rerun"
    )


def test_a_shard_record_that_cannot_be_written_is_logged_and_rows_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".t2v").write_text("a file where the records' folder goes")
    recorder = ShardRecorder(str(tmp_path), "parent", 1)
    row = ResultRow.for_row(render_row(1), "ok", "tiny-random", output="x.mp4", bytes=5)
    with progress.listening(recorder):
        progress.row_finished(row)
    assert recorder.rows == [row]
    (logged,) = [r.getMessage() for r in caplog.records if "ShardRecorder" in r.getMessage()]
    assert logged.startswith("progress listener ShardRecorder failed on row_finished, the run")


def test_a_shard_that_reported_every_row_is_not_started_again_even_with_failed_rows() -> None:
    run = ShardRun(1, [render_row(1), render_row(2)], tries=1, flow_run=uuid4())
    failed = [ResultRow.for_row(row, "failed", "m", error="bad") for row in run.rows]
    list(run.take(failed))
    assert next_step(run, _record(run, True, failed), _state("Completed")) == "finished"


def test_the_parent_reports_the_devices_and_speed_levers_its_shards_applied(
    tmp_path: Path,
) -> None:
    levers = {"wan": {"applied": {"attention": "flash"}, "skipped": {"compile": "CPU"}}}
    runs = [ShardRun(n, [render_row(n)], tries=1, flow_run=uuid4()) for n in (1, 2)]
    for run, device in zip(runs, ("cuda:0 (H100)", "cuda:1 (H100)"), strict=True):
        record = ShardRecord(run.number, str(run.flow_run), "w", device, True, [], levers)
        write_shard_record(str(tmp_path), "parent", record)
        finished = read_shard_record(str(tmp_path), "parent", run.number)
        assert finished == record
        run.finish(finished)
    assert shards_applied(runs) == ({"cuda:0 (H100)", "cuda:1 (H100)"}, levers)


def test_a_shard_whose_run_ended_without_its_rows_starts_again_a_bounded_number_of_times() -> None:
    run = ShardRun(1, [render_row(1), render_row(2)], tries=1, flow_run=uuid4())
    done = ResultRow.for_row(run.rows[0], "ok", "m")
    list(run.take([done]))
    partial = _record(run, False, [done])
    assert next_step(run, partial, _state("Crashed")) == "again"
    assert run.missing() == [2]
    # A complete record of an earlier run of the shard says nothing about this one.
    earlier = ShardRecord(1, str(uuid4()), "w1", "cpu", True, [done])
    assert next_step(run, earlier, _state("Crashed")) == "again"
    run.tries = MAX_TRIES
    assert next_step(run, partial, _state("Crashed")) == "give up"


@pytest.mark.parametrize("state", ["Cancelled", "Cancelling"])
def test_a_shard_a_user_cancelled_is_final_and_its_rows_left_fail_cancelled(state: str) -> None:
    run = ShardRun(1, [render_row(1), render_row(2)], tries=1, flow_run=uuid4())
    done = ResultRow.for_row(run.rows[0], "ok", "m")
    list(run.take([done]))
    assert next_step(run, _record(run, False, [done]), _state(state)) == "cancelled"
    tiny = resolve_model("tiny-random")
    plan = OutputPlan(model=tiny, keys={}, done=[], to_render=run.rows, total=2)
    (left,) = run.give_up(plan, CANCELLED)
    assert (left.line, left.status, left.error) == (2, "failed", "cancelled")
    assert run.finished


def test_a_shard_that_refused_its_rows_is_not_started_again() -> None:
    run = ShardRun(1, [render_row(1)], tries=1, flow_run=uuid4())
    refused = ShardRecord(1, str(run.flow_run), "w1", "", True, [], refused="the manifest …")
    assert next_step(run, refused, _state("Failed")) == "refused"
    # A refusal by an earlier run of the shard says nothing about this one.
    earlier = dataclasses.replace(refused, flow_run=str(uuid4()))
    assert next_step(run, earlier, _state("Failed")) == "again"


def test_rows_a_crashed_run_stored_count_as_rendered_when_the_next_run_finds_them() -> None:
    crashed = uuid4()
    run = ShardRun(1, [render_row(1)], tries=2, flow_run=uuid4(), earlier=[crashed])
    found = ResultRow.for_row(run.rows[0], "skipped", "m", output="x.mp4")
    found = dataclasses.replace(found, worker="w1", flow_run=str(crashed))  # as its video records
    (taken,) = run.take([found])
    assert (taken.status, taken.output, taken.warning) == ("ok", "x.mp4", EARLIER_TRY)
    assert list(run.take([found])) == [], "a row is reported once"


@pytest.mark.parametrize("tries", [1, 2])
def test_a_row_another_run_stored_meanwhile_is_skipped_naming_that_run(tries: int) -> None:
    # A nightly stored it after this run planned it: not this shard's earlier (crashed) try.
    run = ShardRun(1, [render_row(1), render_row(2)], tries=tries, flow_run=uuid4())
    run.earlier = [uuid4()] * (tries - 1)
    found = ResultRow.for_row(run.rows[0], "skipped", "m", output="x.mp4")
    by_nightly = dataclasses.replace(found, worker="w9", flow_run="nightly-run-id")
    by_unknown = dataclasses.replace(found, line=2, id="2")  # a video recording no run
    first, second = run.take([by_nightly, by_unknown])
    assert (first.status, first.warning, first.flow_run) == (
        "skipped",
        "stored by run nightly-run-id on worker w9 after this run planned it",
        "nightly-run-id",
    )
    assert (second.status, second.warning) == (
        "skipped",
        "stored by another run after this run planned it",
    )


def test_rows_a_crashed_run_stored_but_still_held_count_as_rendered_by_it() -> None:
    # The dead run stored the video but never released its claim: the next run waited for
    # the claim to lapse and reports the row as stored by that run.
    crashed, again = uuid4(), uuid4()
    run = ShardRun(1, [render_row(1), render_row(2)], tries=2, flow_run=again, earlier=[crashed])
    by_crashed = ResultRow.for_row(
        run.rows[0], "skipped", "m", output="x.mp4", warning="rendered by run …"
    )
    by_crashed = dataclasses.replace(by_crashed, worker="w1", flow_run=str(crashed))
    by_another = dataclasses.replace(by_crashed, line=2, id="2", flow_run=str(uuid4()))
    first, second = run.take([by_crashed, by_another])
    assert (first.status, first.warning, first.worker) == ("ok", EARLIER_TRY, "w1")
    assert second.status == "skipped", "another run's video stays skipped"
