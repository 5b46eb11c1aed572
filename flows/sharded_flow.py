"""The `render-sharded` flow: one manifest over many GPU workers, through Prefect's work pools.

The parent plans as `render-manifest` does, starts one `render-shard` run per shard on the
`gpu` pool, follows them, starts again a shard whose run crashed or failed without reporting
its rows (a bounded number of times, for its missing rows only), and merges the shards'
results files into one results manifest and gallery. It renders nothing: it runs in the CLI
process or on a worker of a non-GPU pool (`control`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import Cancelling
from pydantic import Field
from pydantic.fields import FieldInfo

from flows import artifacts, progress
from flows.credentials import use_aws_credentials_block
from flows.engine import flow_request
from flows.form_schema import OpensOnValue, with_bounds
from flows.parameters import (
    DEFAULTS,
    AttentionLever,
    AwsCredentialsBlock,
    BatchSize,
    CacheLever,
    CompileLever,
    Destination,
    Device,
    Force,
    Limit,
    ManifestUri,
    MaxRows,
    MaxWork,
    ModelName,
    PresignExpiry,
    QuantizeLever,
    RenderRequest,
    RenderTimeoutScale,
    SpeedProfile,
    describe_parameters,
)
from flows.render_flow import finish_run, plan_request
from flows.run_date import scheduled_date
from tasks import interrupt
from tasks.manifest import RenderRow
from tasks.publish import OutputPlan
from tasks.results import ResultRow, RunSummary
from tasks.shards import (
    DEFAULT_SHARD_ROWS,
    ShardRecord,
    read_shard_record,
    shared_location,
    split_into_shards,
    write_run_marker,
)

SHARD_DEPLOYMENT = "render-shard/shard"  # prefect.yaml's `shard` deployment, on pool `gpu`
MAX_TRIES = 3  # a shard's first run and two more after a crash
FOLLOW_EVERY_S = 1.5
# The API's page size: one request reads the states of this many shard runs.
STATES_PER_REQUEST = 200
EARLIER_TRY = "stored by an earlier run of its shard, which crashed"

SHARDS_HELP = "Split the rows to render into this many shards; else by shard_rows."
SHARD_ROWS_HELP = "Rows a shard renders at most (minutes of GPU work), when shards is unset."
Shards = Annotated[int | None, Field(ge=1, le=10_000, description=SHARDS_HELP), OpensOnValue()]
ShardRows = Annotated[int, Field(ge=1, le=10_000, description=SHARD_ROWS_HELP)]


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

    def missing(self) -> list[int]:
        return [row.line for row in self.rows if row.line not in self.results]

    def take(self, rows: list[ResultRow]) -> Iterator[ResultRow]:
        """Record rows reported for the first time, and hand them back."""
        lines = {row.line for row in self.rows}
        for row in rows:
            if row.line in lines and row.line not in self.results:
                if row.status == "skipped" and self._stored_by_earlier_run(row):
                    row = dataclasses.replace(row, status="ok", warning=EARLIER_TRY)
                self.results[row.line] = row
                yield row

    def _stored_by_earlier_run(self, row: ResultRow) -> bool:
        """Whether a row the parent planned as missing, but found stored, was stored by a
        crashed run of this shard: found at once, or after waiting out that run's claim."""
        if self.tries < 2:
            return False
        return not row.warning or row.flow_run in {str(run) for run in self.earlier}

    def give_up(self, plan: OutputPlan, error: str) -> Iterator[ResultRow]:
        self.finished = True
        failed = [plan.failed(row, error) for row in self.rows if row.line in self.missing()]
        return self.take(failed)


def _describe_shard_parameters(fn: Any) -> Any:
    annotations: tuple[Any, ...] = (Shards, ShardRows)
    shards, shard_rows = (with_bounds(FieldInfo.from_annotation(a)) for a in annotations)
    fn.__doc__ += f"\n    shards: {shards}\n    shard_rows: {shard_rows}"
    return fn


@flow(name="render-sharded", validate_parameters=True)
@_describe_shard_parameters
@describe_parameters
def render_sharded(
    manifest: ManifestUri = DEFAULTS.manifest,
    destination: Destination = DEFAULTS.destination,
    model: ModelName = DEFAULTS.model,
    device: Device = DEFAULTS.device,
    batch_size: BatchSize = DEFAULTS.batch_size,
    force: Force = DEFAULTS.force,
    limit: Limit = DEFAULTS.limit,
    max_rows: MaxRows = DEFAULTS.max_rows,
    max_work: MaxWork = DEFAULTS.max_work,
    aws_credentials_block: AwsCredentialsBlock = DEFAULTS.aws_credentials_block,
    render_timeout_scale: RenderTimeoutScale = DEFAULTS.render_timeout_scale,
    presign_expiry: PresignExpiry = DEFAULTS.presign_expiry,
    speed: SpeedProfile = DEFAULTS.speed,
    attention: AttentionLever = DEFAULTS.attention,
    cache: CacheLever = DEFAULTS.cache,
    compile: CompileLever = DEFAULTS.compile,
    quantize: QuantizeLever = DEFAULTS.quantize,
    shards: Shards = None,
    shard_rows: ShardRows = DEFAULT_SHARD_ROWS,
) -> RunSummary:
    """Render a prompt manifest over the `gpu` pool's workers, one run per shard of rows."""
    request = flow_request(locals()).on_date(scheduled_date())
    return render_request_sharded(request, shards, shard_rows)


def render_request_sharded(
    request: RenderRequest, shards: int | None, shard_rows: int
) -> RunSummary:
    """The flow's body, for a validated request whose {date} is filled in."""
    started = time.time()
    use_aws_credentials_block(request.aws_credentials_block)
    # Workers elsewhere read the manifest and write the videos: the locations must be shared.
    request = request.model_copy(
        update={
            "manifest": shared_location(request.manifest),
            "destination": shared_location(request.destination),
        }
    )
    manifest, plan = plan_request(request)
    runs = [
        ShardRun(number, rows)
        for number, rows in enumerate(
            split_into_shards(plan.to_render, request.batch_size, shards, shard_rows), 1
        )
    ]
    get_run_logger().info(
        "%d rows to render in %d shards on deployment %s",
        len(plan.to_render),
        len(runs),
        SHARD_DEPLOYMENT,
    )
    parent_run = str(flow_run.id)
    if runs:
        write_run_marker(request.destination, parent_run)
    with progress.listening(artifacts.ProgressArtifact()):
        progress.started(plan.total)
        for result in plan.done:
            progress.row_finished(result)
        devices, stopped = follow_shards(request, plan, runs, parent_run)
    results = [*plan.done, *(row for run in runs for row in run.results.values())]
    results.sort(key=lambda result: result.line)
    device = ", ".join(sorted(devices)) or "none"
    return finish_run(request, manifest, results, device, stopped, started)


def follow_shards(
    request: RenderRequest, plan: OutputPlan, runs: list[ShardRun], parent_run: str
) -> tuple[set[str], str | None]:
    """Start every shard, follow them to the end; the devices that rendered, and why
    following stopped early (a stop request), if it did."""
    devices: set[str] = set()
    for run in runs:
        _start(request, plan, run, parent_run)
    while active := [run for run in runs if not run.finished]:
        if (stop := interrupt.stop_requested()) is not None:
            _cancel(active)
            for run in active:
                _report(run.give_up(plan, interrupt.INTERRUPTED))
            return devices, stop
        time.sleep(FOLLOW_EVERY_S)
        states = _states([run.flow_run for run in active if run.flow_run is not None])
        for run in active:
            state = states.get(run.flow_run) if run.flow_run else None
            if state is None or not (state.is_running() or state.is_final()):
                continue
            record = read_shard_record(request.destination, parent_run, run.number)
            if record is not None:
                _report(run.take(record.rows))
            if not state.is_final():
                continue
            step = next_step(run, record)
            if step == "finished":
                run.finished = True
                if record is not None and record.device:
                    devices.add(record.device)
            elif step == "again":
                _start(request, plan, run, parent_run)
            else:
                error = (
                    f"shard {run.number}'s run ended {state.name} {run.tries} times, last: "
                    f"{state.message or 'no message'}"
                )
                _report(run.give_up(plan, error))
    return devices, None


def next_step(run: ShardRun, record: ShardRecord | None) -> Literal["finished", "again", "give up"]:
    """What to do about a shard whose run has ended, given its latest results file."""
    if record is not None and record.complete and record.flow_run == str(run.flow_run):
        # Its rows are all reported, failed ones included: running it again would fail
        # them again. Only a run that ended without reporting them all ran into trouble
        # of its own (a crash, a worker with other weights, storage it could not write).
        return "finished"
    if not run.missing():
        return "finished"
    return "again" if run.tries < MAX_TRIES else "give up"


def _report(rows: Iterator[ResultRow]) -> None:
    for row in rows:
        progress.row_finished(row)


def _start(request: RenderRequest, plan: OutputPlan, run: ShardRun, parent_run: str) -> None:
    """Start a run of the shard for its rows not yet reported; the key makes a retried
    request for the same try return the same run."""
    run.tries += 1
    if run.flow_run is not None:
        run.earlier.append(run.flow_run)
    child: FlowRun = run_deployment(  # type: ignore[assignment]  # sync in a sync flow
        SHARD_DEPLOYMENT,
        parameters={
            **request.shard_parameters(),
            "model_identity": plan.model.identity,
            "lines": run.missing(),
            "parent_run": parent_run,
            "shard": run.number,
        },
        timeout=0,
        idempotency_key=f"{parent_run}-{run.number}-{run.tries}",
    )
    run.flow_run = child.id


def _states(ids: list[UUID]) -> dict[UUID, State[Any]]:
    """The current state of each run, a page of runs per request."""
    states: dict[UUID, State[Any]] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), STATES_PER_REQUEST):
            page = ids[start : start + STATES_PER_REQUEST]
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)),
                limit=STATES_PER_REQUEST,
            )
            states.update({run.id: run.state for run in found if run.state is not None})
    return states


def _cancel(runs: list[ShardRun]) -> None:
    """Ask the shards' runs to stop: their workers cancel them; stored videos stay."""
    with get_client(sync_client=True) as client:
        for run in runs:
            if run.flow_run is not None:
                client.set_flow_run_state(run.flow_run, Cancelling(), force=True)
