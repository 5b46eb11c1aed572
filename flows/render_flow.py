"""The `render_manifest` flow: read, plan, render, publish, report."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from flows import prefect_tasks as steps
from flows import progress
from flows.parameters import RenderRequest
from tasks.errors import T2VError, first_line
from tasks.manifest import RenderRow
from tasks.publish import OutputPlan, ResultRow, RunSummary, summarize
from tasks.render import FailedRender, RenderOutcome, plan_batches

# Batches rendered ahead of publishing: the GPU works on batch k+1 while batch k
# is encoded and uploaded, and at most this many batches of frames sit in memory.
RENDER_WINDOW = 2


class RowsFailedError(T2VError):
    """Some rows ended `failed` or `invalid`; raised after the results manifest is written."""

    def __init__(self, summary: RunSummary) -> None:
        counts = ", ".join(f"{n} {status}" for status, n in summary.counts.items() if n)
        super().__init__(f"{counts}; see {summary.results}")
        self.summary = summary


@flow(
    name="render-manifest",
    task_runner=ThreadPoolTaskRunner(max_workers=RENDER_WINDOW + 2),
    validate_parameters=True,
)
def render_manifest(request: RenderRequest) -> RunSummary:
    """Render every valid row of a prompt manifest to MP4 and write the results manifest."""
    started = time.time()
    manifest = steps.read_manifest(request.manifest, limit=request.limit)
    device = steps.load_model(request.model, request.device)
    plan = steps.plan_outputs(manifest, request.model, request.destination, force=request.force)
    progress.started(plan.total)
    results: list[ResultRow] = []
    for result in [*plan.done, *render_and_publish(request, device, plan)]:
        progress.row_finished(result)
        results.append(result)
    results.sort(key=lambda result: result.line)
    summary = summarize(results, request.model, device, request.destination, started)
    steps.write_results(request.destination, results, manifest.extra_columns, summary)
    if summary.counts["failed"] or summary.counts["invalid"]:
        raise RowsFailedError(summary)
    return summary


Publishing = list[tuple[RenderRow, PrefectFuture[ResultRow]]]


def render_and_publish(
    request: RenderRequest, device: str, plan: OutputPlan
) -> Iterator[ResultRow]:
    """Render batches one after another and publish each batch while the next renders."""
    rendering: deque[tuple[list[RenderRow], PrefectFuture[list[RenderOutcome]]]] = deque()
    publishing: Publishing = []
    for batch in plan_batches(plan.to_render, request.batch_size):
        rendering.append((batch, steps.render_batch.submit(request.model, device, batch)))
        if len(rendering) >= RENDER_WINDOW:
            yield from _publish_rendered(*rendering.popleft(), request, plan, publishing)
            yield from _collect_published(publishing, plan, wait=False)
    while rendering:
        yield from _publish_rendered(*rendering.popleft(), request, plan, publishing)
    yield from _collect_published(publishing, plan, wait=True)


def _publish_rendered(
    batch: list[RenderRow],
    future: PrefectFuture[list[RenderOutcome]],
    request: RenderRequest,
    plan: OutputPlan,
    publishing: Publishing,
) -> Iterator[ResultRow]:
    """Wait for a batch's render, submit its videos for publishing, yield its failed rows."""
    future.wait()
    outcome = future.state.result(raise_on_failure=False)
    outcomes: list[RenderOutcome] = (
        [FailedRender(row, first_line(outcome)) for row in batch]
        if isinstance(outcome, BaseException)
        else outcome
    )
    for rendered in outcomes:
        if isinstance(rendered, FailedRender):
            yield plan.failed(rendered.row, rendered.error)
        else:
            key = plan.keys[rendered.row.line]
            future_result = steps.publish_video.submit(request.destination, rendered, key, plan.model)
            publishing.append((rendered.row, future_result))


def _collect_published(publishing: Publishing, plan: OutputPlan, wait: bool) -> Iterator[ResultRow]:
    """Yield the results of finished publish tasks (all of them when `wait`), dropping them."""
    still_running: Publishing = []
    for row, future in publishing:
        if wait:
            future.wait()
        if not future.state.is_final():
            still_running.append((row, future))
            continue
        result = future.state.result(raise_on_failure=False)
        yield plan.failed(row, first_line(result)) if isinstance(result, BaseException) else result
    publishing[:] = still_running
