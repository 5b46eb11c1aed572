"""What S3's errors mean: which are transient, which say a key or a condition is missing,
and one sentence naming the location for any failed request."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from storage.errors import StorageError

# What botocore's standard retry mode also treats as transient or throttled.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRYABLE_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "SlowDown", "Throttling", "ThrottlingException"}
)
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
# A conditional write or delete whose condition failed: 412 when the key holds another
# version (or, for If-None-Match, any object), 404 when If-Match finds no object, 409 when
# another conditional request on the key was in flight (S3 lets one of them land).
CONDITION_FAILED = NOT_FOUND | {"PreconditionFailed", "ConditionalRequestConflict"}


@contextlib.contextmanager
def translated(action: str, where: str, bucket: str) -> Iterator[None]:
    """Any failure of the requests inside as one sentence naming the location and S3's
    error code; retryable when waiting helps."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    try:
        yield
    except _failures() as exc:
        if not isinstance(exc, ClientError):
            transient = isinstance(exc, ConnectionError | HTTPClientError)
            raise StorageError(f"cannot {action} {where}: {exc}", retryable=transient) from exc
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error_code(exc)
        if code == "NoSuchBucket" or (action == "open" and code in NOT_FOUND):
            reason = f"bucket {bucket!r} does not exist (NoSuchBucket)"
        else:
            message = exc.response.get("Error", {}).get("Message") or f"HTTP {status}"
            reason = f"{code} ({message})"
        retryable = status in RETRYABLE_STATUS or code in RETRYABLE_CODES
        raise StorageError(f"cannot {action} {where}: {reason}", retryable=retryable) from exc


def _failures() -> tuple[type[Exception], ...]:
    """What a failed request raises: botocore's errors, or OSError reading the local file."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, OSError)


def error_code(exc: Any) -> str:
    """S3's error code in a botocore ClientError."""
    return str(exc.response.get("Error", {}).get("Code", ""))
