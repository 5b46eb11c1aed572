"""A `gpu` concurrency limit (`make gpu-limit`) on a real Prefect server: a run's batches
queued while the slot is taken elsewhere wait, then each takes it on its device turn and
gives it back. (That a batch asks for the slot only on its turn, so that the run cannot
hang, is `test_render`'s, with the order forced.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from tests.factories import tiny_manifest
from tests.processes import wait_for


def _waiting_renders(client: Any) -> int:
    """Render task runs not yet final: the run's queued batches."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterState
    from prefect.client.schemas.filters import TaskRunFilterStateType as StateType
    from prefect.client.schemas.objects import StateType as Type

    runs = client.read_task_runs(
        task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(type=StateType(any_=[Type.PENDING, Type.RUNNING]))
        )
    )
    return sum(run.name.startswith("render-") for run in runs)


@contextmanager
def _slot_taken_elsewhere() -> Iterator[None]:
    """The `gpu` limit's one slot held by another worker until the block ends."""
    from prefect.concurrency.sync import concurrency

    taken, free = threading.Event(), threading.Event()

    def another_worker_renders() -> None:
        with concurrency("tag:gpu", occupy=1, strict=True):
            taken.set()
            free.wait(120)

    elsewhere = threading.Thread(target=another_worker_renders, daemon=True)
    elsewhere.start()
    assert taken.wait(30)
    try:
        yield
    finally:
        free.set()
        elsewhere.join(30)


def test_batches_queued_behind_a_taken_gpu_slot_render_once_it_frees(
    tmp_path: Path, gpu_slot: Any
) -> None:
    out = tmp_path / "out"
    request = RenderRequest(
        manifest=str(tiny_manifest(tmp_path, rows=4)), destination=str(out), batch_size=1
    )
    outcome: list[Any] = []
    run = threading.Thread(
        target=lambda: outcome.append(render_manifest(**request.parameters())), daemon=True
    )
    with _slot_taken_elsewhere():
        run.start()
        wait_for(lambda: _waiting_renders(gpu_slot) >= 3, 120, "three queued batches")
    run.join(120)
    assert not run.is_alive(), "the run hung once the slot was free"
    assert outcome[0].counts == {"ok": 4, "skipped": 0, "failed": 0, "invalid": 0}
    assert gpu_slot.read_concurrency_limit_by_tag("gpu").active_slots == []


def test_a_run_asks_for_slots_only_where_a_gpu_limit_exists(
    prefect_api_url: str, gpu_slot: Any
) -> None:
    """Each slot asked for is a server round trip between batches, the device idle meanwhile:
    without a limit (`make deploy` creates none) a run asks for none."""
    from flows.gpu_slot import gpu_limited

    assert gpu_limited()
    gpu_slot.delete_concurrency_limit_by_tag("gpu")
    assert not gpu_limited()
    gpu_slot.create_concurrency_limit(tag="gpu", concurrency_limit=1)  # the fixture deletes it


def test_a_stop_ends_the_wait_for_a_slot_taken_elsewhere(gpu_slot: Any) -> None:
    """A worker asked to stop (SIGTERM) while its render waits for a slot another machine
    holds stops waiting: its rows end `interrupted`, not once that machine is done."""
    from flows.gpu_slot import gpu_slot as slot
    from tasks import interrupt

    entered = threading.Event()

    def wait_for_the_slot() -> None:
        with slot():
            entered.set()

    waiting = threading.Thread(target=wait_for_the_slot, daemon=True)
    try:
        with _slot_taken_elsewhere():
            waiting.start()
            waiting.join(3)
            assert waiting.is_alive(), "the slot was not taken elsewhere"
            interrupt.request_stop("stop requested (test)")
            waiting.join(10)
            assert not waiting.is_alive(), "a stop did not end the wait for the gpu slot"
            assert entered.is_set()
    finally:
        interrupt.clear()
    # The stopped wait holds no slot: only the other worker's was ever taken, and it is back.
    assert gpu_slot.read_concurrency_limit_by_tag("gpu").active_slots == []
