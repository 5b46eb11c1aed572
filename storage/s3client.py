"""S3 clients: the process's default, and new ones to hand to an `S3Storage`.

Credentials come from `use_credentials`, else the standard AWS chain (environment, shared
files, instance role), never from manifests or parameters.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Credentials:
    """AWS keys handed over by the caller (a Prefect block); never shown by repr. The region
    and endpoint, when given, replace the standard chain's and `AWS_ENDPOINT_URL`."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None


_lock = threading.Lock()
_default: Any = None
_credentials: Credentials | None = None
_endpoint: str | None = None


def use_credentials(credentials: Credentials | None, endpoint: str | None = None) -> None:
    """Sign this process's later S3 requests with `credentials` (None: the standard AWS
    chain) and send them to `endpoint` (None: `AWS_ENDPOINT_URL`, else AWS; an endpoint in
    the credentials wins). The default client is made again only if they changed: every
    run sets them, and a client's connections and event hooks outlive a run."""
    global _credentials, _default, _endpoint
    with _lock:
        if (credentials, endpoint) != (_credentials, _endpoint):
            _credentials, _endpoint, _default = credentials, endpoint, None


def reset_client() -> None:
    """Forget the default client and its settings: the next is made from the standard chain
    and the environment as they are then."""
    global _credentials, _default, _endpoint
    with _lock:
        _credentials, _endpoint, _default = None, None, None


def s3_client() -> Any:
    """The process's default S3 client, shared by every thread (boto3 clients are
    thread-safe) and by every `S3Storage` not given a client of its own."""
    global _default
    with _lock:
        if _default is None:
            _default = new_client(_credentials, _endpoint)
        return _default


def new_client(credentials: Credentials | None = None, endpoint: str | None = None) -> Any:
    """A new S3 client for the credentials' endpoint, else `endpoint`, else
    `AWS_ENDPOINT_URL`, else AWS."""
    import boto3
    from botocore.config import Config

    endpoint = (
        (credentials and credentials.endpoint_url) or endpoint or os.environ.get("AWS_ENDPOINT_URL")
    )
    # Standard retries: 5xx, throttling and dropped connections, with backoff, 3 tries
    # unless AWS_MAX_ATTEMPTS or the AWS config file says otherwise.
    config = Config(retries={"mode": "standard"}, signature_version="s3v4")
    # A session per client: boto3's default session is not thread-safe.
    session = (
        boto3.session.Session()
        if credentials is None
        else boto3.session.Session(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
            region_name=credentials.region,
        )
    )
    return session.client("s3", endpoint_url=endpoint or None, config=config)
