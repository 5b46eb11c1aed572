"""The date `{date}` stands for: the run's scheduled start, in its schedule's time zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from prefect import get_client
from prefect.runtime import deployment, flow_run


def scheduled_date() -> dt.date:
    """A nightly run scheduled for 02:00 renders that night's date, however late it starts."""
    start: dt.datetime = flow_run.scheduled_start_time
    return start.astimezone(schedule_zone(deployment.id)).date()


def schedule_zone(deployment_id: str | None) -> dt.tzinfo | None:
    """The zone of the deployment's (first) schedule, UTC if it names none; None: local time.

    Runs without a schedule (the command line, an on-demand deployment) use the
    machine's local date, which is what a person typing `{date}` expects.
    """
    if deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        schedules = client.read_deployment(deployment_id).schedules
    if not schedules:
        return None
    zone = getattr(schedules[0].schedule, "timezone", None)
    return ZoneInfo(zone) if zone else dt.UTC
