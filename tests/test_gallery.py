"""The gallery's record and index.html: every video still in DEST with its prompt, user text
shown as text (the page's script is exercised in test_gallery_browser.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage import LocalStorage, open_storage
from storage.s3 import s3_client
from tasks.encode import encode_mp4
from tasks.gallery import GALLERY_RECORD, merge_videos, run_videos, store_start_images
from tasks.gallery_page import gallery_html
from tasks.images import StartImage
from tasks.publish import publish_video, write_results
from tasks.results import ResultRow
from tests.factories import ROW, SUMMARY, gallery_videos, sample_results
from tests.s3faults import Fault, injected


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
    # The videos are JSON in a script element, with <, > and & escaped.
    assert "<script>alert" not in page and "<img" not in page and "<b>'" not in page
    assert r"\u003cscript\u003ealert(\"x\")\u003c/script\u003e" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    videos = gallery_videos(page)
    assert [video["src"] for video in videos] == ["clip-abc.mp4", "old-def.mp4"]
    assert videos[0]["prompt"] == '<script>alert("x")</script>'
    assert videos[0]["negative_prompt"] == "<b>'猫'</b>"
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
    assert [video["run"] for video in gallery_videos(page)] == [None, None]


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
    assert [video["src"] for video in gallery_videos(page)] == ["c.mp4", "a.mp4"]


def test_a_start_image_is_shown_from_a_thumbnail_stored_once_in_dest(tmp_path: Path) -> None:
    dest = LocalStorage(tmp_path / "out")
    picture = tmp_path / "start.png"
    Image.new("RGB", (640, 320), (200, 30, 30)).save(picture)
    image = StartImage(str(picture), hashlib.sha256(picture.read_bytes()).hexdigest())
    with_image = [
        ResultRow.for_row(replace(ROW, id=n, image=image), "ok", "m", output=f"/o/{n}.mp4")
        for n in ("a", "a2")
    ]
    gone = StartImage(str(tmp_path / "gone.png"), "00" * 32)
    vanished = ResultRow.for_row(replace(ROW, id="b", image=gone), "ok", "m", output="/o/b.mp4")
    text = ResultRow.for_row(replace(ROW, id="c"), "ok", "m", output="/o/c.mp4")
    results = [*with_image, vanished, text]
    start_images = store_start_images(dest, results)
    page = gallery_html(run_videos(results, "2026-12-06", start_images), results, SUMMARY)
    key = f".t2v/start-images/{image.sha256}.jpg"
    assert [video["start_image"] for video in gallery_videos(page.decode())] == [
        key, key, None, None
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out" / ".t2v" / "start-images").iterdir()) == [
        f"{image.sha256}.jpg"
    ]
    shown = Image.open(io.BytesIO(dest.read_bytes(key)))
    assert (shown.format, shown.size) == ("JPEG", (160, 80))
    assert shown.getpixel((80, 40))[0] > 150  # type: ignore[index]
    # Linked as the videos are: presigned when they are.
    signed = gallery_html(
        run_videos(results, "d", start_images), [], SUMMARY, "https://s/{}?x".format
    )
    assert gallery_videos(signed.decode())[0]["start_image"] == f"https://s/{key}?x"
    # A later run finds it stored: made once per image, not once per run.
    (tmp_path / "out" / key).write_bytes(b"kept")
    assert store_start_images(dest, results) == {image.sha256: key}
    assert dest.read_bytes(key) == b"kept"


def test_values_many_videos_share_are_written_once() -> None:
    # As a record may hold it: the image embedded, not a key in DEST.
    picture_uri = JPEG_URI + "AAAA" * 1000
    videos = [
        {**video, "start_image": picture_uri}
        for video in run_videos([_scored(f"v{n}", None) for n in range(100)], "2026-12-06")
    ]
    page = gallery_html(videos, [], SUMMARY).decode()
    assert page.count(picture_uri) == 1 and page.count('"2026-12-06"') == 1
    assert {video["start_image"] for video in gallery_videos(page)} == {picture_uri}
    # With the prompt and the id, each video adds a few dozen bytes to the page.
    empty = len(gallery_html([], [], SUMMARY))
    assert (len(page.encode()) - empty - len(picture_uri)) / 100 < 150


JPEG_URI = "data:image/jpeg;base64,"


def _scored(row_id: str, score: float | None, flags: tuple[str, ...] = ()) -> ResultRow:
    row = replace(ROW, id=row_id)
    return ResultRow.for_row(row, "ok", "m", output=f"/o/{row_id}.mp4", score=score, flags=flags)


def test_the_gallery_sorts_by_score_and_marks_flagged_videos() -> None:
    results = [_scored("low", 12.0, ("low_score",)), _scored("none", None), _scored("top", 31.5)]
    page = gallery_html(run_videos(results, "2026-12-06"), results, SUMMARY).decode()
    shown = [(video["id"], video["score"], video["flags"]) for video in gallery_videos(page)]
    assert shown == [("top", 31.5, ""), ("low", 12.0, "low_score"), ("none", None, "")]
    assert 'id="hide-flagged"' in page and "hide the 1 flagged" in page
    unscored = [_scored("b", None), _scored("a", None)]
    page = gallery_html(run_videos(unscored, "2026-12-06"), unscored, SUMMARY).decode()
    # No score: the record's order.
    assert [video["id"] for video in gallery_videos(page)] == ["b", "a"]


def test_a_skipped_video_keeps_the_flags_and_score_its_render_recorded() -> None:
    earlier = run_videos([_scored("a", 12.0, ("frozen",))], "2026-12-05")
    again = ResultRow.for_row(replace(ROW, id="a"), "skipped", "m", output="/o/a.mp4")
    (video,) = merge_videos(run_videos([again], "2026-12-06"), earlier)
    # Dated when it was stored, not by the run that skipped it.
    assert (video["run"], video["flags"], video["score"]) == ("2026-12-05", "frozen", 12.0)


@pytest.mark.parametrize("where", ["folder", "s3 prefix", "s3 bucket"])
def test_videos_deleted_since_leave_the_gallery_on_its_next_write(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "folder":
        out = str(tmp_path / "out")
    else:
        bucket = request.getfixturevalue("s3_bucket")
        out = f"s3://{bucket}/renders" if where == "s3 prefix" else f"s3://{bucket}"
    dest = open_storage(out)
    clip = tmp_path / "clip.mp4"
    encode_mp4(np.zeros((2, 64, 64, 3), dtype=np.uint8) + 90, 8, clip)
    first = []
    for n in range(20):
        published = publish_video(dest, f"v{n:02}.mp4", clip)
        first.append(
            ResultRow.for_row(replace(ROW, id=f"v{n:02}"), "ok", "m", output=published.output)
        )
    write_results(out, first, [], SUMMARY)
    gone = {f"v{n:02}.mp4" for n in range(0, 20, 2)}
    for key in gone:  # as a user removes them: the video and nothing else
        if where == "folder":
            (tmp_path / "out" / key).unlink()
        else:
            bucket, _, prefix = out.removeprefix("s3://").partition("/")
            s3_client().delete_object(Bucket=bucket, Key=f"{prefix}/{key}".lstrip("/"))
    publish_video(dest, "new.mp4", clip)
    new = ResultRow.for_row(replace(ROW, id="new"), "ok", "m", output=dest.uri("new.mp4"))
    heads = Counter[str]()
    with injected("HeadObject", _count(heads)) if where != "folder" else contextlib.nullcontext():
        write_results(out, [new], [], replace(SUMMARY, finished_at="day 2"))
    live = ["new.mp4", *sorted({f"v{n:02}.mp4" for n in range(20)} - gone)]
    record = json.loads(dest.read_bytes(GALLERY_RECORD))
    assert [video["key"] for video in record["videos"]] == live
    page = dest.read_bytes("index.html").decode()
    assert [video["src"] for video in gallery_videos(page)] == live
    # Known from one listing of DEST: no request per video.
    assert not [path for path in heads if path.endswith(".mp4")]


def _count(counter: Counter[str]) -> Fault:
    def fault(request: object, path: str, attempt: int) -> None:
        counter[path] += 1

    return fault


def test_a_video_with_sound_plays_unmuted_and_one_without_stays_muted() -> None:
    loud = ResultRow.for_row(replace(ROW, id="loud"), "ok", "m", output="loud-1.mp4", audio=True)
    quiet = ResultRow.for_row(
        replace(ROW, id="quiet"), "ok", "m", output="quiet-2.mp4", audio=False
    )
    page = gallery_html(run_videos([loud, quiet], "2026-12-06"), [loud, quiet], SUMMARY).decode()
    # The page's script mutes the players of videos without sound (the browser test plays one).
    assert [(video["src"], video["audio"]) for video in gallery_videos(page)] == [
        ("loud-1.mp4", "yes"),
        ("quiet-2.mp4", "no"),
    ]
