"""Credentials from a Prefect Secret block: used for S3, and never shown anywhere."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.system import Secret

from flows.errors import CredentialsError, RowsFailedError
from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from storage.s3 import s3_client, use_credentials
from tests.conftest import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, prefect_records
from tests.factories import put_manifest, s3_results

pytestmark = [pytest.mark.usefixtures("prefect_api_url"), pytest.mark.slow]

# Keys only the block holds: the process's own chain has none (see `no_chain_keys`).
BLOCK_KEY_ID = "AKIAT2VBLOCKKEYID0002"
BLOCK_SECRET = "t2vBLOCKsecret+NeverShown/9876543210xyz"


@pytest.fixture
def no_chain_keys(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The bucket with the manifest in it (put with the session's keys); then no client,
    and no keys in the environment, so only a block's keys can sign a request."""
    import storage.s3

    put_manifest(s3_bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(storage.s3, "_clients", {})
    yield s3_bucket
    use_credentials(None)


def _block(value: Any) -> str:
    name = f"aws-{uuid.uuid4().hex[:8]}"
    Secret(value=value).save(name)
    return name


def test_a_secret_block_signs_s3_requests_and_shows_nowhere(
    no_chain_keys: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = no_chain_keys
    manifest = f"s3://{bucket}/prompts/today.csv"
    keys = {"aws_access_key_id": BLOCK_KEY_ID, "aws_secret_access_key": BLOCK_SECRET}
    request = RenderRequest(
        manifest=manifest,
        destination=f"s3://{bucket}/renders",
        aws_credentials_block=_block(json.dumps(keys)),
    )
    state = render_manifest(**request.parameters(), return_state=True)
    assert isinstance(state.result(raise_on_failure=False), RowsFailedError)  # its bad row
    use_credentials(None)  # the session's keys again, to look at what the run wrote
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    statuses = [row["status"] for row in s3_results(bucket)]
    assert statuses == ["ok", "ok", "invalid", "ok"]

    outputs = [*prefect_records(), *capsys.readouterr()]
    for version in s3_client().list_object_versions(Bucket=bucket)["Versions"]:
        body = s3_client().get_object(
            Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"]
        )["Body"]
        outputs.append(body.read().decode("utf-8", errors="replace"))
    outputs.append(repr(request))
    # The scan covers the run's parameters: the block's name is there, its value is not.
    assert any(str(request.aws_credentials_block) in text for text in outputs)
    for text in outputs:
        assert BLOCK_SECRET not in text
        assert BLOCK_KEY_ID not in text


def test_without_keys_the_run_fails_naming_the_location(no_chain_keys: str) -> None:
    request = RenderRequest(
        manifest=f"s3://{no_chain_keys}/prompts/today.csv", destination=str(Path("unused"))
    )
    error = render_manifest(**request.parameters(), return_state=True).result(
        raise_on_failure=False
    )
    assert f"cannot read s3://{no_chain_keys}/prompts/today.csv" in str(error)
    assert "credentials" in str(error).lower()


@pytest.mark.parametrize(
    "value",
    [
        f"not json {BLOCK_SECRET}",
        {"aws_access_key_id": BLOCK_KEY_ID},
        {"aws_secret_access_key": BLOCK_SECRET, "aws_access_key_id": 7},
    ],
)
def test_a_malformed_block_is_refused_without_echoing_it(no_chain_keys: str, value: Any) -> None:
    name = _block(value)
    request = RenderRequest(
        manifest=f"s3://{no_chain_keys}/prompts/today.csv",
        destination="unused",
        aws_credentials_block=name,
    )
    error = render_manifest(**request.parameters(), return_state=True).result(
        raise_on_failure=False
    )
    assert isinstance(error, CredentialsError)
    assert str(error) == (
        f"the Secret block {name!r} must hold a JSON object with the strings "
        "aws_access_key_id and aws_secret_access_key (and optionally aws_session_token)"
    )
    assert BLOCK_SECRET not in repr(error) and BLOCK_KEY_ID not in repr(error)


def test_a_missing_block_is_named(no_chain_keys: str) -> None:
    request = RenderRequest(
        manifest=f"s3://{no_chain_keys}/prompts/today.csv",
        destination="unused",
        aws_credentials_block="no-such-block",
    )
    error = render_manifest(**request.parameters(), return_state=True).result(
        raise_on_failure=False
    )
    assert isinstance(error, CredentialsError)
    assert str(error).startswith("cannot load the Secret block 'no-such-block': ")
