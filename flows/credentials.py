"""AWS credentials from a Prefect block, for runs whose worker has none of its own: an
AwsCredentials block (prefect-aws's type, which every Prefect server registers) or a Secret
block holding JSON keys.

A name is `aws-credentials/NAME`, `secret/NAME`, or a bare NAME: the AwsCredentials block of
that name if there is one, else the Secret block (which is all a bare name meant before).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from flows.errors import CredentialsError
from storage.s3 import Credentials, use_credentials
from tasks.errors import first_line

logger = logging.getLogger("t2v")

KEYS = ("aws_access_key_id", "aws_secret_access_key")
AWS_CREDENTIALS = "aws-credentials"
SECRET = "secret"


def use_s3_access(block: str | None, endpoint: str | None = None) -> None:
    """Sign this run's S3 requests with the keys in `block` (without one, the standard AWS
    chain) and send them to `endpoint` (without one, AWS_ENDPOINT_URL, else AWS)."""
    use_credentials(None if block is None else load_credentials(block), endpoint)


def use_block_here(block: str | None, endpoint: str | None = None) -> None:
    """`use_s3_access` for this command's own reads and checks, before any run: a block can
    only come from the configured Prefect server."""
    if block is not None and not os.environ.get("PREFECT_API_URL"):
        raise CredentialsError(
            f"--aws-credentials-block {block} needs PREFECT_API_URL: blocks are kept by a "
            "Prefect server"
        )
    use_s3_access(block, endpoint)


def load_credentials(reference: str) -> Credentials:
    """The keys in the block `reference` names (the module's docstring says how)."""
    kind, slash, name = reference.partition("/")
    if not slash:
        data = _aws_credentials_data(reference)
        return _from_secret(reference, bare=True) if data is None else _from_aws(reference, data)
    if kind == AWS_CREDENTIALS:
        data = _aws_credentials_data(name)
        if data is None:
            raise CredentialsError(f"there is no AwsCredentials block {name!r}")
        return _from_aws(name, data)
    if kind == SECRET:
        return _from_secret(name, bare=False)
    raise CredentialsError(
        f"{reference!r} is not a credentials block: write aws-credentials/NAME, secret/NAME "
        "or a bare NAME (an AwsCredentials block of that name, else a Secret block)"
    )


def _aws_credentials_data(name: str) -> dict[str, Any] | None:
    """The fields of AwsCredentials block `name`, secrets included; None if there is none.
    Read as a document, so workers need no prefect-aws."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(
                name, block_type_slug=AWS_CREDENTIALS, include_secrets=True
            )
        except ObjectNotFound:
            return None
    return document.data


def _from_aws(name: str, data: dict[str, Any]) -> Credentials:
    token, region = data.get("aws_session_token"), data.get("region_name")
    client_parameters = data.get("aws_client_parameters")
    endpoint = (
        client_parameters.get("endpoint_url") if isinstance(client_parameters, dict) else None
    )
    optional = (token, region, endpoint)
    if not all(isinstance(data.get(key), str) for key in KEYS) or not all(
        value is None or isinstance(value, str) for value in optional
    ):
        raise CredentialsError(
            f"the AwsCredentials block {name!r} must hold the keys {' and '.join(KEYS)} "
            "(a profile_name alone is not enough: set AWS_PROFILE on the worker instead)"
        )
    return Credentials(
        data["aws_access_key_id"],
        data["aws_secret_access_key"],
        token or None,
        region=region or None,
        endpoint_url=endpoint or None,
    )


def _from_secret(name: str, *, bare: bool) -> Credentials:
    from prefect.blocks.system import Secret

    try:
        # As saved: Secret.get() would parse JSON text into the dict it holds.
        value: Any = Secret.load(name).value.get_secret_value()  # type: ignore[union-attr]
    except ValueError as exc:
        nor = " (nor is there an AwsCredentials block of that name)" if bare else ""
        raise CredentialsError(
            f"cannot load the Secret block {name!r}: {first_line(exc)}{nor}"
        ) from exc
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None  # the error below, without echoing the secret
    elif isinstance(value, dict):
        logger.warning(
            "the Secret block %r holds a JSON object, which Prefect's API shows in clear to "
            "anyone who can read blocks: save the keys as text, Secret(value=json.dumps(keys)), "
            "or in an AwsCredentials block",
            name,
        )
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
