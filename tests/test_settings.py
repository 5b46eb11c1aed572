"""The process's settings: read from the environment when used, a bad one named in a line."""

from __future__ import annotations

import pytest

from tasks.errors import SettingsError
from tasks.settings import settings
from tasks.shards import shared_location


def test_settings_read_the_variables_now(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORKER_NAME", "T2V_SHARED_FOLDER", "T2V_CODE_REPO"):
        monkeypatch.delenv(name, raising=False)
    assert settings().model_dump() == {"worker_name": "", "shared_folder": False, "code_repo": ""}
    monkeypatch.setenv("WORKER_NAME", "box1-gpu0")
    monkeypatch.setenv("T2V_SHARED_FOLDER", "1")
    monkeypatch.setenv("T2V_CODE_REPO", "origin")
    assert settings().model_dump() == {
        "worker_name": "box1-gpu0",
        "shared_folder": True,
        "code_repo": "origin",
    }


def test_a_bad_setting_is_one_line_naming_the_variable_where_it_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T2V_SHARED_FOLDER", "maybe")
    with pytest.raises(SettingsError) as raised:
        shared_location("out")
    assert str(raised.value) == (
        "T2V_SHARED_FOLDER='maybe': Input should be a valid boolean, unable to interpret input"
    )
    assert shared_location("s3://bucket/out") == "s3://bucket/out"  # not read where not used


def test_every_setting_is_described() -> None:
    from tasks.settings import ProcessSettings

    assert all(field.description for field in ProcessSettings.model_fields.values())
