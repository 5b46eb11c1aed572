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
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.context import TaskRunContext
from prefect.exceptions import ObjectNotFound

from tasks import interrupt
from tasks.render import Slot

GPU_TAG = "gpu"
LIMIT = f"tag:{GPU_TAG}"  # the name Prefect gives a tag's limit (`make gpu-limit`)
# As Prefect's task engine leases a tagged task's slot: 60 s, renewed while it renders, so
# that a dead machine's slot comes back within a minute.
LEASE_S = 60.0
RENEW_EVERY_S = LEASE_S * 0.75
LOCKED = 423  # the server's answer while every slot is taken, with a Retry-After
log = logging.getLogger(__name__)


@contextmanager
def gpu_slot() -> Iterator[None]:
    """Hold a slot of the `gpu` tag's limit, waiting for one if all are taken; its holder
    is this task run, as for a tagged task. Given back at once on the way out: the lease's
    renewals run in a thread nobody waits for (Prefect's own context manager joins its
    thread, which held the device idle up to 2 s after short renders)."""
    context = TaskRunContext.get()
    holder = (
        None if context is None else ConcurrencyLeaseHolder(type="task_run", id=context.task_run.id)
    )
    with get_client(sync_client=True) as client:
        lease = _acquire(client, holder)
        if lease is None:  # the limit was deleted since the run looked, or a stop came
            yield
            return
        stop = threading.Event()
        threading.Thread(
            target=_renew, args=(lease, stop), name="t2v-gpu-slot", daemon=True
        ).start()
        try:
            yield
        finally:
            stop.set()
            # A server gone meanwhile: the lease runs out by itself.
            with contextlib.suppress(httpx.HTTPError):
                client.release_concurrency_slots_with_lease(lease)


def _acquire(client: SyncPrefectClient, holder: ConcurrencyLeaseHolder | None) -> UUID | None:
    """A lease on one slot, once one is free; None where the limit does not exist or a stop
    is requested (tasks.interrupt) meanwhile: the render then sees the stop and starts none."""
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[LIMIT], slots=1, mode="concurrency", lease_duration=LEASE_S, holder=holder
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != LOCKED:
                raise
            if interrupt.wait_for_stop(float(exc.response.headers.get("Retry-After", 1.0))):
                return None
            continue
        answer = response.json()
        return UUID(answer["lease_id"]) if answer.get("limits") else None


def _renew(lease: UUID, stop: threading.Event) -> None:
    """Renew the lease until `stop`; a failed renewal is tried again at the next one."""
    with get_client(sync_client=True) as client:
        while not stop.wait(RENEW_EVERY_S):
            try:
                client.renew_concurrency_lease(lease, LEASE_S)
            except httpx.HTTPError as exc:
                if not stop.is_set():
                    log.warning("could not renew the gpu slot's lease %s: %s", lease, exc)


def gpu_limited() -> bool:
    """Whether the server has an active `gpu` tag limit; a limit created later counts
    from the next run on."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(LIMIT)
        except ObjectNotFound:
            return False
    return bool(limit.active)


def slot_for(limited: bool) -> Slot:
    """What a render holds with its device: a `gpu` slot where the run found the limit."""
    return gpu_slot if limited else contextlib.nullcontext
