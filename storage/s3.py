"""The S3 backend: objects under a bucket prefix, through boto3 and the standard AWS chain."""

from __future__ import annotations

import contextlib
import mimetypes
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from storage.errors import StorageError

# s3transfer's default; every part but the last must be at least 5 MiB in S3.
MULTIPART_THRESHOLD = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PRESIGN_EXPIRY = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
# What botocore's standard retry mode also treats as transient or throttled.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRYABLE_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "SlowDown", "Throttling", "ThrottlingException"}
)
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class Credentials:
    """AWS keys handed over by the caller (a Prefect Secret block); never shown by repr."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


_clients: dict[tuple[str | None, Credentials | None], Any] = {}
_clients_lock = threading.Lock()
_credentials: Credentials | None = None


def use_credentials(credentials: Credentials | None) -> None:
    """Sign this process's later S3 requests with `credentials`; None: the standard AWS chain."""
    global _credentials
    _credentials = credentials


def s3_client() -> Any:
    """The process's S3 client for the endpoint in `AWS_ENDPOINT_URL` (AWS when unset).

    One client per endpoint and credentials, shared by every thread (boto3 clients are
    thread-safe). Credentials come from `use_credentials`, else the standard AWS chain
    (environment, shared files, instance role), never from manifests or parameters.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    key = (endpoint, _credentials)
    with _clients_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            # Standard retries: 5xx, throttling and dropped connections, with backoff, 3 tries
            # unless AWS_MAX_ATTEMPTS or the AWS config file says otherwise.
            config = Config(retries={"mode": "standard"}, signature_version="s3v4")
            keys = _credentials
            # A session per client: boto3's default session is not thread-safe.
            session = (
                boto3.session.Session()
                if keys is None
                else boto3.session.Session(
                    aws_access_key_id=keys.access_key_id,
                    aws_secret_access_key=keys.secret_access_key,
                    aws_session_token=keys.session_token,
                )
            )
            _clients[key] = session.client("s3", endpoint_url=endpoint, config=config)
        return _clients[key]


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` → (`bucket`, `some/key`)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket: write s3://bucket/key")
    return bucket, key.strip("/")


class S3Storage:
    """Objects under `s3://bucket/prefix`; the client is made on first use."""

    def __init__(
        self, bucket: str, prefix: str = "", *, multipart_threshold: int = MULTIPART_THRESHOLD
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.multipart_threshold = multipart_threshold
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

    def write_file(self, key: str, source: Path, *, exclusive: bool = False) -> bool:
        """One PUT, or a multipart upload above the threshold; `exclusive` sends
        `If-None-Match: *`, which S3 refuses (412) when the key holds an object."""
        from botocore.exceptions import ClientError

        conditions = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            if source.stat().st_size <= self.multipart_threshold:
                s3_client().put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=source.read_bytes(),
                    ContentType=_content_type(key),
                    **conditions,
                )
            else:
                self._upload_in_parts(key, source, conditions)
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

    def _upload_in_parts(self, key: str, source: Path, conditions: dict[str, str]) -> None:
        """A multipart upload, visible only once it completes; aborted on any failure, so
        neither half an object nor its parts stay behind. (s3transfer would not pass
        `IfNoneMatch` to CompleteMultipartUpload.)"""
        client, name = s3_client(), self._key(key)
        where = {"Bucket": self.bucket, "Key": name}
        upload = client.create_multipart_upload(
            **where, ContentType=_content_type(key), ChecksumAlgorithm="CRC32"
        )
        where["UploadId"] = upload["UploadId"]
        part_size = max(self.multipart_threshold, MIN_PART_SIZE)
        try:
            parts = []
            with source.open("rb") as handle:
                for number, chunk in enumerate(iter(lambda: handle.read(part_size), b""), 1):
                    sent = client.upload_part(
                        **where, PartNumber=number, Body=chunk, ChecksumAlgorithm="CRC32"
                    )
                    parts.append(
                        {
                            "PartNumber": number,
                            "ETag": sent["ETag"],
                            "ChecksumCRC32": sent["ChecksumCRC32"],
                        }
                    )
            client.complete_multipart_upload(
                **where, MultipartUpload={"Parts": parts}, **conditions
            )
        except BaseException:
            with contextlib.suppress(*_failures()):
                client.abort_multipart_upload(**where)
            raise

    def exists(self, key: str) -> bool:
        """A HEAD on the key; the first miss also checks the bucket, whose absence a HEAD
        answers with a bare 404 that looks like a missing key."""
        from botocore.exceptions import ClientError

        name = self._key(key)
        try:
            s3_client().head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) not in NOT_FOUND:
                raise self._error("check", key, exc) from exc
        except _failures() as exc:
            raise self._error("check", key, exc) from exc
        else:
            return True
        if not self._bucket_seen:
            self._check_bucket()
        return False

    def list(self, prefix: str = "") -> Iterator[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = s3_client().get_paginator("list_objects_v2")
            keys = [
                item["Key"].removeprefix(root)
                for page in pages.paginate(Bucket=self.bucket, Prefix=root + prefix)
                for item in page.get("Contents", [])
            ]
        except _failures() as exc:
            raise self._error("list", prefix, exc) from exc
        yield from sorted(keys)

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
