"""The S3 backend: objects under a bucket prefix, through a boto3 client (the process's
default from `storage.s3client`, or one the caller passes in)."""

from __future__ import annotations

import contextlib
import mimetypes
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from storage.base import StoredObject
from storage.errors import StorageError
from storage.s3client import Credentials, reset_client, s3_client, use_credentials
from storage.s3errors import CONDITION_FAILED, NOT_FOUND, error_code, translated

__all__ = [
    "Credentials",
    "S3Storage",
    "reset_client",
    "s3_client",
    "split_s3_uri",
    "use_credentials",
]

MAX_PRESIGN_EXPIRY = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
# S3's rules for bucket names (general purpose buckets).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


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
    """Objects under `s3://bucket/prefix`, through `client` (a boto3 S3 client) when given,
    else the process's default client at each request."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._bucket_seen = False

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else s3_client()

    def uri(self, key: str = "") -> str:
        return (
            f"s3://{self.bucket}/{self._key(key)}" if key or self.prefix else f"s3://{self.bucket}"
        )

    def read_bytes(self, key: str) -> bytes:
        with self._translated("read", key):
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))[
                "Body"
            ].read()
        return data

    @contextlib.contextmanager
    def open_read(self, key: str, max_bytes: int | None = None) -> Iterator[BinaryIO]:
        """One GET whose body is read as it arrives; refused from its length alone, before
        any of it is read, when larger than `max_bytes`."""
        with self._translated("read", key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        body = response["Body"]
        try:
            size = response["ContentLength"]
            if max_bytes is not None and size > max_bytes:
                raise StorageError(
                    f"cannot read {self.uri(key)}: it holds {size:,} bytes, "
                    f"more than the {max_bytes:,} allowed"
                )
            with self._translated("read", key):  # a connection dropped or timed out mid-body
                yield body
        finally:
            body.close()

    def write_bytes(self, key: str, data: bytes) -> None:
        # One PUT: S3 shows the old object or the whole new one.
        with self._translated("write", key):
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=_content_type(key)
            )

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
        with self._translated("write", key):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=source.read_bytes(),
                    ContentType=_content_type(key),
                    **options,
                )
            except ClientError as exc:
                if exclusive and error_code(exc) == "PreconditionFailed":
                    return False
                # Another conditional write on the key was in flight: whichever landed decides.
                conflict = error_code(exc) == "ConditionalRequestConflict"
                if exclusive and conflict and self.exists(key):
                    return False
                raise
        return True

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """One GET; the version is the object's ETag."""
        from botocore.exceptions import ClientError

        with self._translated("read", key):
            try:
                got = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND:
                    return None
                raise
            data: bytes = got["Body"].read()
        return data, str(got["ETag"])

    def write_if(self, key: str, data: bytes, expected: str | None) -> str | None:
        """One PUT with `If-None-Match: *` (create) or `If-Match: <ETag>` (replace)."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        with self._translated("write", key):
            try:
                put = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    ContentType=_content_type(key),
                    **condition,
                )
            except ClientError as exc:
                if error_code(exc) in CONDITION_FAILED:
                    return None
                raise
        return str(put["ETag"])

    def delete_if(self, key: str, expected: str) -> bool:
        """A DELETE with `If-Match: <ETag>`, which S3 takes on general purpose buckets; a
        store that ignores the header would delete unconditionally."""
        from botocore.exceptions import ClientError

        with self._translated("delete", key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=expected)
            except ClientError as exc:
                if error_code(exc) in CONDITION_FAILED:
                    return False
                raise
        return True

    def write_many(self, files: Mapping[str, bytes]) -> None:
        # S3 has no transaction: each object is one atomic PUT, in the order given.
        for key, data in files.items():
            self.write_bytes(key, data)

    def names(self, folder: str) -> list[str]:
        """One LIST per 1,000 names, without what lies deeper."""
        folder_key = self._key(folder)
        prefix = f"{folder_key}/" if folder_key else ""  # the bucket's root: no leading "/"
        with self._translated("list", folder):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return sorted(key.removeprefix(prefix) for key in keys)

    def stat(self, key: str) -> StoredObject | None:
        """A HEAD on the key (as `exists`); every S3 object is a plain one."""
        head = self._head(key)
        if head is None:
            return None
        return StoredObject(head["ContentLength"], True, dict(head.get("Metadata", {})))

    def read_range(self, key: str, start: int, length: int) -> bytes:
        from botocore.exceptions import ClientError

        with self._translated("read", key):
            try:
                got = self.client.get_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Range=f"bytes={start}-{start + length - 1}",
                )
            except ClientError as exc:
                if error_code(exc) == "InvalidRange":  # `start` at or past the end
                    return b""
                raise
            data: bytes = got["Body"].read()
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

        with self._translated("check", key):
            try:
                head: dict[str, Any] = self.client.head_object(
                    Bucket=self.bucket, Key=self._key(key)
                )
            except ClientError as exc:
                if error_code(exc) not in NOT_FOUND:
                    raise
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
        with self._translated("presign", key):
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=expires_in,
            )
        return url

    def _key(self, key: str) -> str:
        """The object key of `key`; refuses keys that a folder could not hold either."""
        if key and any(part in ("", ".", "..") for part in key.split("/")):
            raise StorageError(f"key {key!r} is not a plain relative key under {self.uri()}")
        return f"{self.prefix}/{key}" if self.prefix and key else self.prefix or key

    def _check_bucket(self) -> None:
        with self._translated("open", ""):
            self.client.head_bucket(Bucket=self.bucket)
        self._bucket_seen = True

    def _translated(self, action: str, key: str) -> contextlib.AbstractContextManager[None]:
        return translated(action, self.uri(key), self.bucket)


def _content_type(key: str) -> str:
    """So a browser plays the videos and shows the gallery served straight from the bucket."""
    kind, _ = mimetypes.guess_type(key)
    if kind is None:
        return "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") else kind
