"""The results manifest: CSV for spreadsheets, JSON for programs, the run summary."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.images import StartImage
from tasks.manifest import InvalidRow, parse_manifest
from tasks.results import (
    RESULT_COLUMNS,
    ResultRow,
    format_counts,
    package_versions,
    results_csv,
    results_json,
    summarize,
)
from tests.factories import ROW, SUMMARY, sample_results


def test_results_csv_columns_order_and_values() -> None:
    text = results_csv(sample_results(), ["Campaign"]).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 3
    assert rows[0] == [*RESULT_COLUMNS, "Campaign"]
    assert RESULT_COLUMNS == (
        "id", "status", "output", "error", "warning", "prompt", "negative_prompt", "seed",
        "num_frames", "height", "width", "num_inference_steps", "guidance_scale", "fps",
        "model", "render_s", "bytes", "sha256", "speed", "image", "image_sha256", "flags",
        "score", "audio",
    )  # fmt: skip
    ok = dict(zip(rows[0], rows[1], strict=True))
    assert ok["negative_prompt"] == 'line\nbreak, comma "quoted" 猫 🎬'
    assert (ok["id"], ok["status"], ok["bytes"], ok["sha256"]) == ("clip", "ok", "10", "ff")
    assert (ok["seed"], ok["guidance_scale"], ok["render_s"]) == ("1", "9.0", "0.123")
    assert ok["Campaign"] == "spring"
    bad = dict(zip(rows[0], rows[2], strict=True))
    assert (bad["status"], bad["height"], bad["width"]) == ("invalid", "100", "")
    assert (bad["prompt"], bad["Campaign"]) == ("'@x", "'-5")


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_looking_cells_get_a_quote(cell: str) -> None:
    result = ResultRow.for_row(replace(ROW, prompt=cell, extra={"Campaign": cell}), "ok", "m")
    row = next(
        iter(csv.DictReader(io.StringIO(results_csv([result], ["Campaign"]).decode("utf-8-sig"))))
    )
    assert row["prompt"] == row["Campaign"] == "'" + cell


def test_no_cell_or_header_of_results_csv_starts_a_formula() -> None:
    data = "\n".join(
        [
            'id,prompt,negative_prompt,seed,=HYPERLINK("x"),@Tab',
            "=ok,=1+1,+cmd|' /C calc'!A0,1,@SUM(A1),-2",
            "fine,\ra cat,-dog,@seed,\tx,\r=y",
            "good,a cat,,7,=x,+y",
        ]
    ).encode()
    manifest = parse_manifest(data, "m.csv")
    results = [ResultRow.for_invalid(row, "=model") for row in manifest.invalid]
    results += [
        ResultRow.for_row(
            row, "failed", "=model", output="+out", error="-boom", warning="@warn", sha256="=h"
        )
        for row in manifest.rows
    ]
    assert {r.status for r in results} == {"invalid", "failed"}
    rows = list(
        csv.reader(io.StringIO(results_csv(results, manifest.extra_columns).decode("utf-8-sig")))
    )
    cells = [cell for row in rows for cell in row if cell]
    assert all(cell[0] not in "=+-@\t\r" for cell in cells), cells
    assert rows[0][-2:] == ['\'=HYPERLINK("x")', "'@Tab"]


def test_benign_cells_are_untouched() -> None:
    result = ResultRow.for_row(replace(ROW, prompt="a = b"), "ok", "m")
    row = next(iter(csv.DictReader(io.StringIO(results_csv([result], []).decode("utf-8-sig")))))
    assert row["prompt"] == "a = b"


def test_results_json_keeps_raw_values_and_the_summary() -> None:
    data = results_json(sample_results(), SUMMARY)
    assert "猫 🎬".encode() in data  # not \\u escapes
    document = json.loads(data)
    assert document["summary"]["counts"] == SUMMARY.counts
    assert document["summary"]["versions"] == {"python": "3.11"}
    ok, bad = document["rows"]
    assert (ok["prompt"], ok["render_s"], ok["guidance_scale"]) == ("=HYPERLINK(1)", 0.123, 9.0)
    assert ok["extra"] == {"Campaign": "spring"}
    assert (bad["status"], bad["prompt"], bad["height"]) == ("invalid", "@x", "100")
    assert bad["extra"] == {"Campaign": "-5"}


def test_package_versions_names_python_and_only_installed_packages() -> None:
    versions = package_versions()
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "t2v-batch" in versions
    assert all(versions.values())


def test_extra_columns_named_like_results_columns_are_renamed() -> None:
    # A results.csv fed back in as a manifest carries `status`, `output`, ... as extras.
    row = ResultRow.for_row(ROW, "ok", "m", output="/out/new.mp4")
    stale = replace(row, extra={"Status": "failed", "Campaign": "spring"})
    text = results_csv([stale], ["Status", "Campaign"]).decode("utf-8-sig")
    header, values = list(csv.reader(io.StringIO(text)))
    assert header[-2:] == ["manifest_Status", "Campaign"]
    assert len(set(header)) == len(header)
    assert dict(zip(header, values, strict=True))["status"] == "ok"


def test_a_renamed_extra_column_never_takes_the_name_of_another() -> None:
    # A results.csv fed back in twice: `status` and the earlier run's `manifest_status`.
    row = ResultRow.for_row(ROW, "ok", "m", output="/out/new.mp4")
    extra = {"status": "failed", "manifest_status": "skipped", "Manifest_Status_2": "x"}
    text = results_csv([replace(row, extra=extra)], list(extra)).decode("utf-8-sig")
    (read,) = list(csv.DictReader(io.StringIO(text)))
    assert list(read)[-3:] == ["manifest_status_3", "manifest_status", "Manifest_Status_2"]
    assert (read["status"], read["manifest_status_3"], read["manifest_status"]) == (
        "ok",
        "failed",
        "skipped",
    )


def test_results_csv_starts_with_a_bom_for_spreadsheets() -> None:
    # Without it, spreadsheets read the UTF-8 prompts (猫 🎬) as Latin-1.
    data = results_csv(sample_results(), ["Campaign"])
    assert data.startswith(b"\xef\xbb\xbfid,status,")
    assert "猫 🎬" in data.decode("utf-8-sig")


def test_format_counts_names_every_status_in_order() -> None:
    assert format_counts({"failed": 2, "ok": 1}) == "1 ok, 0 skipped, 2 failed, 0 invalid"


def test_a_start_image_is_recorded_by_location_and_sha256() -> None:
    row = replace(ROW, image=StartImage("s3://b/shots/a.png", "ab" * 32))
    written = next(
        iter(
            csv.DictReader(
                io.StringIO(
                    results_csv([ResultRow.for_row(row, "ok", "m")], []).decode("utf-8-sig")
                )
            )
        )
    )
    assert (written["image"], written["image_sha256"]) == ("s3://b/shots/a.png", "ab" * 32)
    bad = InvalidRow(1, "x", "`image` 'a.gif' is a GIF image: …", {"prompt": "p", "image": "a.gif"})
    refused = ResultRow.for_invalid(bad, "m")
    assert (refused.image, refused.image_sha256) == ("a.gif", "")


def test_the_summary_counts_flagged_videos(tmp_path: Path) -> None:
    ok, invalid = sample_results()
    flagged = replace(ok, id="still", flags="frozen")
    failed = replace(ok, id="dark", status="failed", flags="")
    summary = summarize([ok, flagged, failed, invalid], "m", "cpu", str(tmp_path), started=0.0)
    assert summary.flagged == 1


def test_the_summary_line_tells_the_commands_time_and_the_runs_share_of_it() -> None:
    summary = replace(SUMMARY, wall_s=0.1)
    line = summary.one_line(command_s=8.2)
    assert " in 8.2 s, 0.1 s of it the run (" in line
    assert " in 0.1 s " in summary.one_line()
