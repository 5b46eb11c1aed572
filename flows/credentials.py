"""AWS credentials from a Prefect Secret block, for runs whose worker has none of its own."""

from __future__ import annotations

import json
from typing import Any

from flows.errors import CredentialsError
from storage.s3 import Credentials, use_credentials
from tasks.errors import first_line

KEYS = ("aws_access_key_id", "aws_secret_access_key")


def use_aws_credentials_block(name: str | None) -> None:
    """Sign this run's S3 requests with the keys in Prefect Secret block `name`;
    without a name, with the standard AWS chain."""
    use_credentials(None if name is None else load_credentials(name))


def load_credentials(name: str) -> Credentials:
    from prefect.blocks.system import Secret

    try:
        value: Any = Secret.load(name).get()  # type: ignore[union-attr]
    except ValueError as exc:
        raise CredentialsError(f"cannot load the Secret block {name!r}: {first_line(exc)}") from exc
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None  # the error below, without echoing the secret
    if not isinstance(value, dict) or not all(isinstance(value.get(key), str) for key in KEYS):
        raise CredentialsError(
            f"the Secret block {name!r} must hold a JSON object with the strings "
            f"{' and '.join(KEYS)} (and optionally aws_session_token)"
        )
    token = value.get("aws_session_token")
    return Credentials(
        value["aws_access_key_id"],
        value["aws_secret_access_key"],
        token if isinstance(token, str) else None,
    )
