"""A manifest read as a capped stream: from local files and S3, never whole into memory."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks.csvstream
from storage import StorageError
from storage.s3 import s3_client
from tasks.csvstream import MAX_MANIFEST_BYTES
from tasks.errors import ManifestError
from tasks.manifest import read_manifest
from tests.factories import parse
from tests.s3faults import mocked_s3


def test_a_manifest_past_the_byte_cap_is_refused_while_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks.csvstream, "MAX_MANIFEST_BYTES", 1000)
    assert len(parse("prompt\n" + "a cat\n" * 165).rows) == 165  # 997 bytes
    with pytest.raises(ManifestError) as caught:
        parse("prompt\n" + "a cat\n" * 166)
    assert str(caught.value) == (
        "test.csv holds more than 1,000 bytes, the most a manifest may: split it into smaller runs."
    )


def test_a_local_file_past_the_byte_cap_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks.csvstream, "MAX_MANIFEST_BYTES", 1000)
    path = tmp_path / "m.csv"
    path.write_text("prompt\n" + "a cat\n" * 500)
    with pytest.raises(StorageError) as caught:
        read_manifest(str(path))
    assert (
        str(caught.value)
        == f"cannot read {path}: it holds 3,007 bytes, more than the 1,000 allowed"
    )


def test_the_default_byte_cap_takes_a_100_mb_manifest() -> None:
    assert 100_000_000 < MAX_MANIFEST_BYTES == 256 * 2**20


@pytest.fixture
def s3_manifest(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket in moto's in-process S3; yields the location of a manifest to write there."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mocked_s3("t2v-manifest"):
        yield "s3://t2v-manifest/in/m.csv"


def test_an_s3_manifest_is_read_as_a_stream(s3_manifest: str) -> None:
    body = "id,prompt\n" + "".join(f"r{n},a cat {n}\n" for n in range(5000))
    s3_client().put_object(Bucket="t2v-manifest", Key="in/m.csv", Body=body.encode())
    assert len(read_manifest(s3_manifest).rows) == 5000
    assert read_manifest(s3_manifest, limit=2).rows[1].id == "r1"


def test_an_s3_object_past_the_byte_cap_is_refused_from_its_length(
    s3_manifest: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks.csvstream, "MAX_MANIFEST_BYTES", 1000)
    s3_client().put_object(Bucket="t2v-manifest", Key="in/m.csv", Body=b"prompt\n" + b"a\n" * 1000)
    with pytest.raises(StorageError) as caught:
        read_manifest(s3_manifest)
    assert str(caught.value) == (
        f"cannot read {s3_manifest}: it holds 2,007 bytes, more than the 1,000 allowed"
    )


def _refused_by_check(path: str) -> subprocess.CompletedProcess[str]:
    """`t2v check PATH` in a process that may use at most 1 GiB, so that reading a device
    whole fails fast instead of filling the machine's memory."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "check", path],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_path_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "m.csv", "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # no writer: reading it would wait forever
    done = _refused_by_check(str(path))
    what = {"device": "a device, pipe or socket", "fifo": "a device, pipe or socket"}
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"t2v: error: cannot read {path}: it is {what.get(kind, 'a folder')}, not a regular file\n"
    )
