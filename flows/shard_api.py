"""What the parent of a sharded run asks the Prefect API about its shards' runs: their states,
and cancelling them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State
from prefect.states import Cancelling

# The API's page size: one request reads the states of this many shard runs.
STATES_PER_REQUEST = 200


def states(ids: list[UUID]) -> dict[UUID, State[Any]]:
    """The current state of each run, a page of runs per request."""
    found: dict[UUID, State[Any]] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), STATES_PER_REQUEST):
            page = ids[start : start + STATES_PER_REQUEST]
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)),
                limit=STATES_PER_REQUEST,
            )
            found.update({run.id: run.state for run in runs if run.state is not None})
    return found


def cancel(runs: list[UUID]) -> None:
    """Ask these runs to stop: their workers cancel them; stored videos stay."""
    with get_client(sync_client=True) as client:
        for run in runs:
            client.set_flow_run_state(run, Cancelling(), force=True)
