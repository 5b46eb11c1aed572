from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from storage import LocalStorage
from tasks.manifest import InvalidRow, RenderRow, parse_manifest
from tasks.publish import (
    RESULT_COLUMNS,
    ResultRow,
    RunSummary,
    gallery_html,
    output_key,
    package_versions,
    publish_video,
    results_csv,
    results_json,
)

ROW = RenderRow(
    line=1,
    id="clip",
    prompt="a cat",
    negative_prompt="",
    seed=1,
    num_frames=8,
    height=64,
    width=64,
    num_inference_steps=4,
    guidance_scale=9.0,
    fps=8,
    extra={"Campaign": "spring"},
)
SUMMARY = RunSummary(
    counts={"ok": 1, "skipped": 0, "failed": 0, "invalid": 1},
    rows=2,
    wall_s=1.0,
    videos_per_minute=60.0,
    model="tiny-random",
    device="cpu",
    destination="/out",
    results="/out/results.csv",
    started_at="2026-11-28T00:00:00+00:00",
    finished_at="2026-11-28T00:00:01+00:00",
    versions={"python": "3.11"},
)


def test_output_key_is_stable_and_readable() -> None:
    key = output_key(ROW, "tiny-random")
    assert key == output_key(ROW, "tiny-random")
    assert key.startswith("clip-") and key.endswith(".mp4") and len(key) == len("clip-") + 16


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a dog"},
        {"negative_prompt": "blurry"},
        {"seed": 2},
        {"num_frames": 16},
        {"height": 128},
        {"width": 128},
        {"num_inference_steps": 5},
        {"guidance_scale": 7.5},
        {"fps": 12},
    ],
)
def test_every_render_parameter_changes_the_key(change: dict[str, object]) -> None:
    assert output_key(replace(ROW, **change), "m") != output_key(ROW, "m")  # type: ignore[arg-type]


def test_the_model_changes_the_key_but_position_and_extras_do_not() -> None:
    assert output_key(ROW, "a") != output_key(ROW, "b")
    same = replace(ROW, line=7, extra={"Campaign": "autumn"})
    assert output_key(same, "a") == output_key(ROW, "a")


def _results() -> list[ResultRow]:
    ok = ResultRow.for_row(
        replace(ROW, prompt="=HYPERLINK(1)", negative_prompt='line\nbreak, comma "quoted" 猫 🎬'),
        "ok",
        "tiny-random",
        output="/out/clip-abc.mp4",
        render_s=0.1234,
        bytes=10,
        sha256="ff",
    )
    bad = InvalidRow(
        2, "bad", "`height` must be …", {"prompt": "@x", "height": "100", "Campaign": "-5"}
    )
    return [ok, ResultRow.for_invalid(bad, "tiny-random")]


def test_results_csv_columns_order_and_values() -> None:
    text = results_csv(_results(), ["Campaign"]).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 3
    assert rows[0] == [*RESULT_COLUMNS, "Campaign"]
    assert RESULT_COLUMNS == (
        "id", "status", "output", "error", "warning", "prompt", "negative_prompt", "seed",
        "num_frames", "height", "width", "num_inference_steps", "guidance_scale", "fps",
        "model", "render_s", "bytes", "sha256",
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
    row = next(iter(csv.DictReader(io.StringIO(results_csv([result], ["Campaign"]).decode()))))
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
    rows = list(csv.reader(io.StringIO(results_csv(results, manifest.extra_columns).decode())))
    cells = [cell for row in rows for cell in row if cell]
    assert all(cell[0] not in "=+-@\t\r" for cell in cells), cells
    assert rows[0][-2:] == ['\'=HYPERLINK("x")', "'@Tab"]


def test_benign_cells_are_untouched() -> None:
    result = ResultRow.for_row(replace(ROW, prompt="a = b"), "ok", "m")
    row = next(iter(csv.DictReader(io.StringIO(results_csv([result], []).decode()))))
    assert row["prompt"] == "a = b"


def test_results_json_keeps_raw_values_and_the_summary() -> None:
    data = results_json(_results(), SUMMARY)
    assert "猫 🎬".encode() in data  # not \\u escapes
    document = json.loads(data)
    assert document["summary"]["counts"] == SUMMARY.counts
    assert document["summary"]["versions"] == {"python": "3.11"}
    ok, bad = document["rows"]
    assert (ok["prompt"], ok["render_s"], ok["guidance_scale"]) == ("=HYPERLINK(1)", 0.123, 9.0)
    assert ok["extra"] == {"Campaign": "spring"}
    assert (bad["status"], bad["prompt"], bad["height"]) == ("invalid", "@x", "100")
    assert bad["extra"] == {"Campaign": "-5"}


def test_gallery_escapes_prompts_and_links_videos_relatively() -> None:
    hostile = ResultRow.for_row(
        replace(ROW, prompt='<script>alert("x")</script>', negative_prompt="<b>'猫'</b>"),
        "ok",
        "m",
        output="/out/clip-abc.mp4",
    )
    skipped = ResultRow.for_row(
        replace(ROW, id="old"), "skipped", "m", output="s3://bucket/runs/old-def.mp4"
    )
    failed = ResultRow.for_row(
        replace(ROW, id="boom"), "failed", "m", error="<img src=x onerror=alert(1)>"
    )
    page = gallery_html([hostile, skipped, failed, *_results()[1:]], SUMMARY).decode()
    assert "<script" not in page and "<img" not in page and "<b>'" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;&#x27;猫&#x27;&lt;/b&gt;" in page
    assert page.count("<video") == 2
    assert 'src="clip-abc.mp4"' in page and 'src="old-def.mp4"' in page
    assert "controls loop muted playsinline" in page
    assert "bad</b> (invalid)" in page and "boom</b> (failed)" in page
    assert "1 ok, 0 skipped, 0 failed, 1 invalid" in page
    assert "http" not in page  # self-contained: nothing to fetch


def test_publish_video_writes_whole_file_and_reports_its_digest(tmp_path: Path) -> None:
    source = tmp_path / "scratch.mp4"
    source.write_bytes(b"\x00mp4 bytes" * 1000)
    storage = LocalStorage(tmp_path / "out")
    published = publish_video(storage, "clip-abc.mp4", source)
    assert published.output == str(tmp_path / "out" / "clip-abc.mp4")
    assert published.bytes == 10_000
    assert published.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip-abc.mp4"]


def test_an_exclusive_publish_keeps_the_video_already_there(tmp_path: Path) -> None:
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    storage = LocalStorage(tmp_path / "out")
    published = publish_video(storage, "clip-abc.mp4", first, exclusive=True)
    assert published is not None and published.sha256 == hashlib.sha256(b"first").hexdigest()
    assert publish_video(storage, "clip-abc.mp4", second, exclusive=True) is None
    assert storage.read_bytes("clip-abc.mp4") == b"first"


def test_package_versions_names_python_and_only_installed_packages() -> None:
    versions = package_versions()
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "t2v-batch" in versions
    assert all(versions.values())


def test_publishing_does_not_import_torch() -> None:
    # The results manifest and uploads run where torch is not needed (and is slow to import).
    code = "import sys, tasks.publish; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_extra_columns_named_like_results_columns_are_renamed() -> None:
    # A results.csv fed back in as a manifest carries `status`, `output`, ... as extras.
    row = ResultRow.for_row(ROW, "ok", "m", output="/out/new.mp4")
    stale = replace(row, extra={"Status": "failed", "Campaign": "spring"})
    text = results_csv([stale], ["Status", "Campaign"]).decode()
    header, values = list(csv.reader(io.StringIO(text)))
    assert header[-2:] == ["manifest_Status", "Campaign"]
    assert len(set(header)) == len(header)
    assert dict(zip(header, values, strict=True))["status"] == "ok"
