"""Marks t2v flow runs `Crashed` when their process vanishes (a dead machine, container or worker).

A self-hosted Prefect server does not notice on its own that a run's process is gone: the
run stays `Running`. Runs of our deployments send a heartbeat event every HEARTBEAT_SECONDS
(prefect.yaml sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY), and this automation crashes a run whose
heartbeats stop for longer than a window without it reaching a final state.
`make deploy` creates it; `python -m flows.crash_detection --silent-for SECONDS` updates it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

NAME = "t2v: crash runs whose heartbeats stopped"
HEARTBEAT_SECONDS = 30  # prefect.yaml's PREFECT_FLOWS_HEARTBEAT_FREQUENCY; Prefect's minimum
DEFAULT_SILENT_FOR = timedelta(seconds=3 * HEARTBEAT_SECONDS)
# Only runs tagged so send heartbeats this often (every deployment in prefect.yaml carries the
# tag); any other run sends them every 180 s by default and would be crashed while healthy.
RUN_TAG = "t2v"
FINAL_EVENTS = {
    f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")
}


def crash_silent_runs(silent_for: timedelta = DEFAULT_SILENT_FOR) -> AutomationCore:
    """The automation: a heartbeat followed by no other, nor a final state, within `silent_for`."""
    if silent_for <= timedelta(seconds=HEARTBEAT_SECONDS + 10):
        raise ValueError(
            f"`silent_for` has to exceed the {HEARTBEAT_SECONDS} s heartbeat by more than 10 s "
            f"but is {silent_for.total_seconds():g} s."
        )
    return AutomationCore(
        name=NAME,
        description=(
            f"Runs tagged {RUN_TAG!r} send a heartbeat every {HEARTBEAT_SECONDS} s; one silent "
            f"for {silent_for.total_seconds():g} s lost its process and is marked Crashed."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{RUN_TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=silent_for,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name=None,
                force=False,
                message=(
                    f"No heartbeat for {silent_for.total_seconds():g} s: the process running "
                    "this flow run is gone. Start the deployment again to resume."
                ),
            )
        ],
    )


def ensure_automation(silent_for: timedelta = DEFAULT_SILENT_FOR) -> str:
    """Create the automation on the configured server, or update it in place; returns its id."""
    automation = crash_silent_runs(silent_for)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(NAME)
        if not existing:
            return str(client.create_automation(automation))
        first, *duplicates = existing
        client.update_automation(first.id, automation)
        for duplicate in duplicates:
            client.delete_automation(duplicate.id)
        return str(first.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.crash_detection", description=__doc__)
    parser.add_argument(
        "--silent-for",
        type=float,
        default=DEFAULT_SILENT_FOR.total_seconds(),
        metavar="SECONDS",
        help="mark a run Crashed after this long without a heartbeat (default: %(default)g)",
    )
    silent_for = timedelta(seconds=parser.parse_args(argv).silent_for)
    try:
        automation_id = ensure_automation(silent_for)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"automation {NAME!r} ({automation_id}): Crashed after {silent_for.total_seconds():g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
