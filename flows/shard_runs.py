"""A sharded run's shards as its parent follows them: the rows each has reported, and what
to do about a shard whose run ended."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from tasks.manifest import RenderRow
from tasks.publish import OutputPlan, stored_meanwhile
from tasks.results import ResultRow, SpeedLevers
from tasks.shards import ShardRecord
from tasks.stored import StoredBy

if TYPE_CHECKING:  # Prefect itself only where a flow runs
    from prefect.client.schemas.objects import State

MAX_TRIES = 3  # a shard's first run and two more after a crash
CANCELLED = "cancelled"
EARLIER_TRY = "stored by an earlier run of its shard, which crashed"


@dataclass
class ShardRun:
    """One shard: its rows, its current run, and its rows' results so far, by line."""

    number: int
    rows: list[RenderRow]
    tries: int = 0
    flow_run: UUID | None = None
    results: dict[int, ResultRow] = field(default_factory=dict)
    finished: bool = False
    earlier: list[UUID] = field(default_factory=list)  # the shard's runs before this one
    applied: ShardRecord | None = None  # the record of the run that finished it
    submitted: float = 0.0  # time.monotonic() when its current run was asked for

    def waited(self) -> float:
        return time.monotonic() - self.submitted

    def finish(self, record: ShardRecord | None) -> None:
        self.finished, self.applied = True, record

    def missing(self) -> list[int]:
        return [row.line for row in self.rows if row.line not in self.results]

    def take(self, rows: list[ResultRow]) -> Iterator[ResultRow]:
        """Record rows reported for the first time, and hand them back."""
        lines = {row.line for row in self.rows}
        for row in rows:
            if row.line in lines and row.line not in self.results:
                if row.status == "skipped":
                    row = self._stored_meanwhile(row)
                self.results[row.line] = row
                yield row

    def _stored_meanwhile(self, row: ResultRow) -> ResultRow:
        """A row the parent planned as missing but a run of the shard found stored, worded by
        the run that stored it (as its video records it): a crashed earlier run of this shard
        rendered it for this run; another run's video is skipped, naming that run."""
        if row.flow_run in {str(run) for run in self.earlier}:
            return dataclasses.replace(row, status="ok", warning=EARLIER_TRY)
        if row.warning:  # worded where it was found: the shard waited for the run storing it
            return row
        return dataclasses.replace(
            row, warning=stored_meanwhile(StoredBy(row.flow_run, row.worker))
        )

    def give_up(self, plan: OutputPlan, error: str) -> Iterator[ResultRow]:
        self.finished = True
        failed = [plan.failed(row, error) for row in self.rows if row.line in self.missing()]
        return self.take(failed)


def next_step(
    run: ShardRun, record: ShardRecord | None, state: State[Any]
) -> Literal["finished", "again", "give up", "cancelled", "refused"]:
    """What to do about a shard whose run has ended (or is being cancelled), given its latest
    results file."""
    if state.is_cancelled() or state.is_cancelling():
        return "cancelled"  # a user's decision: never undone by starting the shard again
    if record is not None and record.refused and record.flow_run == str(run.flow_run):
        return "refused"  # what it found (a changed manifest) is there for any run of it
    if record is not None and record.complete and record.flow_run == str(run.flow_run):
        # Its rows are all reported, failed ones included: running it again would fail
        # them again. Only a run that ended without reporting them all ran into trouble
        # of its own (a crash, a worker with other weights, storage it could not write).
        return "finished"
    if not run.missing():
        return "finished"
    return "again" if run.tries < MAX_TRIES else "give up"


def shards_applied(runs: list[ShardRun]) -> tuple[set[str], SpeedLevers]:
    """The devices the finished shards rendered on, and the speed levers they applied and
    skipped, per family."""
    devices: set[str] = set()
    levers: SpeedLevers = {}
    for run in runs:
        if run.applied is not None:
            devices.update([run.applied.device] if run.applied.device else [])
            levers.update(run.applied.speed_levers)
    return devices, levers


def waiting_line(states: list[State[Any]]) -> str:
    """What the shards not yet finished do: "2 running, 2 waiting for a gpu worker"."""
    waiting = sum(state.is_scheduled() for state in states)
    running = sum(state.is_running() or state.is_pending() for state in states)
    return f"shards: {running} running, {waiting} waiting for a gpu worker"


def ended(state: State[Any]) -> bool:
    """Whether a shard's run is over, or will be: a run being cancelled is not started
    again."""
    return state.is_final() or state.is_cancelling()
