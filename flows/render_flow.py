"""The `render_manifest` flow: read, plan, render, publish, report.

Over 250 lines because the flow's signature spells out every parameter (Prefect's form
reads it) and the steps a shard run shares with it (plan, claim, render and publish, wait
for rows another run holds, finish) live here beside it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import queue
import socket
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import artifacts, prefect_tasks, progress, run_logs
from flows.credentials import use_aws_credentials_block
from flows.errors import RowsFailedError
from flows.parameters import (
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
    ScoreName,
    ScoreThreshold,
    SpeedProfile,
    build_request,
    defaults,
    describe_parameters,
)
from flows.run_date import scheduled_date
from storage import open_storage
from tasks import devices, interrupt
from tasks.budget import check_budget
from tasks.claims import Claims, Owner, take_rows
from tasks.columns import carried_notice
from tasks.destination import first_batch_bytes
from tasks.errors import first_line
from tasks.manifest import Manifest, RenderRow
from tasks.publish import OutputPlan
from tasks.render import BatchResult, FailedRender, RenderOutcome, not_rendered, plan_batches
from tasks.results import ResultRow, RunSummary, SpeedLevers, summarize

# Batches submitted ahead of publishing: while batch k renders, the next two are queued
# for the device, so one is waiting when k ends (with one queued, a task run's start, a
# server round trip, outlasted a short render: up to 1.1 s idle, `make bench-slots`).
# Queued batches hold no frames: a batch's frames exist once the device has rendered it.
RENDER_WINDOW = 3
DEFAULTS = defaults()
run_logs.keep_expected_failures_to_one_line()


@dataclass
class RenderingStop:
    """Why no more batches render in this run: the device became unusable, or a stop was
    requested (Ctrl-C, SIGTERM)."""

    reason: str | None = None
    interrupted: bool = False

    def check(self) -> str | None:
        if self.reason is None and (requested := interrupt.stop_requested()):
            self.reason, self.interrupted = requested, True
        return self.reason

    def row_error(self) -> str:
        """The error of a row left unrendered because of this stop."""
        assert self.reason is not None
        return interrupt.INTERRUPTED if self.interrupted else not_rendered(self.reason)


@flow(
    name="render-manifest",
    task_runner=cast(
        TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=RENDER_WINDOW + 2)
    ),
    validate_parameters=True,
)
@describe_parameters
def render_manifest(
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
    score: ScoreName = DEFAULTS.score,
    score_threshold: ScoreThreshold = DEFAULTS.score_threshold,
) -> RunSummary:
    """Render every valid row of a prompt manifest to MP4 and write the results manifest."""
    request = build_request(
        manifest=manifest,
        destination=destination,
        model=model,
        device=device,
        batch_size=batch_size,
        force=force,
        limit=limit,
        max_rows=max_rows,
        max_work=max_work,
        aws_credentials_block=aws_credentials_block,
        render_timeout_scale=render_timeout_scale,
        presign_expiry=presign_expiry,
        speed=speed,
        attention=attention,
        cache=cache,
        compile=compile,
        quantize=quantize,
        score=score,
        score_threshold=score_threshold,
    ).on_date(scheduled_date())
    return render_request(request)


def render_request(request: RenderRequest) -> RunSummary:
    """The flow's body, for a validated request whose {date} is filled in."""
    started = time.time()
    use_aws_credentials_block(request.aws_credentials_block)
    manifest, plan = plan_request(request)
    with progress.listening(artifacts.ProgressArtifact()):
        device, results, stopped, levers = collect_results(request, plan)
    return finish_run(request, manifest, results, device, stopped, started, levers)


def plan_request(request: RenderRequest) -> tuple[Manifest, OutputPlan]:
    """Resolve the model, read and check the manifest, check the destination, key every row."""
    # The model's family decides the manifest's defaults and bounds.
    model = prefect_tasks.resolve_model(request.model)
    progress.phase("reading the manifest")
    manifest = prefect_tasks.read_manifest(
        request.manifest, limit=request.limit, rules=model.family.rules
    )
    if notice := carried_notice(manifest.extra_columns):
        get_run_logger().warning(notice)
    check_budget(manifest.rows, request.max_rows, request.max_work, request.manifest)
    # Before any model loads or row renders: a destination that cannot take the results
    # must not cost a night of GPU time first.
    prefect_tasks.check_destination(
        request.destination,
        request.manifest,
        first_batch_bytes(
            manifest.rows, request.batch_size, len(manifest.rows) + len(manifest.invalid)
        ),
    )
    plan = prefect_tasks.plan_outputs(
        manifest,
        model,
        request.destination,
        force=request.force,
        levers=request.levers(model.family),
        scoring=request.scoring(),
    )
    get_run_logger().info(
        "%s: %d rows, %d to render, %d already stored or invalid; model %s, destination %s",
        request.manifest,
        plan.total,
        len(plan.to_render),
        len(plan.done),
        plan.model.name,
        request.destination,
    )
    return manifest, plan


def finish_run(
    request: RenderRequest,
    manifest: Manifest,
    results: list[ResultRow],
    device: str,
    stopped: str | None,
    started: float,
    levers: SpeedLevers | None = None,
) -> RunSummary:
    """Write the results manifest and the gallery, show them, and fail the run if a row
    failed or was invalid. `levers`: the speed levers applied and skipped, per family."""
    results = [dataclasses.replace(result, speed=request.speed) for result in results]
    summary = summarize(
        results, request.model, device, request.destination, started, request.speed, levers
    )
    prefect_tasks.write_results(
        request.destination, results, manifest.extra_columns, summary, request.presign_expiry
    )
    artifacts.publish_results(results, summary)
    get_run_logger().info(summary.one_line())
    if summary.counts["failed"] or summary.counts["invalid"]:
        raise RowsFailedError(summary, stopped)
    return summary


def worker_name() -> str:
    """Who renders in this process: WORKER_NAME (`make worker` exports it to its runs), else
    the host's name."""
    return os.environ.get("WORKER_NAME") or socket.gethostname()


def collect_results(
    request: RenderRequest, plan: OutputPlan
) -> tuple[str, list[ResultRow], str | None, SpeedLevers]:
    """Render and publish the plan's rows to render. Every row's result in manifest order,
    the device that rendered them, why rendering stopped early, if it did, and the speed
    levers its pipeline applied and skipped.

    Both flows call this: `render-manifest` for a whole manifest, `render-shard` for its rows."""
    progress.started(plan.total)
    stop = RenderingStop()
    device = "none"
    levers: SpeedLevers = {}
    if plan.to_render and stop.check() is None:
        # A rerun with every video in place loads no model at all.
        progress.phase(f"loading {plan.model.name} on {request.device}")
        device = prefect_tasks.load_model(plan.model, request.device, plan.levers)
        levers = report_speed(request, plan, device)
    results: list[ResultRow] = []
    worker, run_id = worker_name(), str(flow_run.id or "")
    rendered = render_and_publish(request, device, plan, stop)
    rows = itertools.chain(
        plan.done,
        # A row another run stored while this one waited names that run, not this one.
        (
            dataclasses.replace(r, worker=r.worker or worker, flow_run=r.flow_run or run_id)
            for r in rendered
        ),
    )
    for result in rows:
        progress.row_finished(result)
        results.append(result)
    shown = devices.describe(plan.model, device, plan.levers)
    return shown, sorted(results, key=lambda result: result.line), stop.reason, levers


def report_speed(request: RenderRequest, plan: OutputPlan, device: str) -> SpeedLevers:
    """Say once, in the run's log and progress, which speed levers the loaded pipeline
    applied and which it skipped and why; the same for the run's summary."""
    report = devices.speed_report(plan.model, device, plan.levers)
    if report is None or not (report.applied or report.skipped):
        return {}
    line = f"speed {request.speed} on {plan.model.family.name}: {report.line()}"
    progress.phase(line)
    if report.skipped:
        get_run_logger().warning(line)
    else:
        get_run_logger().info(line)
    return {plan.model.family.name: dataclasses.asdict(report)}


def claim_owner() -> Owner:
    """This run in this process, as its claims name it."""
    return Owner.here(str(flow_run.id or ""), worker_name())


def render_and_publish(
    request: RenderRequest, device: str, plan: OutputPlan, stop: RenderingStop
) -> Iterator[ResultRow]:
    """Render the plan's rows that this run claims, then wait for those another run holds:
    each is `skipped` once that run stores its video, or claimed and rendered here once its
    claim goes stale. Each claim is released as its row's result comes."""
    with Claims(open_storage(request.destination), claim_owner()) as claims:
        held: list[RenderRow] = []
        waiting = plan.to_render
        while waiting:
            batches = plan_batches(waiting, plan.levers.rows_per_call(request.batch_size))
            for result in _render_batches(request, device, plan, stop, batches, claims, held):
                claims.release(plan.keys[result.line])
                yield result
            waiting, held = held, []
            if waiting and stop.check() is None:
                # A stop ends the wait at once; the next pass then fails the rows left.
                progress.phase(f"waiting for {len(waiting)} rows that another run renders")
                interrupt.wait_for_stop(claims.poll_s)


def _render_batches(
    request: RenderRequest,
    device: str,
    plan: OutputPlan,
    stop: RenderingStop,
    batches: list[list[RenderRow]],
    claims: Claims,
    held: list[RenderRow],
) -> Iterator[ResultRow]:
    """Claim each batch's rows and render those claimed, one batch after another, and publish
    each batch while the next renders; rows another owner holds go to `held`. Once rendering
    has to stop, fail the batches left and publish what was rendered."""
    rendering: deque[tuple[list[RenderRow], PrefectFuture[BatchResult]]] = deque()
    publishing = PublishQueue(plan)
    for number, batch in enumerate(batches, 1):
        if stop.check() is not None:
            yield from (plan.failed(row, stop.row_error()) for row in batch)
            continue
        taken = take_rows(claims, plan, batch, request.force)
        yield from taken.settled
        held.extend(taken.held)
        if not taken.render:
            continue
        progress.phase(f"rendering batch {number} of {len(batches)} on {device}")
        future = prefect_tasks.render_rows.submit(
            plan.model, device, taken.render, request.render_timeout_scale, plan.levers,
            plan.scoring,
        )  # fmt: skip
        rendering.append((taken.render, future))
        if len(rendering) >= RENDER_WINDOW:
            yield from _publish_rendered(*rendering.popleft(), request, plan, publishing, stop)
            yield from publishing.finished(wait=False)
    while rendering:
        yield from _publish_rendered(*rendering.popleft(), request, plan, publishing, stop)
    yield from publishing.finished(wait=True)


def _publish_rendered(
    batch: list[RenderRow],
    future: PrefectFuture[BatchResult],
    request: RenderRequest,
    plan: OutputPlan,
    publishing: PublishQueue,
    stop: RenderingStop,
) -> Iterator[ResultRow]:
    """Wait for a batch's render, submit its videos for publishing, yield its failed rows."""
    outcome = future.result(raise_on_failure=False)
    outcomes: list[RenderOutcome]
    if isinstance(outcome, BaseException):
        outcomes = [FailedRender(row, first_line(outcome)) for row in batch]
    else:
        stop.reason = stop.reason or outcome.device_failure
        outcomes = outcome.outcomes
    for rendered in outcomes:
        if isinstance(rendered, FailedRender):
            yield plan.failed(rendered.row, rendered.error)
        else:
            key = plan.keys[rendered.row.line]
            task = prefect_tasks.publish_rendered.submit(
                request.destination, rendered, key, plan.model.name, exclusive=not request.force
            )
            publishing.track(rendered.row, task)


class PublishQueue:
    """Publish tasks in flight; hands back each row's result as its task finishes."""

    def __init__(self, plan: OutputPlan) -> None:
        self._plan = plan
        self._pending = 0
        self._done: queue.SimpleQueue[tuple[RenderRow, PrefectFuture[ResultRow]]]
        self._done = queue.SimpleQueue()

    def track(self, row: RenderRow, future: PrefectFuture[ResultRow]) -> None:
        self._pending += 1
        future.add_done_callback(lambda done: self._done.put((row, done)))

    def finished(self, wait: bool) -> Iterator[ResultRow]:
        """Results of tasks that have finished; with `wait`, of every task tracked."""
        while self._pending and (wait or not self._done.empty()):
            row, future = self._done.get()
            self._pending -= 1
            result = future.result(raise_on_failure=False)
            if isinstance(result, BaseException):
                yield self._plan.failed(row, first_line(result))
            else:
                yield result
