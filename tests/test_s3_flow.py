"""The `render_manifest` flow in this process against moto's S3 server: S3 in, S3 out, faults."""

from __future__ import annotations

import itertools
import re
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.httpsession import URLLib3Session

from flows.errors import RowsFailedError
from flows.parameters import RenderRequest
from flows.prefect_tasks import IO_RETRY_DELAYS
from flows.render_flow import render_manifest
from storage.s3 import s3_client
from tasks.publish import ALREADY_STORED
from tests.conftest import FAKE_SECRET_ACCESS_KEY
from tests.factories import (
    MIXED_MANIFEST,
    RESULT_FILES,
    S3_RESULT_FILES,
    gallery_videos,
    put_manifest,
    s3_results,
    s3_versions,
)
from tests.s3faults import Fault, dropped, injected, s3_error

pytestmark = pytest.mark.usefixtures("prefect_api_url")


def _render(request: RenderRequest) -> Any:
    """The flow's outcome: its summary, or the RowsFailedError it ended with."""
    return render_manifest(**request.parameters(), return_state=True).result(raise_on_failure=False)


def _s3_to_s3(bucket: str) -> RenderRequest:
    return RenderRequest(manifest=put_manifest(bucket), destination=f"s3://{bucket}/renders")


def _render_s3_to_s3_through(bucket: str, fault: Fault) -> tuple[Any, Counter[str]]:
    """Render with `fault` in front of every PutObject; the outcome and attempts per path."""
    with injected("PutObject", fault) as attempts:
        return _render(_s3_to_s3(bucket)), attempts


def test_s3_manifest_renders_to_s3_and_a_rerun_puts_no_video(s3_bucket: str) -> None:
    request = _s3_to_s3(s3_bucket)
    first = _render(request)
    assert isinstance(first, RowsFailedError)  # the invalid row
    assert first.summary.counts == {"ok": 3, "skipped": 0, "failed": 0, "invalid": 1}
    assert first.summary.results == f"s3://{s3_bucket}/renders/results.csv"
    rows = s3_results(s3_bucket)
    videos = {row["output"].rsplit("/", 1)[-1] for row in rows if row["status"] == "ok"}
    assert all(row["output"].startswith(f"s3://{s3_bucket}/renders/clip-") for row in rows[:2])
    assert set(s3_versions(s3_bucket, "renders/")) == videos | S3_RESULT_FILES
    page = s3_client().get_object(Bucket=s3_bucket, Key="renders/index.html")
    assert page["ContentType"] == "text/html; charset=utf-8"
    assert {video["src"] for video in gallery_videos(page["Body"].read().decode())} == videos

    second = _render(request)

    assert second.summary.counts == {"ok": 0, "skipped": 3, "failed": 0, "invalid": 1}
    statuses = [row["status"] for row in s3_results(s3_bucket)]
    assert statuses == ["skipped", "skipped", "invalid", "skipped"]
    versions = s3_versions(s3_bucket, "renders/")
    assert {key: versions[key] for key in videos} == dict.fromkeys(videos, 1)
    assert {key: versions[key] for key in RESULT_FILES} == dict.fromkeys(RESULT_FILES, 2)


@pytest.mark.parametrize("direction", ["s3 to local", "local to s3"])
def test_local_and_s3_locations_mix(s3_bucket: str, tmp_path: Path, direction: str) -> None:
    one_row = MIXED_MANIFEST.split("\n", 2)
    text = "\n".join(one_row[:2]) + "\n"
    if direction == "s3 to local":
        manifest, destination = put_manifest(s3_bucket, text=text), str(tmp_path / "out")
    else:
        (tmp_path / "m.csv").write_text(text)
        manifest, destination = str(tmp_path / "m.csv"), f"s3://{s3_bucket}/renders/"
    summary = _render(RenderRequest(manifest=manifest, destination=destination))
    assert summary.counts["ok"] == 1
    if direction == "s3 to local":
        assert {p.name for p in (tmp_path / "out").iterdir()} >= RESULT_FILES
    else:
        assert len(s3_versions(s3_bucket, "renders/")) == 1 + len(S3_RESULT_FILES)


def test_presigned_gallery_links_fetch_the_videos(s3_bucket: str, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("\n".join(MIXED_MANIFEST.split("\n")[:2]) + "\n")
    summary = _render(
        RenderRequest(
            manifest=str(tmp_path / "m.csv"),
            destination=f"s3://{s3_bucket}/renders",
            presign_expiry=600,
        )
    )
    assert summary.counts["ok"] == 1
    page = s3_client().get_object(Bucket=s3_bucket, Key="renders/index.html")["Body"].read()
    links = [link.replace("&amp;", "&") for link in re.findall(r'href="([^"]+)"', page.decode())]
    links += [video["src"] for video in gallery_videos(page.decode())]
    assert len(links) == 3  # results.csv, results.json, the video
    assert all("X-Amz-Expires=600" in link for link in links)
    assert FAKE_SECRET_ACCESS_KEY.encode() not in page
    video = next(link for link in links if ".mp4?" in link)
    with urllib.request.urlopen(video, timeout=10) as response:  # no credentials sent
        assert response.read()[4:8] == b"ftyp"


def test_transient_upload_faults_are_retried_and_each_video_lands_once(s3_bucket: str) -> None:
    def flaky(request: AWSPreparedRequest, path: str, attempt: int) -> AWSResponse | None:
        if not path.endswith(".mp4"):
            return None
        if attempt == 1:
            return s3_error(request, 503, "SlowDown", "Please reduce your request rate.")
        if attempt == 2 and "/clip-0-" in path:
            raise dropped(request)
        return None

    outcome, attempts = _render_s3_to_s3_through(s3_bucket, flaky)
    assert outcome.summary.counts == {"ok": 3, "skipped": 0, "failed": 0, "invalid": 1}
    assert sorted(n for path, n in attempts.items() if path.endswith(".mp4")) == [2, 2, 3]
    versions = s3_versions(s3_bucket, "renders/")
    assert sorted(n for key, n in versions.items() if key.endswith(".mp4")) == [1, 1, 1]


def test_access_denied_on_one_key_fails_only_that_row_at_once(s3_bucket: str) -> None:
    def deny_clip_1(request: AWSPreparedRequest, path: str, attempt: int) -> AWSResponse | None:
        if "/renders/clip-1-" in path:  # the video, not its claim in renders/.t2v/claims/
            return s3_error(request, 403, "AccessDenied", "Access Denied")
        return None

    outcome, attempts = _render_s3_to_s3_through(s3_bucket, deny_clip_1)
    assert outcome.summary.counts == {"ok": 2, "skipped": 0, "failed": 1, "invalid": 1}
    assert [n for path, n in attempts.items() if "/renders/clip-1-" in path] == [1]  # no retries
    row = s3_results(s3_bucket)[1]
    assert (row["id"], row["status"], row["output"]) == ("clip-1", "failed", "")
    assert re.fullmatch(
        rf"cannot write s3://{s3_bucket}/renders/clip-1-[0-9a-f]{{12}}\.mp4: "
        r"AccessDenied \(Access Denied\)",
        row["error"],
    )


@pytest.mark.parametrize(
    ("destination", "expiry", "message"),
    [
        ("out", 600, "presigned links need an s3:// destination"),
        ("s3://bucket/out", 7 * 24 * 3600 + 1, "less than or equal to 604800"),
    ],
)
def test_presign_expiry_is_refused_before_the_run(
    destination: str, expiry: int, message: str
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        RenderRequest(destination=destination, presign_expiry=expiry)


def test_faults_outlasting_the_client_retries_are_retried_by_the_task_after_a_pause(
    s3_bucket: str,
) -> None:
    # Each video's first three PUTs (the client's three attempts) fail in its own way; the
    # task tries again IO_RETRY_DELAYS[0] seconds later, and the fourth PUT lands.
    faults: dict[str, Callable[[AWSPreparedRequest], AWSResponse]] = {
        "/clip-0-": lambda request: s3_error(request, 500, "InternalError", "Internal error."),
        "/clip-1-": lambda request: s3_error(request, 503, "SlowDown", "Reduce your rate."),
        "/clip-2-": lambda request: raise_(dropped(request)),
    }
    sent: dict[str, list[float]] = defaultdict(list)

    def fail_three_times(
        request: AWSPreparedRequest, path: str, attempt: int
    ) -> AWSResponse | None:
        if not path.endswith(".mp4"):
            return None
        sent[path].append(time.monotonic())
        fault = next(fault for prefix, fault in faults.items() if prefix in path)
        return fault(request) if attempt <= 3 else None

    started = time.monotonic()
    outcome, attempts = _render_s3_to_s3_through(s3_bucket, fail_three_times)
    wall_s = time.monotonic() - started

    assert outcome.summary.counts == {"ok": 3, "skipped": 0, "failed": 0, "invalid": 1}
    assert sorted(n for path, n in attempts.items() if path.endswith(".mp4")) == [4, 4, 4]
    pauses = {path.rsplit("/", 1)[-1][:6]: _pauses(times) for path, times in sent.items()}
    for client_1, client_2, task in pauses.values():
        assert client_1 > 0 and client_2 > 0  # botocore's jittered exponential backoff
        assert task >= IO_RETRY_DELAYS[0]  # then the task's own retry delay
    versions = s3_versions(s3_bucket, "renders/")
    assert sorted(n for key, n in versions.items() if key.endswith(".mp4")) == [1, 1, 1]
    shown = ", ".join(
        f"{k}: {'/'.join(f'{p:.2f}' for p in v)} s" for k, v in sorted(pauses.items())
    )
    print(f"\nRELIABILITY transient-5xx-throttle-drop: attempts 4 per video; pauses {shown}; "
          f"run {wall_s:.1f} s; lost=0 duplicates=0")  # fmt: skip


def test_a_put_that_landed_but_whose_answer_was_lost_is_not_stored_twice(
    s3_bucket: str,
) -> None:
    # The first PUT of clip-0 reaches the server, then the connection drops before the
    # answer: the client's retry is refused (412), as a create-only write should be.
    def land_then_drop(request: AWSPreparedRequest, path: str, attempt: int) -> AWSResponse | None:
        if "/renders/clip-0-" in path and attempt == 1:  # the video, not its claim
            URLLib3Session().send(request)
            raise dropped(request)
        return None

    outcome, attempts = _render_s3_to_s3_through(s3_bucket, land_then_drop)

    assert outcome.summary.counts == {"ok": 2, "skipped": 1, "failed": 0, "invalid": 1}
    assert [n for path, n in attempts.items() if "/renders/clip-0-" in path] == [2]
    row = s3_results(s3_bucket)[0]
    assert (row["id"], row["status"], row["warning"]) == ("clip-0", "skipped", ALREADY_STORED)
    assert row["output"].startswith(f"s3://{s3_bucket}/renders/clip-0-")
    versions = s3_versions(s3_bucket, "renders/")
    assert sorted(n for key, n in versions.items() if key.endswith(".mp4")) == [1, 1, 1]


def _pauses(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def raise_(error: Exception) -> AWSResponse:
    raise error
