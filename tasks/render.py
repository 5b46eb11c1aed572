"""Render a micro-batch on its device in turn: in a watched thread that a stop request or
a hung render gives up on, splitting the batch when the GPU runs out of memory, and
marking the device failed after a fatal error (`tasks.render_call` makes the call)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from tasks.batching import render_timeout
from tasks.devices import device_failure, device_turns, get_pipeline, mark_device_failed
from tasks.errors import DeviceFailedError, RenderError, first_line
from tasks.interrupt import INTERRUPTED, stop_requested
from tasks.manifest import RenderRow
from tasks.presets import ModelRef
from tasks.render_call import (
    FailedRender,
    RenderOutcome,
    ScoreBy,
    as_asked,
    device_of,
    render_batch,
)
from tasks.scoring import Scoring, get_scorer
from tasks.speed import EXACT, Levers
from tasks.start_images import read_start_images


@dataclass(frozen=True)
class BatchResult:
    """Every row's outcome, in the batch's order, and why the device failed, if it did:
    then nothing else in this process may render on it, and a rerun resumes. `started` and
    `ended` (time.time()) bound the batch's hold on the device; 0 when it never held it."""

    outcomes: list[RenderOutcome]
    device_failure: str | None = None
    started: float = 0.0
    ended: float = 0.0


def not_rendered(reason: str) -> str:
    """The error of a row left unrendered because its device failed earlier in the process."""
    return f"not rendered: the device failed earlier in this process ({reason}); rerun to resume"


# What else a render holds while it holds the device: a context manager's factory.
Slot = Callable[[], AbstractContextManager[object]]
# How often a render's watcher looks for a stop request.
STOP_POLL_S = 0.1


def render_rows(
    model: ModelRef,
    device: str,
    rows: Sequence[RenderRow],
    timeout_scale: float = 1.0,
    levers: Levers = EXACT,
    ticket: int | None = None,
    scoring: Scoring | None = None,
    slot: Slot = contextlib.nullcontext,
) -> BatchResult:
    """Render one micro-batch of `model` on `device`, holding the device only while rendering,
    once the renders queued before `ticket` (tasks.devices.DeviceTurns) have had their turn.
    `slot` is held with the device and asked for only on this render's turn: a slot asked
    for earlier (a Prefect `gpu` limit's) could be taken by a render queued later, which
    would then wait for the turn of one waiting for that slot, for good.

    A fatal CUDA error or a hung render leaves the device unusable by this process: the
    result says why, and every later call renders nothing. Once a stop is requested
    (tasks.interrupt), a render in flight is abandoned and none starts.
    """
    try:
        if stop_requested():
            return _interrupted(rows, [])
        pipe = get_pipeline(model, torch.device(device), levers)
        target = device_of(pipe)
        scorer = None if scoring is None else (get_scorer(scoring.name, target), scoring.threshold)
        unreadable = [FailedRender(row, error) for row, error in read_start_images(rows)]
        ready = [row for row in rows if row.line not in {f.row.line for f in unreadable}]
        if not ready:
            return BatchResult(list(unreadable))
        timeout_s = render_timeout(ready, target.type, timeout_scale)
        with device_turns(target).turn(ticket), slot():
            started = time.time()
            if (reason := device_failure(target)) is not None:
                result = _device_failed(not_rendered(reason), reason, ready, [])
            elif stop_requested():  # asked while this batch waited for the device
                result = _interrupted(ready, [])
            else:
                result = _render_watched(pipe, ready, timeout_s, scorer)
            position = {row.line: n for n, row in enumerate(rows)}
            outcomes = sorted([*result.outcomes, *unreadable], key=lambda o: position[o.row.line])
            return dataclasses.replace(
                result, outcomes=outcomes, started=started, ended=time.time()
            )
    finally:
        if ticket is not None:  # a render that never took its turn lets the later ones go
            device_turns(device).leave(ticket)


def _render_watched(
    pipe: Any, rows: Sequence[RenderRow], timeout_s: float, scorer: ScoreBy = None
) -> BatchResult:
    """Render in a thread of its own; give up on it after `timeout_s`, or at once when a
    stop is requested.

    A thread stuck in a CUDA call can be neither interrupted nor joined: it is a daemon, so
    that it does not keep the process from exiting. After a timeout the device is marked
    failed, so that nothing else in the process waits behind it or shares the pipeline with
    it; after a stop request no render starts anyway.
    """
    outcomes: list[RenderOutcome] = []
    errors: list[BaseException] = []

    def render() -> None:
        try:
            _render_splitting_on_oom(pipe, rows, outcomes, scorer)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            errors.append(exc)

    worker = threading.Thread(target=render, name="t2v-render", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout_s
    while True:
        worker.join(min(STOP_POLL_S, max(0.0, deadline - time.monotonic())))
        if not worker.is_alive():
            break
        if stop_requested():
            return _interrupted(rows, list(outcomes))
        if time.monotonic() >= deadline:
            reason = f"render timed out after {timeout_s:g} s"
            mark_device_failed(device_of(pipe), reason)
            return _device_failed(reason, reason, rows, list(outcomes))
    if not errors:
        return BatchResult(outcomes)
    error = errors[0]
    if isinstance(error, DeviceFailedError):
        mark_device_failed(device_of(pipe), str(error))
        return _device_failed(str(error), str(error), rows, outcomes)
    raise error


def _interrupted(rows: Sequence[RenderRow], finished: Sequence[RenderOutcome]) -> BatchResult:
    """The rows finished before a stop request, and the rest failed as interrupted."""
    done = {outcome.row.line for outcome in finished}
    rest = [FailedRender(row, INTERRUPTED) for row in rows if row.line not in done]
    return BatchResult([*finished, *rest])


def _device_failed(
    error: str, reason: str, rows: Sequence[RenderRow], finished: Sequence[RenderOutcome]
) -> BatchResult:
    """The failure with every row's outcome: those finished before it, the rest failed."""
    done = {outcome.row.line for outcome in finished}
    failed = [FailedRender(row, error) for row in rows if row.line not in done]
    return BatchResult([*finished, *failed], reason)


def _render_splitting_on_oom(
    pipe: Any,
    rows: Sequence[RenderRow],
    outcomes: list[RenderOutcome],
    scorer: ScoreBy = None,
    split: bool = False,
) -> None:
    """Append each row's outcome. On CUDA out-of-memory, render each half alone; a single
    row that still runs out is failed. Once split, another render error fails only its own
    rows, so that the task's retry never renders rows again."""
    try:
        outcomes.extend(map(as_asked, render_batch(pipe, rows, scorer)))
        return
    except torch.cuda.OutOfMemoryError as exc:
        error = f"out of GPU memory: {first_line(exc)}"
    except DeviceFailedError:
        raise
    except RenderError as exc:
        if not split:
            raise
        outcomes.extend(FailedRender(row, str(exc)) for row in rows)
        return
    # Only past the except block are the failed attempt's traceback, and the activations
    # its frames hold, gone, so that the allocator can give their memory back.
    torch.cuda.empty_cache()
    if len(rows) == 1:
        outcomes.append(FailedRender(rows[0], error))
        return
    half = len(rows) // 2
    _render_splitting_on_oom(pipe, rows[:half], outcomes, scorer, split=True)
    _render_splitting_on_oom(pipe, rows[half:], outcomes, scorer, split=True)
