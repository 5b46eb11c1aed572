"""Checks on DEST before any model loads: writable, the manifest safe, no foreign results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import StorageError
from tasks.destination import check_destination
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
