"""Checks on DEST before any model loads: writable, the manifest safe, no foreign results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import S3Storage, StorageError
from storage.s3client import new_client, s3_client
from tasks.destination import check_conditional_writes, check_destination
from tasks.publish import write_results
from tasks.results import RESULT_COLUMNS
from tests.factories import SUMMARY, sample_results
from tests.s3faults import mocked_s3


@pytest.mark.parametrize("spelling", ["{d}", "{d}/", "{d}/../selfout", "file://{d}"])
def test_results_never_overwrite_the_manifest(tmp_path: Path, spelling: str) -> None:
    # `t2v render selfout/results.csv --out selfout` replaced the manifest.
    out = tmp_path / "selfout"
    out.mkdir()
    (out / "results.csv").write_text("prompt\na cat\n")
    destination = spelling.format(d=out)
    with pytest.raises(StorageError, match=r"results\.csv would overwrite the manifest"):
        check_destination(destination, str(out / "results.csv"), 0)
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(StorageError, match="would overwrite the manifest"):
        check_destination(str(tmp_path / "link"), str(out / "results.csv"), 0)
    assert (out / "results.csv").read_text() == "prompt\na cat\n"


@pytest.mark.parametrize("name", ["index.html", "results.csv", "results.json"])
def test_results_files_t2v_did_not_write_are_refused_before_rendering(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / name).write_text("<p>my page</p>")
    with pytest.raises(StorageError, match=f"^{tmp_path / name} was not written by t2v-batch"):
        check_destination(str(tmp_path), str(tmp_path / "m.csv"), 0)


def test_a_folder_at_a_results_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").mkdir()
    with pytest.raises(StorageError, match=r"index\.html was not written by t2v-batch"):
        check_destination(str(tmp_path), str(tmp_path / "m.csv"), 0)


def test_results_files_of_this_and_earlier_releases_are_ours(tmp_path: Path) -> None:
    write_results(str(tmp_path), sample_results(), ["Campaign"], SUMMARY)
    check_destination(str(tmp_path), str(tmp_path / "m.csv"), 0)
    (tmp_path / "results.csv").write_text(",".join(RESULT_COLUMNS) + "\r\n")
    check_destination(str(tmp_path), str(tmp_path / "m.csv"), 0)
    before_images = RESULT_COLUMNS[: RESULT_COLUMNS.index("speed") + 1]
    (tmp_path / "results.csv").write_text(",".join([*before_images, "Campaign"]) + "\r\n")
    (tmp_path / "results.json").write_text('{\n  "summary": {\n    "counts": {}}, "rows": []}')
    (tmp_path / "index.html").write_text("<!doctype html>\n<h1>t2v-batch results</h1>")
    check_destination(str(tmp_path), str(tmp_path / "m.csv"), 0)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mocked_s3("t2v-dest") as client:
        yield client


def test_an_s3_destination_is_checked_too(s3: Any) -> None:
    check_destination("s3://t2v-dest/out", "s3://t2v-dest/in/m.csv", 10**15)
    with pytest.raises(StorageError, match="would overwrite the manifest s3://t2v-dest/out/"):
        check_destination("s3://t2v-dest/out/", "s3://t2v-dest/out/results.json", 0)
    s3.put_object(Bucket="t2v-dest", Key="out/index.html", Body=b"<p>theirs</p>")
    with pytest.raises(StorageError, match=r"s3://t2v-dest/out/index\.html was not written"):
        check_destination("s3://t2v-dest/out", "s3://t2v-dest/in/m.csv", 0)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        check_destination("s3://no-such-bucket/out", "s3://t2v-dest/in/m.csv", 0)


def _ignoring_conditions(client: Any) -> Any:
    """`client`, with every PUT's If-None-Match and If-Match left off before it is signed:
    what a store that ignores conditional writes receives, over the real network."""

    def strip(request: Any, **_: Any) -> None:
        for header in ("If-None-Match", "If-Match"):
            if header in request.headers:
                del request.headers[header]

    client.meta.events.register("before-sign.s3.PutObject", strip)
    return client


def test_a_store_that_ignores_conditional_writes_is_refused_in_one_line(s3_bucket: str) -> None:
    honouring = S3Storage(s3_bucket, "out", new_client())
    check_conditional_writes(honouring)
    ignoring = S3Storage(s3_bucket, "out", _ignoring_conditions(new_client()))
    with pytest.raises(StorageError) as refused:
        check_conditional_writes(ignoring)
    assert str(refused.value) == (
        f"s3://{s3_bucket}/out ignores conditional writes (a create-only PUT with "
        "If-None-Match: * replaced an object): t2v needs them to store each video once and "
        "to claim rows; use a store that honours If-None-Match and If-Match"
    )
    assert "\n" not in str(refused.value)
    # The probe leaves nothing behind, on either store.
    listed = honouring.client.list_objects_v2(Bucket=s3_bucket, Prefix="out/")
    assert listed.get("KeyCount", 0) == 0


def test_a_destination_is_probed_for_conditional_writes_when_checked(
    s3_bucket: str,
) -> None:
    check_destination(f"s3://{s3_bucket}/out", f"s3://{s3_bucket}/in/m.csv", 0)
    _ignoring_conditions(s3_client())
    with pytest.raises(StorageError, match="ignores conditional writes"):
        check_destination(f"s3://{s3_bucket}/out", f"s3://{s3_bucket}/in/m.csv", 0)
