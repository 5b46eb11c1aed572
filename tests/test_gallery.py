"""index.html: every video with its prompt, user text shown as text."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage import LocalStorage
from tasks.encode import encode_mp4
from tasks.gallery import GALLERY_RECORD, gallery_html, merge_videos, run_videos
from tasks.images import StartImage
from tasks.publish import publish_video, write_results
from tasks.results import ResultRow
from tests.factories import ROW, SUMMARY, sample_results


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
    results = [hostile, skipped, failed, *sample_results()[1:]]
    page = gallery_html(run_videos(results, "2026-11-28"), results, SUMMARY).decode()
    assert "<script" not in page and "<img" not in page and "<b>'" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "&lt;b&gt;&#39;猫&#39;&lt;/b&gt;" in page
    assert page.count("<video") == 2
    assert 'src="clip-abc.mp4"' in page and 'src="old-def.mp4"' in page
    assert "controls loop muted playsinline" in page
    assert "bad</b> (invalid)" in page and "boom</b> (failed)" in page
    assert "1 ok, 0 skipped, 0 failed, 1 invalid" in page
    assert "http" not in page  # self-contained: nothing to fetch


def test_a_run_that_rendered_nothing_names_no_device_and_dates_no_card_by_itself() -> None:
    skipped = [
        ResultRow.for_row(replace(ROW, id=n), "skipped", "m", output=f"/o/{n}.mp4") for n in "ab"
    ]
    summary = replace(SUMMARY, counts={**SUMMARY.counts, "ok": 0, "skipped": 2}, device="none")
    videos = merge_videos(run_videos(skipped, summary.finished_at), [])
    page = gallery_html(videos, skipped, summary).decode()
    assert " on none" not in page
    assert "model tiny-random, no video rendered in this run" in page
    assert summary.finished_at not in page.split('<div class="grid">')[1]
    assert page.count("stored by an earlier run") == 2


def test_earlier_videos_follow_this_runs_and_none_is_listed_twice() -> None:
    first = [ResultRow.for_row(replace(ROW, id=n), "ok", "m", output=f"/o/{n}.mp4") for n in "abc"]
    earlier = run_videos(first, "2026-11-27")
    again = ResultRow.for_row(replace(ROW, id="b"), "skipped", "m", output="/o/b.mp4")
    new = ResultRow.for_row(replace(ROW, id="d"), "ok", "m", output="/o/d.mp4")
    failed = ResultRow.for_row(replace(ROW, id="e"), "failed", "m", error="boom")
    videos = merge_videos(run_videos([again, new, failed], "2026-11-28"), earlier)
    # A skipped video keeps the date of the run that stored it.
    assert [(v["key"], v["run"]) for v in videos] == [
        ("b.mp4", "2026-11-27"),
        ("d.mp4", "2026-11-28"),
        ("a.mp4", "2026-11-27"),
        ("c.mp4", "2026-11-27"),
    ]


def test_a_damaged_record_is_kept_aside_and_the_gallery_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = LocalStorage(tmp_path / "out")
    clip = tmp_path / "clip.mp4"
    encode_mp4(np.zeros((2, 64, 64, 3), dtype=np.uint8) + 90, 8, clip)

    def run(*ids: str) -> list[ResultRow]:
        for name in ids:
            publish_video(dest, f"{name}.mp4", clip)
        rows = [
            ResultRow.for_row(replace(ROW, id=n), "ok", "m", output=dest.uri(f"{n}.mp4"))
            for n in ids
        ]
        write_results(str(dest.root), rows, [], SUMMARY)
        return rows

    run("a", "b")
    damaged = b'{"generator": "t2v-batch", "videos": [{"key": "a.mp4", "pro'
    dest.write_bytes(GALLERY_RECORD, damaged)
    (tmp_path / "out" / "b.mp4").unlink()  # gone since: the rebuilt gallery leaves it out
    with caplog.at_level(logging.WARNING, logger="t2v"):
        run("c")
    record = json.loads(dest.read_bytes(GALLERY_RECORD))
    assert [video["key"] for video in record["videos"]] == ["c.mp4", "a.mp4"]
    (aside,) = (tmp_path / "out" / ".t2v").glob("gallery.json.damaged-*")
    assert aside.read_bytes() == damaged
    assert [r.getMessage() for r in caplog.records] == [
        f"{dest.uri(GALLERY_RECORD)} was damaged: kept as {aside}; the gallery lists this "
        "run's videos and those of the last results.json still stored"
    ]
    page = (tmp_path / "out" / "index.html").read_text()
    assert 'src="a.mp4"' in page and 'src="c.mp4"' in page and 'src="b.mp4"' not in page


def test_a_start_image_is_shown_beside_its_video_embedded_in_the_page(tmp_path: Path) -> None:
    picture = tmp_path / "start.png"
    Image.new("RGB", (640, 320), (200, 30, 30)).save(picture)
    image = StartImage(str(picture), hashlib.sha256(picture.read_bytes()).hexdigest())
    with_image = ResultRow.for_row(replace(ROW, image=image), "ok", "m", output="/o/a.mp4")
    gone = StartImage(str(tmp_path / "gone.png"), "00" * 32)
    vanished = ResultRow.for_row(replace(ROW, id="b", image=gone), "ok", "m", output="/o/b.mp4")
    text = ResultRow.for_row(replace(ROW, id="c"), "ok", "m", output="/o/c.mp4")
    results = [with_image, vanished, text]
    page = gallery_html(run_videos(results, "2026-12-06"), results, SUMMARY).decode()
    (embedded,) = re.findall(
        r'<img src="data:image/jpeg;base64,([^"]+)" alt="start image of clip"', page
    )
    shown = Image.open(io.BytesIO(base64.b64decode(embedded)))
    assert shown.size == (160, 80)
    assert shown.getpixel((80, 40))[0] > 150  # type: ignore[index]
    assert page.count("<img") == 1 and page.count("<video") == 3


def _scored(row_id: str, score: float | None, flags: tuple[str, ...] = ()) -> ResultRow:
    row = replace(ROW, id=row_id)
    return ResultRow.for_row(row, "ok", "m", output=f"/o/{row_id}.mp4", score=score, flags=flags)


def test_the_gallery_sorts_by_score_and_marks_flagged_videos() -> None:
    results = [_scored("low", 12.0, ("low_score",)), _scored("none", None), _scored("top", 31.5)]
    page = gallery_html(run_videos(results, "2026-12-06"), results, SUMMARY).decode()
    assert page.index('id="top"') < page.index('id="low"') < page.index('id="none"')
    assert '<figure id="low" class="flagged">' in page and '<figure id="top">' in page
    assert "flagged: low_score" in page and "score 31.5" in page
    assert 'id="hide-flagged"' in page and "hide the 1 flagged" in page
    unscored = [_scored("b", None), _scored("a", None)]
    page = gallery_html(run_videos(unscored, "2026-12-06"), unscored, SUMMARY).decode()
    assert page.index('id="b"') < page.index('id="a"')  # no score: the record's order


def test_a_skipped_video_keeps_the_flags_and_score_its_render_recorded() -> None:
    earlier = run_videos([_scored("a", 12.0, ("frozen",))], "2026-12-05")
    again = ResultRow.for_row(replace(ROW, id="a"), "skipped", "m", output="/o/a.mp4")
    (video,) = merge_videos(run_videos([again], "2026-12-06"), earlier)
    # Dated when it was stored, not by the run that skipped it.
    assert (video["run"], video["flags"], video["score"]) == ("2026-12-05", "frozen", 12.0)


def test_a_video_with_sound_plays_unmuted_and_one_without_stays_muted() -> None:
    loud = ResultRow.for_row(replace(ROW, id="loud"), "ok", "m", output="loud-1.mp4", audio=True)
    quiet = ResultRow.for_row(
        replace(ROW, id="quiet"), "ok", "m", output="quiet-2.mp4", audio=False
    )
    page = gallery_html(run_videos([loud, quiet], "2026-12-06"), [loud, quiet], SUMMARY).decode()
    assert '<video src="loud-1.mp4" controls loop playsinline' in page
    assert '<video src="quiet-2.mp4" controls loop muted playsinline' in page
