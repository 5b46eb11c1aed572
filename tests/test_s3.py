"""The S3 backend under moto's in-process mock: reads, atomic writes, listing, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse

from storage import S3Storage, StorageError, StoredObject, open_location, open_storage
from storage.s3client import new_client, s3_client
from tests.s3faults import dropped, injected, mocked_s3, s3_error

BUCKET = "t2v-unit"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A mocked S3 with one bucket; the backend's client is made afresh for each test."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # one retry: keeps backoff sleeps short
    with mocked_s3(BUCKET) as client:
        yield client


def test_write_read_and_exists(s3: Any) -> None:
    store = S3Storage(BUCKET, "runs/night/")
    assert store.uri() == f"s3://{BUCKET}/runs/night"
    assert store.uri("a.mp4") == f"s3://{BUCKET}/runs/night/a.mp4"
    assert not store.exists("a.mp4")
    store.write_bytes("b.csv", b"bee")
    store.write_bytes("sub/a.mp4", b"a")
    s3.put_object(Bucket=BUCKET, Key="runs/nightly.csv", Body=b"not under the prefix")
    assert store.read_bytes("b.csv") == b"bee"
    assert store.exists("sub/a.mp4")
    assert not store.exists("nightly.csv")  # beside the prefix, not under it
    # Served from the bucket, the gallery renders and its videos play.
    head = s3.head_object(Bucket=BUCKET, Key="runs/night/sub/a.mp4")
    assert head["ContentType"] == "video/mp4"
    assert s3.head_object(Bucket=BUCKET, Key="runs/night/b.csv")["ContentType"].startswith(
        "text/csv"
    )


def test_transient_faults_are_retried_by_the_client(s3: Any) -> None:
    def slow_down_once(request: AWSPreparedRequest, path: str, attempt: int) -> AWSResponse | None:
        return (
            s3_error(request, 503, "SlowDown", "Please reduce your request rate.")
            if (attempt == 1)
            else None
        )

    with injected("PutObject", slow_down_once) as attempts:
        S3Storage(BUCKET).write_bytes("a.csv", b"x")
    assert list(attempts.values()) == [2]
    assert S3Storage(BUCKET).read_bytes("a.csv") == b"x"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (lambda request: s3_error(request, 503, "SlowDown", "Reduce your request rate."),
         "SlowDown (Reduce your request rate.)"),
        (lambda request: s3_error(request, 500, "InternalError", "Oops."), "InternalError (Oops.)"),
    ],
)  # fmt: skip
def test_transient_faults_that_persist_are_retryable_errors(
    s3: Any, fault: Any, message: str
) -> None:
    fail_always = injected("PutObject", lambda request, *_: fault(request))
    with fail_always as attempts, pytest.raises(StorageError) as error:
        S3Storage(BUCKET, "p").write_bytes("a.csv", b"x")
    assert str(error.value) == f"cannot write s3://{BUCKET}/p/a.csv: {message}"
    assert error.value.retryable
    assert list(attempts.values()) == [2]  # AWS_MAX_ATTEMPTS


def test_a_dropped_connection_is_retryable(s3: Any) -> None:
    def drop(request: AWSPreparedRequest, path: str, attempt: int) -> AWSResponse | None:
        raise dropped(request)

    with injected("GetObject", drop), pytest.raises(StorageError) as error:
        S3Storage(BUCKET).read_bytes("m.csv")
    assert str(error.value).startswith(f"cannot read s3://{BUCKET}/m.csv: Connection was closed")
    assert error.value.retryable


def test_access_denied_is_not_retried(s3: Any) -> None:
    def deny(request: AWSPreparedRequest, path: str, attempt: int) -> AWSResponse:
        return s3_error(request, 403, "AccessDenied", "Access Denied")

    with injected("PutObject", deny) as attempts, pytest.raises(StorageError) as error:
        S3Storage(BUCKET).write_bytes("a.csv", b"x")
    assert str(error.value) == f"cannot write s3://{BUCKET}/a.csv: AccessDenied (Access Denied)"
    assert not error.value.retryable
    assert sum(attempts.values()) == 1


def test_a_missing_object_names_its_uri_and_code(s3: Any) -> None:
    with pytest.raises(StorageError) as error:
        S3Storage(BUCKET, "prompts").read_bytes("today.csv")
    assert str(error.value) == (
        f"cannot read s3://{BUCKET}/prompts/today.csv: "
        "NoSuchKey (The specified key does not exist.)"
    )
    assert not error.value.retryable


@pytest.mark.parametrize("use", ["exists", "read_bytes", "write_bytes"])
def test_a_missing_bucket_is_named_as_such(s3: Any, use: str) -> None:
    store = S3Storage("no-such-bucket", "out")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist") as error:
        if use == "write_bytes":
            store.write_bytes("a.mp4", b"x")
        else:
            getattr(store, use)("a.mp4")
    assert not error.value.retryable
    assert error.value.args[0].startswith("cannot ")


def test_exists_checks_the_bucket_once(s3: Any) -> None:
    store = S3Storage(BUCKET, "out")
    with injected("HeadBucket", lambda *_: None) as head_bucket:
        assert not store.exists("a.mp4")
        assert not store.exists("b.mp4")
    assert sum(head_bucket.values()) == 1


def test_presigned_urls_expire_within_seven_days(s3: Any) -> None:
    store = S3Storage(BUCKET, "out")
    url = store.presigned_url("a b.mp4", 3600)
    assert url.startswith(f"https://{BUCKET}.s3.amazonaws.com/out/a%20b.mp4?")
    assert "X-Amz-Expires=3600" in url and "X-Amz-Signature=" in url
    with pytest.raises(StorageError, match=r"expire in 1…604800 seconds \(7 days\), got 604801"):
        store.presigned_url("a.mp4", 7 * 24 * 3600 + 1)


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b"])
def test_keys_must_be_plain(key: str) -> None:
    with pytest.raises(StorageError, match="not a plain relative key"):
        S3Storage(BUCKET).write_bytes(key, b"x")


def test_open_storage_and_open_location_take_s3_uris() -> None:
    store = open_storage("s3://bucket/renders/")
    assert isinstance(store, S3Storage) and store.uri("a.mp4") == "s3://bucket/renders/a.mp4"
    parent, key = open_location("s3://bucket/prompts/today.csv")
    assert (parent.uri(key), key) == ("s3://bucket/prompts/today.csv", "today.csv")
    parent, key = open_location("s3://bucket/top.csv")
    assert (parent.uri(), key) == ("s3://bucket", "top.csv")
    for uri in ("s3://", "s3:///key.csv", "s3://bucket", "s3://bucket/prefix/"):
        with pytest.raises(StorageError):
            open_location(uri)


def _versions(s3: Any, key: str) -> list[dict[str, Any]]:
    return [
        v for v in s3.list_object_versions(Bucket=BUCKET).get("Versions", []) if v["Key"] == key
    ]


def test_an_exclusive_write_creates_once_and_keeps_the_first(s3: Any, tmp_path: Path) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    first.write_bytes(b"\x01" * 1000)
    second.write_bytes(b"\x02" * 2000)
    store = S3Storage(BUCKET, "out")
    assert store.write_file("a.mp4", first, exclusive=True)
    with injected("PutObject", lambda *_: None) as puts:
        assert not store.write_file("a.mp4", second, exclusive=True)
    assert sum(puts.values()) == 1  # one PUT, refused with 412
    assert store.read_bytes("a.mp4") == first.read_bytes()
    assert len(_versions(s3, "out/a.mp4")) == 1
    # Without `exclusive` (`--force`) the video is replaced.
    assert store.write_file("a.mp4", second)
    assert store.read_bytes("a.mp4") == second.read_bytes()


def test_a_conditional_write_conflict_is_lost_when_the_key_exists(
    s3_bucket: str, tmp_path: Path
) -> None:
    # AWS answers 409 when another conditional write on the key is in flight. On moto's
    # server (not under mock_aws, whose own hook would store the PUT anyway) the fake
    # answer replaces the request.
    source = tmp_path / "a.mp4"
    source.write_bytes(b"mine")
    store = S3Storage(s3_bucket)

    def conflict(request: AWSPreparedRequest, path: str, attempt: int) -> AWSResponse:
        return s3_error(request, 409, "ConditionalRequestConflict", "A conflicting operation.")

    with injected("PutObject", conflict), pytest.raises(StorageError) as error:
        store.write_file("a.mp4", source, exclusive=True)
    assert str(error.value) == (
        f"cannot write s3://{s3_bucket}/a.mp4: "
        "ConditionalRequestConflict (A conflicting operation.)"
    )
    assert not store.exists("a.mp4")
    s3_client().put_object(Bucket=s3_bucket, Key="a.mp4", Body=b"theirs")  # the other landed
    with injected("PutObject", conflict):
        assert not store.write_file("a.mp4", source, exclusive=True)
    assert store.read_bytes("a.mp4") == b"theirs"


def test_stat_reads_size_and_metadata_from_one_head(s3: Any, tmp_path: Path) -> None:
    source = tmp_path / "a.mp4"
    source.write_bytes(b"video bytes")
    store = S3Storage(BUCKET, "out")
    assert store.stat("a.mp4") is None
    meta = {"t2v-sha256": "ab" * 32, "t2v-bytes": "11"}
    assert store.write_file("a.mp4", source, exclusive=True, metadata=meta)
    with injected("HeadObject", lambda *_: None) as heads:
        assert store.stat("a.mp4") == StoredObject(11, True, meta)
    assert sum(heads.values()) == 1
    store.write_bytes("plain.mp4", b"x")
    assert store.stat("plain.mp4") == StoredObject(1, True, {})


def test_read_range_gets_only_the_bytes_asked_for(s3: Any) -> None:
    store = S3Storage(BUCKET, "out")
    store.write_bytes("a.mp4", b"0123456789")
    assert store.read_range("a.mp4", 2, 3) == b"234"
    assert store.read_range("a.mp4", 8, 100) == b"89"
    assert store.read_range("a.mp4", 10, 8) == b""


def test_names_lists_one_folder_under_a_prefix_or_at_the_bucket_root(s3: Any) -> None:
    for key in ("a.mp4", "b.csv", "runs/c.mp4", "runs/sub/d.mp4", "runsx/e.mp4"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    assert S3Storage(BUCKET).names("") == ["a.mp4", "b.csv"]
    assert S3Storage(BUCKET, "runs").names("") == ["c.mp4"]
    assert S3Storage(BUCKET).names("runs") == ["c.mp4"]
    assert S3Storage(BUCKET, "runs").names("sub") == ["d.mp4"]
    assert S3Storage(BUCKET, "none").names("") == []


def test_write_many_puts_each_object(s3: Any) -> None:
    store = S3Storage(BUCKET, "out")
    store.write_many({"results.csv": b"c", "index.html": b"h"})
    assert (store.read_bytes("results.csv"), store.read_bytes("index.html")) == (b"c", b"h")


def test_check_writable_names_a_missing_bucket(s3: Any) -> None:
    S3Storage(BUCKET, "out").check_writable(10**12)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        S3Storage("no-such-bucket", "out").check_writable(0)


@pytest.mark.parametrize(
    "uri", ["s3://bkt/out/../x", "s3://bkt/./x", "s3://bkt//x", "s3://bkt/a//b", "s3://bkt/.."]
)
def test_prefixes_with_dot_or_empty_parts_are_refused(uri: str) -> None:
    with pytest.raises(StorageError, match=r"has an empty, '\.' or '\.\.' part after the bucket"):
        open_storage(uri)


@pytest.mark.parametrize("uri", ["s3://Bkt/x", "s3://b/x", "s3://bkt_1/x"])
def test_bucket_names_follow_s3_rules(uri: str) -> None:
    with pytest.raises(StorageError, match="which is not an S3 bucket name"):
        open_storage(uri)


def test_a_storage_given_a_client_sends_every_request_through_it(s3: Any) -> None:
    # As httpx takes a transport: the caller's client, its hooks and settings, not the default.
    client = new_client()
    store = S3Storage(BUCKET, "out", client)
    with injected("PutObject", lambda *_: None, client) as puts:
        store.write_bytes("a.csv", b"x")
    with injected("PutObject", lambda *_: None) as default_puts:
        store.write_bytes("b.csv", b"y")
    assert sum(puts.values()) == 1 and sum(default_puts.values()) == 0
    assert S3Storage(BUCKET, "out").read_bytes("b.csv") == b"y"
