"""The Prefect tasks: thin wrappers over the plain functions in `tasks`, declared once here."""

from __future__ import annotations

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from storage.errors import StorageError
from tasks import manifest, models, publish, render

IO_RETRIES = 3
IO_RETRY_DELAYS = [1.0, 4.0, 16.0]


def _is_storage_error(task: Task[..., object], task_run: TaskRun, state: State[object]) -> bool:
    """Retry I/O faults only: a bad manifest or a bug does not get better by waiting."""
    return isinstance(state.result(raise_on_failure=False), StorageError)


read_manifest = task(
    manifest.read_manifest,
    name="read-manifest",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=_is_storage_error,
    cache_policy=NO_CACHE,
)
load_model = task(models.load_model, name="load-model", cache_policy=NO_CACHE)
plan_outputs = task(
    publish.plan_outputs,
    name="plan-outputs",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=_is_storage_error,
    cache_policy=NO_CACHE,
)
# Only this task holds the GPU: the `gpu` tag lets a Prefect concurrency limit
# share GPUs across workers; inside a process a per-device lock does the same.
render_batch = task(
    render.render_rows,
    name="render",
    tags=["gpu"],
    retries=1,
    cache_policy=NO_CACHE,
)
publish_video = task(
    publish.publish_rendered,
    name="encode-and-publish",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=_is_storage_error,
    cache_policy=NO_CACHE,
)
write_results = task(
    publish.write_results,
    name="write-results",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=_is_storage_error,
    cache_policy=NO_CACHE,
)
