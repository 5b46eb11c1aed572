"""The Prefect tasks: thin wrappers over the plain functions in `tasks`, declared once here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from prefect import State, Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun

from flows.gpu_slot import slot_for
from storage.errors import RETRY_DELAYS_S, StorageError
from tasks import candidates, destination, devices, manifest, presets, publish
from tasks.manifest import RenderRow
from tasks.presets import ModelRef
from tasks.render import BatchResult
from tasks.render_call import FailedRender
from tasks.scoring import Scoring
from tasks.speed import EXACT, Levers

P = ParamSpec("P")
R = TypeVar("R")
IO_RETRY_DELAYS = list(RETRY_DELAYS_S)


def _is_storage_error(task: Task[..., object], task_run: TaskRun, state: State[object]) -> bool:
    """Retry transient I/O faults only: a bad manifest, a 403 or a bug does not get better
    by waiting."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, StorageError) and error.retryable


def _io_task(fn: Callable[P, R], name: str) -> Task[P, R]:
    """A task that reads or writes storage: retried with backoff when storage fails."""
    return task(
        name=name,
        retries=len(IO_RETRY_DELAYS),
        retry_delay_seconds=IO_RETRY_DELAYS,
        retry_condition_fn=_is_storage_error,
        cache_policy=NO_CACHE,
    )(fn)


read_manifest = _io_task(manifest.read_manifest, "read-manifest")
check_destination = _io_task(destination.check_destination, "check-destination")
plan_outputs = _io_task(publish.plan_outputs, "plan-outputs")
publish_rendered = _io_task(publish.publish_rendered, "encode-and-publish")
write_results = _io_task(publish.write_results, "write-results")
resolve_model = task(name="resolve-model", cache_policy=NO_CACHE)(presets.resolve_model)
load_model = task(name="load-model", cache_policy=NO_CACHE)(devices.load_model)


# Only this task holds the GPU: a slot of the `gpu` tag's Prefect concurrency limit, where
# one exists, shares GPUs across workers (flows.gpu_slot); inside a process, the device's
# turns do the same.
# The render's own timeout (tasks.batching.render_timeout), not Prefect's timeout_seconds,
# ends a hung render: Prefect's cannot interrupt a worker thread blocked in C code.
@task(
    name="render",
    retries=1,
    cache_policy=NO_CACHE,
)
def render_rows(
    model: ModelRef,
    device: str,
    rows: Sequence[RenderRow],
    timeout_scale: float = 1.0,
    levers: Levers = EXACT,
    ticket: int | None = None,
    scoring: Scoring | None = None,
    gpu_limited: bool = False,
) -> BatchResult:
    """`candidates.render_best` (render.render_rows of every candidate), and one log line
    that says what the batch was and cost, from taking the device to giving it back. With
    `gpu_limited` (flows.gpu_slot), each pipeline call holds a `gpu` slot with the device.

    A device that fails (a fatal CUDA error, a hung render) is in the result, not raised:
    retrying in this process is futile, only a rerun in a fresh one can render the rows."""
    result = candidates.render_best(
        model, device, rows, timeout_scale, levers, ticket, scoring, slot_for(gpu_limited)
    )
    first = rows[0]
    failed = sum(isinstance(outcome, FailedRender) for outcome in result.outcomes)
    get_run_logger().info(
        "rendered %d of %d rows (%d frames of %d×%d, %d steps) with %s on %s in %.1f s",
        len(rows) - failed,
        len(rows),
        first.num_frames,
        first.width,
        first.height,
        first.num_inference_steps,
        model.name,
        device,
        result.ended - result.started,
    )
    return result
