"""Faults injected into the backend's real S3 client through botocore's event hooks."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ConnectionClosedError
from botocore.httpsession import URLLib3Session
from moto import mock_aws

from storage.s3 import reset_client, s3_client

# (request, URL path, how many times this path was sent so far) → a fake response,
# None to let the request through, or an exception as if the network failed.
Fault = Callable[[AWSPreparedRequest, str, int], AWSResponse | None]


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def s3_error(request: AWSPreparedRequest, status: int, code: str, message: str) -> AWSResponse:
    """The response S3 gives for an error: a status and an XML body with the code."""
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Body(body))


def dropped(request: AWSPreparedRequest) -> ConnectionClosedError:
    return ConnectionClosedError(endpoint_url=request.url)


def landed_then_dropped(request: AWSPreparedRequest) -> ConnectionClosedError:
    """Send `request` to the server for real, then lose its answer: the error to raise, as
    a connection that dropped after the request landed (against moto's server)."""
    URLLib3Session().send(request)
    request.reset_stream()  # the client's retry sends the body again
    return dropped(request)


@contextmanager
def mocked_s3(*buckets: str) -> Iterator[Any]:
    """moto's in-process S3 holding `buckets`, and the process's default client made inside
    it (moto answers only clients made while it runs); yields that client."""
    with mock_aws():
        reset_client()
        try:
            for bucket in buckets:
                s3_client().create_bucket(Bucket=bucket)
            yield s3_client()
        finally:
            reset_client()


@contextmanager
def injected(operation: str, fault: Fault, client: Any = None) -> Iterator[Counter[str]]:
    """Send every `operation` request of `client` (the process's default client when None)
    through `fault` first; yields attempts per URL path (`/bucket/key` against an endpoint
    on an IP address, `/key` on AWS's virtual hosts)."""
    attempts: Counter[str] = Counter()
    lock = threading.Lock()

    def before_send(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        path = unquote(urlsplit(request.url).path)
        with lock:
            attempts[path] += 1
            attempt = attempts[path]
        return fault(request, path, attempt)

    # First in line: under mock_aws, moto answers from a before-send hook of its own. botocore
    # still calls that hook after a fake response here (and keeps the first response), so
    # under mock_aws the faked request lands in moto all the same; against moto's server
    # it is never sent. A raised exception stops it in both.
    event, unique_id = f"before-send.s3.{operation}", uuid.uuid4().hex
    events = (client or s3_client()).meta.events
    events.register_first(event, before_send, unique_id=unique_id)
    try:
        yield attempts
    finally:
        events.unregister(event, unique_id=unique_id)
