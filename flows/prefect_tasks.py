"""The Prefect tasks: thin wrappers over the plain functions in `tasks`, declared once here."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect import State, Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun

from storage.errors import StorageError
from tasks import devices, manifest, publish, render
from tasks.errors import DeviceFailedError

P = ParamSpec("P")
R = TypeVar("R")
IO_RETRY_DELAYS = [1.0, 4.0, 16.0]


def _is_storage_error(task: Task[..., object], task_run: TaskRun, state: State[object]) -> bool:
    """Retry transient I/O faults only: a bad manifest, a 403 or a bug does not get better
    by waiting."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, StorageError) and error.retryable


def _device_still_usable(task: Task[..., object], task_run: TaskRun, state: State[object]) -> bool:
    """Retry a render once, unless its device is unusable in this process (a fatal CUDA
    error, a hung render): then only a fresh process, a rerun, can render the rows."""
    return not isinstance(state.result(raise_on_failure=False), DeviceFailedError)


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
plan_outputs = _io_task(publish.plan_outputs, "plan-outputs")
publish_video = _io_task(publish.publish_rendered, "encode-and-publish")
write_results = _io_task(publish.write_results, "write-results")
load_model = task(name="load-model", cache_policy=NO_CACHE)(devices.load_model)
# Only this task holds the GPU: the `gpu` tag lets a Prefect concurrency limit
# share GPUs across workers; inside a process a per-device lock does the same.
# The render's own timeout (tasks.render.render_timeout), not Prefect's timeout_seconds,
# ends a hung render: Prefect's cannot interrupt a worker thread blocked in C code.
render_batch = task(
    name="render",
    tags=["gpu"],
    retries=1,
    retry_condition_fn=_device_still_usable,
    cache_policy=NO_CACHE,
)(render.render_rows)
