"""The S3 backend: objects under a bucket prefix, through boto3 and the standard AWS chain.

Over 250 lines because one class implements the whole `Storage` protocol and translates
every S3 failure into a one-line, retryable-or-not `StorageError`: one concern.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from storage.base import StoredObject
from storage.errors import StorageError

MAX_PRESIGN_EXPIRY = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
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
# S3's rules for bucket names (general purpose buckets).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class Credentials:
    """AWS keys handed over by the caller (a Prefect block); never shown by repr. The region
    and endpoint, when given, replace the standard chain's and `AWS_ENDPOINT_URL`."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None


_clients: dict[tuple[str | None, Credentials | None], Any] = {}
_clients_lock = threading.Lock()
_credentials: Credentials | None = None


def use_credentials(credentials: Credentials | None) -> None:
    """Sign this process's later S3 requests with `credentials`; None: the standard AWS chain."""
    global _credentials
    _credentials = credentials


def s3_client() -> Any:
    """The process's S3 client for the credentials' endpoint, else `AWS_ENDPOINT_URL`, else AWS.

    One client per endpoint and credentials, shared by every thread (boto3 clients are
    thread-safe). Credentials come from `use_credentials`, else the standard AWS chain
    (environment, shared files, instance role), never from manifests or parameters.
    """
    keys = _credentials
    endpoint = (keys and keys.endpoint_url) or os.environ.get("AWS_ENDPOINT_URL") or None
    key = (endpoint, keys)
    with _clients_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            # Standard retries: 5xx, throttling and dropped connections, with backoff, 3 tries
            # unless AWS_MAX_ATTEMPTS or the AWS config file says otherwise.
            config = Config(retries={"mode": "standard"}, signature_version="s3v4")
            # A session per client: boto3's default session is not thread-safe.
            session = (
                boto3.session.Session()
                if keys is None
                else boto3.session.Session(
                    aws_access_key_id=keys.access_key_id,
                    aws_secret_access_key=keys.secret_access_key,
                    aws_session_token=keys.session_token,
                    region_name=keys.region,
                )
            )
            _clients[key] = session.client("s3", endpoint_url=endpoint, config=config)
        return _clients[key]


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` → (`bucket`, `some/key`); refuses a key or prefix with empty,
    `.` or `..` segments, which a folder could not hold either."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket: write s3://bucket/key")
    if not BUCKET_NAME.fullmatch(bucket):
        raise StorageError(
            f"{uri!r} names {bucket!r}, which is not an S3 bucket name "
            "(3–63 lower-case letters, digits, dots and hyphens)"
        )
    key = key.removesuffix("/")
    if key and any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(
            f"{uri!r} has an empty, '.' or '..' part after the bucket: "
            "write s3://bucket/prefix with plain names"
        )
    return bucket, key


class S3Storage:
    """Objects under `s3://bucket/prefix`; the client is made on first use."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._bucket_seen = False

    def uri(self, key: str = "") -> str:
        return (
            f"s3://{self.bucket}/{self._key(key)}" if key or self.prefix else f"s3://{self.bucket}"
        )

    def read_bytes(self, key: str) -> bytes:
        name = self._key(key)
        try:
            body = s3_client().get_object(Bucket=self.bucket, Key=name)["Body"]
            data: bytes = body.read()
        except _failures() as exc:
            raise self._error("read", key, exc) from exc
        return data

    @contextlib.contextmanager
    def open_read(self, key: str, max_bytes: int | None = None) -> Iterator[BinaryIO]:
        """One GET whose body is read as it arrives; refused from its length alone, before
        any of it is read, when larger than `max_bytes`."""
        name = self._key(key)
        try:
            response = s3_client().get_object(Bucket=self.bucket, Key=name)
        except _failures() as exc:
            raise self._error("read", key, exc) from exc
        body = response["Body"]
        try:
            size = response["ContentLength"]
            if max_bytes is not None and size > max_bytes:
                raise StorageError(
                    f"cannot read {self.uri(key)}: it holds {size:,} bytes, "
                    f"more than the {max_bytes:,} allowed"
                )
            yield body
        except _failures() as exc:  # a connection dropped or timed out mid-body
            raise self._error("read", key, exc) from exc
        finally:
            body.close()

    def write_bytes(self, key: str, data: bytes) -> None:
        # One PUT: S3 shows the old object or the whole new one.
        name = self._key(key)
        try:
            s3_client().put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType=_content_type(key)
            )
        except _failures() as exc:
            raise self._error("write", key, exc) from exc

    def write_file(
        self,
        key: str,
        source: Path,
        *,
        exclusive: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        """One PUT (a video is a few MB; one PUT takes up to 5 GiB), with `metadata` as
        `x-amz-meta-*` headers; `exclusive` sends `If-None-Match: *`, which S3 refuses
        (412) when the key holds an object."""
        from botocore.exceptions import ClientError

        options: dict[str, Any] = {"IfNoneMatch": "*"} if exclusive else {}
        if metadata is not None:
            options["Metadata"] = dict(metadata)
        try:
            s3_client().put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=source.read_bytes(),
                ContentType=_content_type(key),
                **options,
            )
        except ClientError as exc:
            if exclusive and _code(exc) == "PreconditionFailed":
                return False
            # Another conditional write on the key was in flight: whichever landed decides.
            if exclusive and _code(exc) == "ConditionalRequestConflict" and self.exists(key):
                return False
            raise self._error("write", key, exc) from exc
        except _failures() as exc:
            raise self._error("write", key, exc) from exc
        return True

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """One GET; the version is the object's ETag."""
        from botocore.exceptions import ClientError

        try:
            got = s3_client().get_object(Bucket=self.bucket, Key=self._key(key))
            data: bytes = got["Body"].read()
        except ClientError as exc:
            if _code(exc) in NOT_FOUND:
                return None
            raise self._error("read", key, exc) from exc
        except _failures() as exc:
            raise self._error("read", key, exc) from exc
        return data, str(got["ETag"])

    def write_if(self, key: str, data: bytes, expected: str | None) -> str | None:
        """One PUT with `If-None-Match: *` (create) or `If-Match: <ETag>` (replace)."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            put = s3_client().put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType=_content_type(key),
                **condition,
            )
        except ClientError as exc:
            if _code(exc) in CONDITION_FAILED:
                return None
            raise self._error("write", key, exc) from exc
        except _failures() as exc:
            raise self._error("write", key, exc) from exc
        return str(put["ETag"])

    def delete_if(self, key: str, expected: str) -> bool:
        """A DELETE with `If-Match: <ETag>`, which S3 takes on general purpose buckets; a
        store that ignores the header would delete unconditionally."""
        from botocore.exceptions import ClientError

        try:
            s3_client().delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=expected)
        except ClientError as exc:
            if _code(exc) in CONDITION_FAILED:
                return False
            raise self._error("delete", key, exc) from exc
        except _failures() as exc:
            raise self._error("delete", key, exc) from exc
        return True

    def write_many(self, files: Mapping[str, bytes]) -> None:
        # S3 has no transaction: each object is one atomic PUT, in the order given.
        for key, data in files.items():
            self.write_bytes(key, data)

    def stat(self, key: str) -> StoredObject | None:
        """A HEAD on the key (as `exists`); every S3 object is a plain one."""
        head = self._head(key)
        if head is None:
            return None
        return StoredObject(head["ContentLength"], True, dict(head.get("Metadata", {})))

    def read_range(self, key: str, start: int, length: int) -> bytes:
        from botocore.exceptions import ClientError

        try:
            got = s3_client().get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            data: bytes = got["Body"].read()
        except ClientError as exc:
            if _code(exc) == "InvalidRange":  # `start` at or past the end
                return b""
            raise self._error("read", key, exc) from exc
        except _failures() as exc:
            raise self._error("read", key, exc) from exc
        return data

    def check_writable(self, free_bytes: int) -> None:
        """The bucket exists and answers; a bucket has no free space to check."""
        self._check_bucket()

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def _head(self, key: str) -> dict[str, Any] | None:
        """The HEAD of `key`, or None; the first miss also checks the bucket, whose
        absence a HEAD answers with a bare 404 that looks like a missing key."""
        from botocore.exceptions import ClientError

        name = self._key(key)
        try:
            head: dict[str, Any] = s3_client().head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) not in NOT_FOUND:
                raise self._error("check", key, exc) from exc
        except _failures() as exc:
            raise self._error("check", key, exc) from exc
        else:
            return head
        if not self._bucket_seen:
            self._check_bucket()
        return None

    def presigned_url(self, key: str, expires_in: int) -> str:
        if not 1 <= expires_in <= MAX_PRESIGN_EXPIRY:
            raise StorageError(
                f"presigned URLs must expire in 1…{MAX_PRESIGN_EXPIRY} seconds (7 days), "
                f"got {expires_in}"
            )
        name = self._key(key)
        try:
            url: str = s3_client().generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": name},
                ExpiresIn=expires_in,
            )
        except _failures() as exc:
            raise self._error("presign", key, exc) from exc
        return url

    def _key(self, key: str) -> str:
        """The object key of `key`; refuses keys that a folder could not hold either."""
        if key and any(part in ("", ".", "..") for part in key.split("/")):
            raise StorageError(f"key {key!r} is not a plain relative key under {self.uri()}")
        return f"{self.prefix}/{key}" if self.prefix and key else self.prefix or key

    def _check_bucket(self) -> None:
        try:
            s3_client().head_bucket(Bucket=self.bucket)
        except _failures() as exc:
            raise self._error("open", "", exc) from exc
        self._bucket_seen = True

    def _error(self, action: str, key: str, exc: Exception) -> StorageError:
        """One sentence naming the location and S3's error code; retryable when waiting helps."""
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

        where = self.uri(key)
        if not isinstance(exc, ClientError):
            transient = isinstance(exc, ConnectionError | HTTPClientError)
            return StorageError(f"cannot {action} {where}: {exc}", retryable=transient)
        code, status = _code(exc), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        retryable = status in RETRYABLE_STATUS or code in RETRYABLE_CODES
        if code == "NoSuchBucket" or (action == "open" and code in NOT_FOUND):
            reason = f"bucket {self.bucket!r} does not exist (NoSuchBucket)"
        else:
            message = exc.response.get("Error", {}).get("Message") or f"HTTP {status}"
            reason = f"{code} ({message})"
        return StorageError(f"cannot {action} {where}: {reason}", retryable=retryable)


def _failures() -> tuple[type[Exception], ...]:
    """What a failed request raises: botocore's errors, or OSError reading the local file."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, OSError)


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _content_type(key: str) -> str:
    """So a browser plays the videos and shows the gallery served straight from the bucket."""
    kind, _ = mimetypes.guess_type(key)
    if kind is None:
        return "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") else kind
