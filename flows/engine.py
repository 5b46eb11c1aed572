"""The engine both rendering flows share: render a plan's rows in batches on the device,
publish each batch while the next renders, and wait for rows another run holds.

`render-manifest` runs it over a whole manifest, `render-shard` over its shard's rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import socket
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from flows import prefect_tasks, progress
from flows.deployed_code import refuse_relative_paths
from flows.parameters import RenderRequest, request_from, variable_errors
from flows.progress import RenderedBatch
from storage import open_storage
from tasks import devices, interrupt
from tasks.batching import plan_batches
from tasks.claimed_rows import take_rows
from tasks.claims import Claims, Owner
from tasks.errors import first_line
from tasks.manifest import RenderRow
from tasks.publish import OutputPlan
from tasks.render import (
    BatchResult,
    FailedRender,
    RenderedVideo,
    RenderOutcome,
    not_rendered,
)
from tasks.results import ResultRow, SpeedLevers
from tasks.settings import settings
from tasks.stored import StoredBy

# Batches queued for the device at once: while batch k renders, the next two wait for
# their turn, so one takes the device the moment k gives it back (with one queued, a task
# run's start, a server round trip, outlasted a short render: up to 1.1 s idle, `make
# bench-slots`). Queued batches hold no frames: those exist once the device renders them.
RENDER_WINDOW = 3


def flow_request(arguments: Mapping[str, Any]) -> RenderRequest:
    """The request a flow's arguments make. A `T2V_*` variable its signature could not take
    (a bad value) is said once in the run's log; a relative path, where it would resolve
    inside a cloned commit, refuses the run."""
    for error in variable_errors():
        get_run_logger().warning("%s; this run does not use it", error)
    request = request_from(arguments)
    refuse_relative_paths(
        {
            "manifest": request.manifest,
            "destination": request.destination,
            "image_root": request.image_root,
        }
    )
    return request


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


def worker_name() -> str:
    """Who renders in this process: WORKER_NAME (`make worker` exports it to its runs), else
    the host's name."""
    return settings().worker_name or socket.gethostname()


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
    log = get_run_logger().warning if report.skipped else get_run_logger().info
    log(line)
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
    """Claim each batch's rows and queue those claimed for the device, in order; publish each
    batch as soon as its render ends, while the next renders; rows another owner holds go to
    `held`. Once rendering has to stop, fail the batches left and publish what was rendered."""
    window = RenderWindow(request, device, plan, stop, len(batches), claims)
    for number, batch in enumerate(batches, 1):
        if stop.check() is not None:
            yield from (plan.failed(row, stop.row_error()) for row in batch)
            continue
        taken = take_rows(claims, plan, batch, request.force)
        yield from taken.settled
        held.extend(taken.held)
        lapsed = claims.lapsed()
        yield from (lapsed_row(plan, row) for row in taken.render if plan.keys[row.line] in lapsed)
        if render := [row for row in taken.render if plan.keys[row.line] not in lapsed]:
            window.render(number, render)
        while len(window.rendering) >= RENDER_WINDOW:
            yield from window.next_settled()
    while window.busy():
        yield from window.next_settled()


def lapsed_row(plan: OutputPlan, row: RenderRow) -> ResultRow:
    """A row whose claim this run lost: another run may render it now, so this one must not
    store it."""
    return plan.failed(
        row,
        f"the claim on {plan.keys[row.line]} lapsed (it could not be renewed, or another run "
        "took it over); rerun to resume",
    )


class RenderWindow:
    """The batches queued for the device, which take it in the order queued, and the videos
    being published. Each batch's videos go to publishing as soon as its render ends."""

    def __init__(
        self,
        request: RenderRequest,
        device: str,
        plan: OutputPlan,
        stop: RenderingStop,
        batches: int,
        claims: Claims,
    ) -> None:
        self._request, self._device, self._plan, self._stop = request, device, plan, stop
        self._batches, self._claims = batches, claims
        self.rendering: deque[int] = deque()  # the numbers of the batches queued, in order
        self._publishing = 0
        # What to do about each task that ended, in the order they ended.
        self._ended: queue.SimpleQueue[Callable[[], Iterator[ResultRow]]] = queue.SimpleQueue()

    def render(self, number: int, rows: list[RenderRow]) -> None:
        if not self.rendering:
            progress.phase(f"rendering batch {number} of {self._batches} on {self._device}")
        self.rendering.append(number)
        turns = devices.device_turns(self._device)
        ticket = turns.queue()
        future = prefect_tasks.render_rows.submit(
            self._plan.model,
            self._device,
            rows,
            self._request.render_timeout_scale,
            self._plan.levers,
            ticket,
            self._plan.scoring,
        )
        future.add_done_callback(
            lambda done: self._ended.put(partial(self._rendered, number, rows, done))
        )
        # A task that failed before it took its turn must not hold up the batches after it.
        future.add_done_callback(lambda done: turns.leave(ticket))

    def busy(self) -> bool:
        return bool(self.rendering) or self._publishing > 0

    def next_settled(self) -> Iterator[ResultRow]:
        """Wait for the next render or publish to end; the rows it settled."""
        yield from self._ended.get()()

    def _rendered(
        self, number: int, rows: list[RenderRow], future: PrefectFuture[BatchResult]
    ) -> Iterator[ResultRow]:
        """Submit a rendered batch's videos for publishing; its failed rows."""
        self.rendering.remove(number)
        outcome = future.result(raise_on_failure=False)
        outcomes: list[RenderOutcome]
        if isinstance(outcome, BaseException):
            outcomes = [FailedRender(row, first_line(outcome)) for row in rows]
        else:
            self._stop.reason = self._stop.reason or outcome.device_failure
            outcomes = outcome.outcomes
            lines = [row.line for row in rows]
            progress.batch_rendered(RenderedBatch(number, lines, outcome.started, outcome.ended))
        if self.rendering:
            following = self.rendering[0]
            progress.phase(f"rendering batch {following} of {self._batches} on {self._device}")
        for rendered in outcomes:
            if isinstance(rendered, FailedRender):
                yield self._plan.failed(rendered.row, rendered.error)
            elif self._plan.keys[rendered.row.line] in self._claims.lapsed():
                yield lapsed_row(self._plan, rendered.row)
            else:
                self._publish(rendered)

    def _publish(self, rendered: RenderedVideo) -> None:
        request, plan = self._request, self._plan
        future = prefect_tasks.publish_rendered.submit(
            request.destination,
            rendered,
            plan.keys[rendered.row.line],
            plan.model.name,
            exclusive=not request.force,
            by=StoredBy(self._claims.owner.run, self._claims.owner.worker),
        )
        self._publishing += 1
        future.add_done_callback(
            lambda done: self._ended.put(partial(self._published, rendered.row, done))
        )

    def _published(self, row: RenderRow, future: PrefectFuture[ResultRow]) -> Iterator[ResultRow]:
        self._publishing -= 1
        result = future.result(raise_on_failure=False)
        yield (
            self._plan.failed(row, first_line(result))
            if isinstance(result, BaseException)
            else result
        )
