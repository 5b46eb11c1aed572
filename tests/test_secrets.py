"""Credentials from a Prefect AwsCredentials or Secret block: used for S3, never shown anywhere."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.system import Secret

from flows.credentials import load_credentials
from flows.errors import CredentialsError, RowsFailedError
from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from storage.s3 import Credentials, reset_client, s3_client
from tests.conftest import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, prefect_records
from tests.factories import put_manifest, s3_results, s3_versions

pytestmark = [pytest.mark.usefixtures("prefect_api_url"), pytest.mark.slow]

# Keys only the block holds: the process's own chain has none (see `no_chain_keys`).
BLOCK_KEY_ID = "AKIAT2VBLOCKKEYID0002"
BLOCK_SECRET = "t2vBLOCKsecret+NeverShown/9876543210xyz"
AWS_BLOCK_SECRET = "t2vAWSBLOCKsecret+NeverShown/0246813579"  # in AwsCredentials blocks only


@pytest.fixture
def no_chain_keys(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The bucket with the manifest in it (put with the session's keys); then no client,
    and no keys in the environment, so only a block's keys can sign a request."""
    put_manifest(s3_bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    reset_client()
    yield s3_bucket
    reset_client()


def _block(value: Any, name: str | None = None) -> str:
    name = name or f"aws-{uuid.uuid4().hex[:8]}"
    Secret(value=value).save(name)
    return name


def _aws_block(data: dict[str, Any], name: str | None = None) -> str:
    """An AwsCredentials block as prefect-aws would save it, through the API alone: every
    Prefect server registers the block type, without prefect-aws installed."""
    from prefect import get_client
    from prefect.client.schemas.actions import BlockDocumentCreate

    name = name or f"aws-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("aws-credentials")
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        assert schema is not None
        document = BlockDocumentCreate(
            name=name, data=data, block_type_id=block_type.id, block_schema_id=schema.id
        )
        client.create_block_document(document)
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
    reset_client()  # the session's keys again, to look at what the run wrote
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


def test_an_aws_credentials_block_signs_s3_requests_at_its_endpoint_and_hides_its_secret(
    no_chain_keys: str,
    s3_server: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = no_chain_keys
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the block knows where S3 is
    name = _aws_block(
        {
            "aws_access_key_id": BLOCK_KEY_ID,
            "aws_secret_access_key": AWS_BLOCK_SECRET,
            "region_name": "us-east-1",
            "aws_client_parameters": {"endpoint_url": s3_server},
        }
    )
    request = RenderRequest(
        manifest=f"s3://{bucket}/prompts/today.csv",
        destination=f"s3://{bucket}/renders",
        aws_credentials_block=name,
    )
    state = render_manifest(**request.parameters(), return_state=True)
    assert isinstance(state.result(raise_on_failure=False), RowsFailedError)  # its bad row
    reset_client()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    assert [row["status"] for row in s3_results(bucket)] == ["ok", "ok", "invalid", "ok"]
    videos = [key for key in s3_versions(bucket, "renders/") if key.endswith(".mp4")]
    assert len(videos) == 3

    # The key id is a plain field of AwsCredentials (prefect-aws's choice): the API shows it
    # with the block, as it shows a block's name. The secret key is shown nowhere.
    outputs = [*prefect_records(), *capsys.readouterr()]
    assert any(name in text for text in outputs)
    for text in outputs:
        assert AWS_BLOCK_SECRET not in text


def test_a_name_picks_the_block_type(prefect_api_url: str) -> None:
    aws_keys = Credentials("AKIAT2VAWSBLOCK00003", AWS_BLOCK_SECRET, region="eu-west-1")
    secret_keys = Credentials(BLOCK_KEY_ID, BLOCK_SECRET, "a-session-token")
    both = f"both-{uuid.uuid4().hex[:8]}"
    _aws_block(
        {
            "aws_access_key_id": aws_keys.access_key_id,
            "aws_secret_access_key": aws_keys.secret_access_key,
            "region_name": aws_keys.region,
        },
        name=both,
    )
    secret_value = {
        "aws_access_key_id": secret_keys.access_key_id,
        "aws_secret_access_key": secret_keys.secret_access_key,
        "aws_session_token": secret_keys.session_token,
    }
    # As JSON text: Prefect 3.9.1's API shows a Secret's dict value in clear.
    _block(json.dumps(secret_value), name=both)
    only_secret = _block(json.dumps(secret_value))

    assert load_credentials(both) == aws_keys  # a bare name: AwsCredentials first
    assert load_credentials(f"aws-credentials/{both}") == aws_keys
    assert load_credentials(f"secret/{both}") == secret_keys
    assert load_credentials(only_secret) == secret_keys  # as before AwsCredentials blocks

    with pytest.raises(CredentialsError, match=r"^there is no AwsCredentials block 'nope'$"):
        load_credentials("aws-credentials/nope")
    with pytest.raises(CredentialsError, match=r"^cannot load the Secret block 'nope': "):
        load_credentials("secret/nope")
    with pytest.raises(CredentialsError, match=r"^'s3-bucket/x' is not a credentials block: "):
        load_credentials("s3-bucket/x")


def test_an_aws_credentials_block_without_keys_is_refused_without_echoing_it(
    no_chain_keys: str,
) -> None:
    name = _aws_block({"aws_secret_access_key": AWS_BLOCK_SECRET, "profile_name": "nightly"})
    request = RenderRequest(
        manifest=f"s3://{no_chain_keys}/prompts/today.csv",
        destination="unused",
        aws_credentials_block=f"aws-credentials/{name}",
    )
    error = render_manifest(**request.parameters(), return_state=True).result(
        raise_on_failure=False
    )
    assert isinstance(error, CredentialsError)
    assert str(error) == (
        f"the AwsCredentials block {name!r} must hold the keys aws_access_key_id and "
        "aws_secret_access_key (a profile_name alone is not enough: set AWS_PROFILE on the "
        "worker instead)"
    )
    assert AWS_BLOCK_SECRET not in repr(error)


def test_a_secret_saved_as_a_dict_works_but_is_called_out(
    prefect_api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Prefect's API shows a Secret's dict value in clear to anyone who reads blocks; JSON
    # text it hides. The README's first set-up saved a dict: it still works, with a warning.
    keys = {"aws_access_key_id": BLOCK_KEY_ID, "aws_secret_access_key": BLOCK_SECRET}
    name = _block(keys)
    with caplog.at_level("WARNING", logger="t2v"):
        assert load_credentials(name) == Credentials(BLOCK_KEY_ID, BLOCK_SECRET, None)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "t2v"]
    assert name in warning and "in clear" in warning and "json.dumps" in warning
    assert BLOCK_SECRET not in warning
    with caplog.at_level("WARNING", logger="t2v"):
        caplog.clear()
        load_credentials(_block(json.dumps(keys)))
    assert not [r for r in caplog.records if r.name == "t2v"]
