"""The automation that crashes silent runs, and the heartbeat prefect.yaml gives our runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from flows import crash_detection
from tests.conftest import REPO


def test_every_deployment_sends_the_heartbeats_the_automation_expects() -> None:
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert deployments
    for deployment in deployments:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(crash_detection.HEARTBEAT_SECONDS)
        assert crash_detection.RUN_TAG in deployment["tags"], deployment["name"]


def test_a_window_too_close_to_the_heartbeat_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"`silent_for` .* but is 40 s"):
        crash_detection.crash_silent_runs(timedelta(seconds=40))
    with pytest.raises(SystemExit) as exit_info:
        crash_detection.main(["--silent-for", "20"])
    assert exit_info.value.code == 2
    assert "has to exceed the 30 s heartbeat" in capsys.readouterr().err


def test_ensure_creates_the_automation_once_and_updates_it(prefect_api_url: str) -> None:
    from prefect.client.orchestration import get_client

    first = crash_detection.ensure_automation(timedelta(seconds=90))
    second = crash_detection.ensure_automation(timedelta(seconds=60))
    assert first == second
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(crash_detection.NAME)
        trigger = automation.trigger
        assert str(automation.id) == first
        assert trigger.within == timedelta(seconds=60)
        assert trigger.posture == "Proactive"
        assert trigger.match_related == crash_detection.crash_silent_runs().trigger.match_related
        assert [action.type for action in automation.actions] == ["change-flow-run-state"]
        client.delete_automation(automation.id)
