"""The engine both rendering flows share: render a plan's rows in batches on the device,
publish each batch while the next renders, and wait for rows another run holds.

`render-manifest` runs it over a whole manifest, `render-shard` over its shard's rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run

from flows import prefect_tasks, progress
from flows.deployed_code import refuse_relative_paths
from flows.parameters import RenderRequest, request_from, variable_errors
from flows.render_window import RenderingStop, RenderWindow, lapsed_row
from storage import open_storage
from tasks import devices, interrupt
from tasks.batching import plan_batches
from tasks.claimed_rows import take_rows
from tasks.claims import Claims, Owner
from tasks.manifest import RenderRow
from tasks.publish import OutputPlan
from tasks.results import ResultRow, SpeedLevers
from tasks.settings import settings

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
