"""The `render-sharded` flow: one manifest over many GPU workers, through Prefect's work pools.

The parent plans as `render-manifest` does, starts one `render-shard` run per shard on the
`gpu` pool, follows them, starts again a shard whose run crashed or failed without reporting
its rows (a bounded number of times, for its missing rows only), and merges the shards'
results files into one results manifest and gallery. It renders nothing: it runs in the CLI
process or on a worker of a non-GPU pool (`control`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

from prefect import flow, get_client, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from pydantic import Field
from pydantic.fields import FieldInfo

from flows import artifacts, progress, shard_api
from flows.credentials import use_s3_access
from flows.engine import flow_request
from flows.form_schema import OpensOnValue, with_bounds
from flows.parameter_types import (
    AttentionLever,
    AwsCredentialsBlock,
    BatchSize,
    CacheLever,
    CompileLever,
    Destination,
    Device,
    Force,
    ImageRoot,
    Limit,
    ManifestUri,
    MaxRows,
    MaxWork,
    ModelName,
    PresignExpiry,
    QuantizeLever,
    RenderTimeoutScale,
    S3Endpoint,
    ScoreName,
    ScoreThreshold,
    SpeedProfile,
)
from flows.parameters import DEFAULTS, RenderRequest, describe_parameters
from flows.render_flow import finish_run, plan_request
from flows.run_date import scheduled_date
from flows.shard_runs import CANCELLED, ShardRun, ended, next_step, shards_applied, waiting_line
from tasks import interrupt
from tasks.errors import ShardError
from tasks.publish import OutputPlan
from tasks.results import ResultRow, RunSummary
from tasks.shards import (
    DEFAULT_SHARD_ROWS,
    DEFAULT_SHARD_START_TIMEOUT_S,
    MAX_SHARD_START_TIMEOUT_S,
    MAX_SHARDS,
    manifest_sha256,
    read_shard_record,
    shared_location,
    split_into_shards,
    write_run_marker,
)

SHARD_DEPLOYMENT = "render-shard/shard"  # prefect.yaml's `shard` deployment, on pool `gpu`
FOLLOW_EVERY_S = 1.5

SHARDS_HELP = "Split the rows to render into this many shards; else by shard_rows."
SHARD_ROWS_HELP = "Rows a shard renders at most (minutes of GPU work), when shards is unset."
START_TIMEOUT_HELP = "Seconds a shard may wait for a gpu worker before its rows fail."
Shards = Annotated[int | None, Field(ge=1, le=MAX_SHARDS, description=SHARDS_HELP), OpensOnValue()]
ShardRows = Annotated[int, Field(ge=1, le=10_000, description=SHARD_ROWS_HELP)]
ShardStartTimeout = Annotated[
    float, Field(ge=1, le=MAX_SHARD_START_TIMEOUT_S, description=START_TIMEOUT_HELP)
]


def _describe_shard_parameters(fn: Any) -> Any:
    annotations: tuple[Any, ...] = (Shards, ShardRows)
    shards, shard_rows = (with_bounds(FieldInfo.from_annotation(a)) for a in annotations)
    fn.__doc__ += (
        f"\n    shards: {shards}\n    shard_rows: {shard_rows}"
        f"\n    shard_start_timeout: {START_TIMEOUT_HELP}"
    )
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
    s3_endpoint: S3Endpoint = DEFAULTS.s3_endpoint,
    render_timeout_scale: RenderTimeoutScale = DEFAULTS.render_timeout_scale,
    presign_expiry: PresignExpiry = DEFAULTS.presign_expiry,
    speed: SpeedProfile = DEFAULTS.speed,
    attention: AttentionLever = DEFAULTS.attention,
    cache: CacheLever = DEFAULTS.cache,
    compile: CompileLever = DEFAULTS.compile,
    quantize: QuantizeLever = DEFAULTS.quantize,
    image_root: ImageRoot = DEFAULTS.image_root,
    score: ScoreName = DEFAULTS.score,
    score_threshold: ScoreThreshold = DEFAULTS.score_threshold,
    shards: Shards = None,
    shard_rows: ShardRows = DEFAULT_SHARD_ROWS,
    shard_start_timeout: ShardStartTimeout = DEFAULT_SHARD_START_TIMEOUT_S,
) -> RunSummary:
    """Render a prompt manifest over the `gpu` pool's workers, one run per shard of rows."""
    request = flow_request(locals()).on_date(scheduled_date)
    return render_request_sharded(request, shards, shard_rows, shard_start_timeout)


def render_request_sharded(
    request: RenderRequest, shards: int | None, shard_rows: int, start_timeout: float
) -> RunSummary:
    """The flow's body, for a validated request whose {date} is filled in."""
    started = time.time()
    check_shard_deployment()
    use_s3_access(request.aws_credentials_block, request.s3_endpoint)
    # Workers elsewhere read the manifest and write the videos: the locations must be shared.
    request = request.model_copy(
        update={
            "manifest": shared_location(request.manifest),
            "destination": shared_location(request.destination),
            "image_root": request.image_root and shared_location(request.image_root),
        }
    )
    pinned = manifest_sha256(request.manifest)  # before planning: shards check it
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
        stopped = follow_shards(request, plan, runs, parent_run, pinned, start_timeout)
    results = [*plan.done, *(row for run in runs for row in run.results.values())]
    results.sort(key=lambda result: result.line)
    devices, levers = shards_applied(runs)
    device = ", ".join(sorted(devices)) or "none"
    return finish_run(request, manifest, results, device, stopped, started, levers)


def check_shard_deployment() -> None:
    """Refuse, before anything is written, a server where `make deploy` did not run."""
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(SHARD_DEPLOYMENT)
        except ObjectNotFound:
            raise ShardError(
                f"the Prefect server has no deployment {SHARD_DEPLOYMENT!r}, which runs the "
                "shards: run make deploy (then make worker on each GPU machine)"
            ) from None


def follow_shards(
    request: RenderRequest,
    plan: OutputPlan,
    runs: list[ShardRun],
    parent_run: str,
    pinned: str,
    start_timeout: float,
) -> str | None:
    """Start every shard, follow them to the end; why following stopped early (a stop
    request), if it did. A shard no worker takes within `start_timeout` s fails its rows."""
    shown = ""
    for run in runs:
        _start(request, plan, run, parent_run, pinned)
    while active := [run for run in runs if not run.finished]:
        if (stop := interrupt.stop_requested()) is not None:
            _cancel(active)
            for run in active:
                _report(run.give_up(plan, interrupt.INTERRUPTED))
            return stop
        time.sleep(FOLLOW_EVERY_S)
        states = shard_api.states([run.flow_run for run in active if run.flow_run is not None])
        if (line := waiting_line(list(states.values()))) != shown:
            progress.phase(line)
            get_run_logger().info(line)
            shown = line
        for run in active:
            state = states.get(run.flow_run) if run.flow_run else None
            if state is not None and state.is_scheduled() and run.waited() > start_timeout:
                _cancel([run])
                error = f"no gpu worker took shard {run.number} within {start_timeout:g} s"
                _report(run.give_up(plan, error))
                continue
            if state is None or not (state.is_running() or ended(state)):
                continue
            try:
                record = read_shard_record(request.destination, parent_run, run.number)
            except ShardError as exc:  # no use starting it again: its rows fail in one line
                _report(run.give_up(plan, str(exc)))
                continue
            if record is not None:
                _report(run.take(record.rows))
            if not ended(state):
                continue
            step = next_step(run, record, state)
            if step == "finished":
                run.finish(record)
            elif step == "again":
                _start(request, plan, run, parent_run, pinned)
            elif step == "cancelled":
                _report(run.give_up(plan, CANCELLED))
            elif step == "refused" and record is not None:
                _report(run.give_up(plan, record.refused))
            else:
                error = (
                    f"shard {run.number}'s run ended {state.name} {run.tries} times, last: "
                    f"{state.message or 'no message'}"
                )
                _report(run.give_up(plan, error))
    return None


def _report(rows: Iterator[ResultRow]) -> None:
    for row in rows:
        progress.row_finished(row)


def _start(
    request: RenderRequest, plan: OutputPlan, run: ShardRun, parent_run: str, pinned: str
) -> None:
    """Start a run of the shard for its rows not yet reported, of the manifest whose content
    has the sha256 `pinned`; the key makes a retried request for the same try return the
    same run."""
    run.tries += 1
    run.submitted = time.monotonic()
    if run.flow_run is not None:
        run.earlier.append(run.flow_run)
    child: FlowRun = run_deployment(  # type: ignore[assignment]  # sync in a sync flow
        SHARD_DEPLOYMENT,
        parameters={
            **request.shard_parameters(),
            "model_identity": plan.model.identity,
            "manifest_sha256": pinned,
            "lines": run.missing(),
            "parent_run": parent_run,
            "shard": run.number,
        },
        timeout=0,
        idempotency_key=f"{parent_run}-{run.number}-{run.tries}",
    )
    run.flow_run = child.id


def _cancel(runs: list[ShardRun]) -> None:
    shard_api.cancel([run.flow_run for run in runs if run.flow_run is not None])
