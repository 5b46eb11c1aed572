"""The Prefect tasks: thin wrappers over the plain functions in `tasks`, declared once here."""

from __future__ import annotations

from prefect import State, Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun

from storage.errors import StorageError
from tasks import manifest, models, publish, render

IO_RETRIES = 3
IO_RETRY_DELAYS = [1.0, 4.0, 16.0]


def _is_storage_error(task: Task[..., object], task_run: TaskRun, state: State[object]) -> bool:
    """Retry I/O faults only: a bad manifest or a bug does not get better by waiting."""
    return isinstance(state.result(raise_on_failure=False), StorageError)


read_manifest = task(
    name="read-manifest",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=_is_storage_error,
    cache_policy=NO_CACHE,
)(manifest.read_manifest)
load_model = task(name="load-model", cache_policy=NO_CACHE)(models.load_model)
plan_outputs = task(
    name="plan-outputs",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=_is_storage_error,
    cache_policy=NO_CACHE,
)(publish.plan_outputs)
# Only this task holds the GPU: the `gpu` tag lets a Prefect concurrency limit
# share GPUs across workers; inside a process a per-device lock does the same.
render_batch = task(
    name="render",
    tags=["gpu"],
    retries=1,
    cache_policy=NO_CACHE,
)(render.render_rows)
publish_video = task(
    name="encode-and-publish",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=_is_storage_error,
    cache_policy=NO_CACHE,
)(publish.publish_rendered)
write_results = task(
    name="write-results",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=_is_storage_error,
    cache_policy=NO_CACHE,
)(publish.write_results)
