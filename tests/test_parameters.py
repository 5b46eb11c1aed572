"""Flow parameters: the {date} placeholder and the time zone it is read in."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from flows.errors import ParameterError
from flows.parameters import RenderRequest
from flows.run_date import schedule_zone


def test_date_fills_manifest_and_destination_only() -> None:
    request = RenderRequest(
        manifest="s3://bucket/prompts/{date}.csv", destination="renders/{date}", model="{date}"
    )
    dated = request.on_date(lambda: dt.date(2026, 11, 28))
    assert dated.manifest == "s3://bucket/prompts/2026-11-28.csv"
    assert dated.destination == "renders/2026-11-28"
    assert dated.model == "{date}"
    assert request.manifest == "s3://bucket/prompts/{date}.csv"


def test_paths_without_a_date_are_unchanged_and_never_ask_for_it() -> None:
    """The run's date is one more API call (its scheduled start, its schedule's zone)."""
    request = RenderRequest(manifest="examples/prompts.csv")
    asked: list[bool] = []
    assert request.on_date(lambda: asked.append(True) or dt.date(2026, 11, 28)) == request
    assert asked == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 65),
        ("limit", 0),
        ("device", "gpu"),
        ("manifest", ""),
        ("speed", "turbo"),
        ("cache", "first-block:2"),
        ("quantize", "fp4"),
    ],
)
def test_bad_values_are_refused_before_a_run(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        RenderRequest.model_validate({field: value})


def test_the_form_has_one_field_per_parameter_with_bounds_and_dropdowns() -> None:
    from flows.render_flow import render_manifest
    from tasks.presets import PRESETS

    schema = render_manifest.parameters.model_dump()
    properties = schema["properties"]
    assert set(properties) == set(RenderRequest.model_fields)
    assert all(field.get("description") for field in properties.values())
    assert (properties["batch_size"]["minimum"], properties["batch_size"]["maximum"]) == (1, 64)
    assert properties["device"]["enum"][:3] == ["auto", "cpu", "cuda"]
    preset, free_text = properties["model"]["anyOf"]
    assert preset["enum"] == list(PRESETS) and free_text["type"] == "string"
    assert properties["speed"]["enum"] == ["exact", "fast", "fastest"]
    assert properties["speed"]["default"] == "exact"
    assert schema.get("required", []) == []


def test_every_parameter_default_is_the_requests_and_follows_t2v_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import inspect

    from flows.parameters import defaults
    from flows.render_flow import render_manifest

    signature = inspect.signature(render_manifest.fn)
    assert {name: p.default for name, p in signature.parameters.items()} == (
        defaults().model_dump()
    )
    monkeypatch.setenv("T2V_DEVICE", "cpu")
    assert defaults().device == "cpu"


def test_every_flow_takes_every_parameter_a_shard_the_ones_its_parent_does_not_apply() -> None:
    import inspect

    from flows.parameters import PARENT_ONLY
    from flows.render_flow import render_manifest
    from flows.shard_flow import render_shard
    from flows.sharded_flow import render_sharded

    fields = set(RenderRequest.model_fields)
    assert set(inspect.signature(render_manifest.fn).parameters) == fields
    assert set(inspect.signature(render_sharded.fn).parameters) == fields | {
        "shards",
        "shard_rows",
        "shard_start_timeout",
    }
    shard_own = {"model_identity", "manifest_sha256", "lines", "parent_run", "shard"}
    assert set(inspect.signature(render_shard.fn).parameters) == fields - PARENT_ONLY | shard_own
    assert set(RenderRequest().shard_parameters()) == fields - PARENT_ONLY


def test_a_bad_variable_leaves_its_default_built_in_and_names_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.parameters import build_request, defaults, variable_errors

    monkeypatch.setenv("T2V_BATCH_SIZE", "abc")
    monkeypatch.setenv("T2V_PRESIGN_EXPIRY", "60")  # with the default destination, `out`
    monkeypatch.setenv("T2V_DEVICE", "cpu")
    assert (defaults().batch_size, defaults().presign_expiry, defaults().device) == (4, None, "cpu")
    assert [error.split(":")[0] for error in variable_errors()] == [
        "T2V_BATCH_SIZE='abc'",
        "T2V_PRESIGN_EXPIRY='60'",
    ]
    assert build_request(batch_size=2, destination="s3://bucket/p").presign_expiry == 60
    with pytest.raises(ParameterError, match=r"^T2V_BATCH_SIZE='abc': Input should be a valid"):
        build_request()


def test_runs_outside_a_deployment_use_local_time() -> None:
    assert schedule_zone(None) is None


@pytest.mark.usefixtures("prefect_api_url")
@pytest.mark.parametrize(
    ("timezone", "expected"),
    [("Pacific/Kiritimati", ZoneInfo("Pacific/Kiritimati")), (None, dt.UTC)],
)
def test_a_scheduled_deployment_uses_its_schedule_zone(
    timezone: str | None, expected: dt.tzinfo
) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("render-manifest")
        schedule = DeploymentScheduleCreate(
            schedule=CronSchedule(cron="0 2 * * *", timezone=timezone)
        )
        deployment_id = client.create_deployment(
            flow_id, f"zone-{expected}".replace("/", "-"), schedules=[schedule], paused=True
        )
    zone = schedule_zone(str(deployment_id))
    assert zone == expected
    # 20:00 UTC on the 28th is already the 29th at 02:00 in Kiritimati (UTC+14).
    evening = dt.datetime(2026, 11, 28, 20, tzinfo=dt.UTC)
    assert evening.astimezone(zone).date() == dt.date(2026, 11, 28 + (zone != dt.UTC))


@pytest.mark.usefixtures("prefect_api_url")
def test_an_unscheduled_deployment_uses_local_time() -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("render-manifest")
        deployment_id = client.create_deployment(flow_id, "unscheduled")
    assert schedule_zone(str(deployment_id)) is None


def test_speed_levers_take_their_variables_and_override_the_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks.presets import PRESETS

    wan = PRESETS["tiny-wan"].family
    monkeypatch.setenv("T2V_SPEED", "fast")
    monkeypatch.setenv("T2V_COMPILE", "1")
    monkeypatch.setenv("T2V_CACHE", "TaylorSeer:3")
    request = RenderRequest()
    assert (request.speed, request.compile, request.cache) == ("fast", "full", "taylorseer:3")
    levers = request.levers(wan)
    assert (levers.compile, levers.cache) == ("full", "taylorseer:3")
    assert levers.attention == wan.speed.fast.attention


def test_the_form_opens_on_presets_and_states_bounds() -> None:
    from prefect.utilities.schema_tools.validation import is_valid

    from flows.render_flow import render_manifest
    from flows.sharded_flow import render_sharded

    for flow in (render_manifest, render_sharded):
        schema = flow.parameters.model_dump()
        properties = schema["properties"]
        # Prefect's form opens a string value on the first anyOf branch typed "string".
        preset = properties["model"]["anyOf"][0]
        assert preset["type"] == "string" and preset["title"] == "preset"
        # Prefect's form opens a null value on the branch typed "null" (a toggle to click
        # before typing); with none, it opens on the value's own input, and null still passes.
        for name in ("limit", "presign_expiry", "aws_credentials_block", "cache", "shards"):
            if name in properties:
                branches = properties[name]["anyOf"]
                assert [b.get("type") for b in branches][1:] == [None], name
                assert is_valid({name: None}, schema), name
        assert not is_valid({"limit": 0}, schema)
        assert properties["batch_size"]["description"].endswith("1 … 64.")
        assert properties["limit"]["description"].endswith("At least 1.")
        assert properties["presign_expiry"]["description"].endswith("1 … 604,800.")
        assert properties["render_timeout_scale"]["description"].endswith("Above 0, at most 1,000.")
