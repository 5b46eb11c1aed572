"""A slot of the `gpu` tag's Prefect concurrency limit (`make gpu-limit`), held by a render
while it holds its device, where such a limit exists.

The render task does not carry the tag: Prefect's task engine would take the slot before
the task starts, in whatever order the queued batches' threads reach the server. A batch
queued later could then hold the slot while it waits for the device turn of one queued
earlier, which waits for that slot: a run hung for good. Taken on the device turn instead
(`tasks.render.render_rows`'s `slot`), the slot goes to the batches in manifest order.

Asking for a slot is a server round trip between one batch and the next, the device idle
meanwhile (about a second each on two busy cores): a run asks whether the limit exists
once, before its batches queue, and its renders ask for slots only if it does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder

# The call Prefect's task engine makes for a tagged task (prefect 3.9), so that a slot
# looks, and expires, the same: held by the task run, leased for 60 s and renewed while it
# renders, given back when its lease runs out if its machine dies. Unlike the public
# `prefect.concurrency.sync.concurrency`, it says nothing when no `gpu` limit exists, as
# for a run that needs none.
from prefect.concurrency._sync import concurrency
from prefect.context import TaskRunContext
from prefect.exceptions import ObjectNotFound

from tasks.render import Slot

GPU_TAG = "gpu"
LEASE_S = 60


@contextmanager
def gpu_slot() -> Iterator[None]:
    """Hold a slot of the `gpu` tag's limit, where one exists; its holder is this task run."""
    context = TaskRunContext.get()
    holder = (
        None if context is None else ConcurrencyLeaseHolder(type="task_run", id=context.task_run.id)
    )
    with concurrency(
        names=[f"tag:{GPU_TAG}"],
        occupy=1,
        holder=holder,
        lease_duration=LEASE_S,
        suppress_warnings=True,
    ):
        yield


def gpu_limited() -> bool:
    """Whether the server has an active `gpu` tag limit; a limit created later counts
    from the next run on."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(f"tag:{GPU_TAG}")
        except ObjectNotFound:
            return False
    return bool(limit.active)


def slot_for(limited: bool) -> Slot:
    """What a render holds with its device: a `gpu` slot where the run found the limit."""
    return gpu_slot if limited else contextlib.nullcontext
