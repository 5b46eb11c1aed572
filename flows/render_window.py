"""The batches a run has queued for the device and the videos it is publishing: each
batch's videos go to publishing as soon as its render ends, while the next renders."""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from prefect.futures import PrefectFuture

from flows import prefect_tasks, progress
from flows.gpu_slot import gpu_limited
from flows.parameters import RenderRequest
from flows.progress import RenderedBatch
from tasks import devices, interrupt
from tasks.claims import Claims
from tasks.errors import first_line
from tasks.manifest import RenderRow
from tasks.publish import OutputPlan
from tasks.render import BatchResult, not_rendered
from tasks.render_call import FailedRender, RenderedVideo, RenderOutcome
from tasks.results import ResultRow
from tasks.stored import StoredBy


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
        self._gpu_limited = gpu_limited()  # asked once, before the batches queue
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
            self._gpu_limited,
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
