"""The `render_manifest` flow: read, plan, render, publish, report."""

from __future__ import annotations

import itertools
import queue
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import artifacts, progress
from flows import prefect_tasks as steps
from flows.credentials import use_aws_credentials_block
from flows.parameters import RenderRequest
from flows.run_date import scheduled_date
from tasks.budget import check_budget
from tasks.errors import DeviceFailedError, T2VError, first_line
from tasks.manifest import RenderRow
from tasks.publish import OutputPlan
from tasks.render import FailedRender, RenderOutcome, not_rendered, plan_batches
from tasks.results import ResultRow, RunSummary, summarize

# Batches rendered ahead of publishing: the GPU works on batch k+1 while batch k
# is encoded and uploaded, and at most this many batches of frames sit in memory.
RENDER_WINDOW = 2


class RowsFailedError(T2VError):
    """Some rows ended `failed` or `invalid`; raised after the results manifest is written.

    `device_failure` says why the device stopped rendering, when it did.
    """

    def __init__(self, summary: RunSummary, device_failure: str | None = None) -> None:
        counts = ", ".join(f"{n} {status}" for status, n in summary.counts.items() if n)
        message = f"{counts}; see {summary.results}"
        if device_failure:
            message = f"{device_failure}; rendering stopped, rerun to resume; {message}"
        super().__init__(message)
        self.summary = summary
        self.device_failure = device_failure


@dataclass
class DeviceStop:
    """Why the device rendered no more batches in this run, once a render left it unusable."""

    reason: str | None = None


@flow(
    name="render-manifest",
    task_runner=cast(
        TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=RENDER_WINDOW + 2)
    ),
    validate_parameters=True,
)
def render_manifest(request: RenderRequest) -> RunSummary:
    """Render every valid row of a prompt manifest to MP4 and write the results manifest."""
    started = time.time()
    request = request.on_date(scheduled_date())
    use_aws_credentials_block(request.aws_credentials_block)
    manifest = steps.read_manifest(request.manifest, limit=request.limit)
    check_budget(manifest.rows, request.max_rows, request.max_work, request.manifest)
    plan = steps.plan_outputs(manifest, request.model, request.destination, force=request.force)
    with progress.listening(artifacts.ProgressArtifact()):
        device, results, device_failure = collect_results(request, plan)
    summary = summarize(results, request.model, device, request.destination, started)
    steps.write_results(
        request.destination, results, manifest.extra_columns, summary, request.presign_expiry
    )
    artifacts.publish_results(results, summary)
    if summary.counts["failed"] or summary.counts["invalid"]:
        raise RowsFailedError(summary, device_failure)
    return summary


def collect_results(
    request: RenderRequest, plan: OutputPlan
) -> tuple[str, list[ResultRow], str | None]:
    """Every row's result in manifest order, the device that rendered them, and why the
    device stopped rendering, if it did."""
    progress.started(plan.total)
    # A rerun with every video in place loads no model at all.
    device = steps.load_model(plan.model, request.device) if plan.to_render else "none"
    results: list[ResultRow] = []
    stop = DeviceStop()
    for result in itertools.chain(plan.done, render_and_publish(request, device, plan, stop)):
        progress.row_finished(result)
        results.append(result)
    return device, sorted(results, key=lambda result: result.line), stop.reason


def render_and_publish(
    request: RenderRequest, device: str, plan: OutputPlan, stop: DeviceStop
) -> Iterator[ResultRow]:
    """Render batches one after another and publish each batch while the next renders;
    once the device is unusable, fail the batches left and publish what was rendered."""
    rendering: deque[tuple[list[RenderRow], PrefectFuture[list[RenderOutcome]]]] = deque()
    published = Published(plan)
    for batch in plan_batches(plan.to_render, request.batch_size):
        if stop.reason is not None:
            yield from (plan.failed(row, not_rendered(stop.reason)) for row in batch)
            continue
        future = steps.render_batch.submit(plan.model, device, batch, request.render_timeout_scale)
        rendering.append((batch, future))
        if len(rendering) >= RENDER_WINDOW:
            yield from _publish_rendered(*rendering.popleft(), request, plan, published, stop)
            yield from published.finished(wait=False)
    while rendering:
        yield from _publish_rendered(*rendering.popleft(), request, plan, published, stop)
    yield from published.finished(wait=True)


def _publish_rendered(
    batch: list[RenderRow],
    future: PrefectFuture[list[RenderOutcome]],
    request: RenderRequest,
    plan: OutputPlan,
    published: Published,
    stop: DeviceStop,
) -> Iterator[ResultRow]:
    """Wait for a batch's render, submit its videos for publishing, yield its failed rows."""
    outcome = future.result(raise_on_failure=False)
    outcomes: list[RenderOutcome]
    if isinstance(outcome, DeviceFailedError):
        stop.reason = stop.reason or outcome.reason
        outcomes = outcome.outcomes
    elif isinstance(outcome, BaseException):
        outcomes = [FailedRender(row, first_line(outcome)) for row in batch]
    else:
        outcomes = outcome
    for rendered in outcomes:
        if isinstance(rendered, FailedRender):
            yield plan.failed(rendered.row, rendered.error)
        else:
            key = plan.keys[rendered.row.line]
            task = steps.publish_video.submit(
                request.destination, rendered, key, plan.model.name, exclusive=not request.force
            )
            published.track(rendered.row, task)


class Published:
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
