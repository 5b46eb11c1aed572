"""The gallery in a real browser, Debian's Chromium through Playwright: every video plays,
and a page of thousands opens a page of cards at a time."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.gallery_scale import served_folder
from storage import LocalStorage
from tasks.encode import encode_mp4
from tasks.gallery import run_videos, store_start_images
from tasks.gallery_page import PAGE_SIZE as PAGE
from tasks.gallery_page import gallery_html
from tasks.images import StartImage
from tasks.publish import ResultRow
from tests.conftest import CHROMIUM_FLAGS
from tests.factories import ROW, SUMMARY, t2v

pytestmark = pytest.mark.slow


@pytest.fixture
def served(rendered_demo: tuple[Path, list[ResultRow]]) -> Iterator[str]:
    """The destination folder's gallery over HTTP."""
    folder, _ = rendered_demo
    with served_folder(folder) as url:
        yield f"{url}/index.html"


PLAY_ALL = """async () => {
  const videos = [...document.querySelectorAll('video')];
  await Promise.all(videos.map(async (v) => {
    if (v.readyState < 2) {
      await new Promise((ok, fail) => {
        v.addEventListener('loadeddata', ok, {once: true});
        v.addEventListener('error', () => fail(new Error('cannot play ' + v.currentSrc)));
        v.load();
      });
    }
    await v.play();
  }));
}"""
# Played means past the first frame; a loaded machine may take a while to get there.
ALL_PAST_THE_START = """() => [...document.querySelectorAll('video')].every(
  (v) => v.currentTime > 0 || v.error)"""
DESCRIBE_ALL = """() => [...document.querySelectorAll('video')].map((v) => (
  {src: v.getAttribute('src'), width: v.videoWidth, height: v.videoHeight,
   duration: v.duration, time: v.currentTime, error: v.error && v.error.code}))"""


def test_every_video_plays_in_chromium(
    chromium: Path,
    served: str,
    rendered_demo: tuple[Path, list[ResultRow]],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    _, results = rendered_demo
    expected = {Path(r.output).name: r for r in results if r.status in ("ok", "skipped")}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(served)
            page.evaluate(PLAY_ALL)
            page.wait_for_function(ALL_PAST_THE_START, timeout=60_000)
            played = page.evaluate(DESCRIBE_ALL)
            page.screenshot(path=str(tmp_path / "gallery.png"), full_page=True)
        finally:
            browser.close()
    assert {video["src"] for video in played} == set(expected)
    for video in played:
        row = expected[video["src"]]
        assert (video["width"], video["height"]) == (row.width, row.height)
        assert video["duration"] == pytest.approx(row.num_frames / row.fps, abs=0.2)
        assert video["time"] > 0
        assert video["error"] is None


def test_the_gallery_hides_flagged_videos_and_sorts_by_score_in_chromium(
    chromium: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    def scored(row_id: str, score: float, flags: tuple[str, ...] = ()) -> ResultRow:
        row = replace(ROW, id=row_id)
        output = f"/o/{row_id}.mp4"
        return ResultRow.for_row(row, "ok", "m", output=output, score=score, flags=flags)

    results = [scored("mid", 25.0), scored("low", 10.0, ("low_score",)), scored("top", 30.0)]
    page_file = tmp_path / "index.html"
    page_file.write_bytes(gallery_html(run_videos(results, "2026-12-06"), results, SUMMARY))
    shown = """() => [...document.querySelectorAll('figure')]
      .filter((figure) => figure.offsetParent !== null).map((figure) => figure.id)"""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            assert page.evaluate(shown) == ["top", "mid", "low"]
            page.check("#hide-flagged")
            assert page.evaluate(shown) == ["top", "mid"]
            page.uncheck("#hide-flagged")
            assert page.evaluate(shown) == ["top", "mid", "low"]
        finally:
            browser.close()


def test_thousands_of_videos_open_a_page_at_a_time_in_chromium(
    chromium: Path, tmp_path: Path
) -> None:
    # Only the shown page's cards hold players, and only their videos are fetched; sorting,
    # flags, hiding and start images work across pages.
    from playwright.sync_api import sync_playwright

    picture = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture)
    image = StartImage(str(picture), hashlib.sha256(picture.read_bytes()).hexdigest())
    clip = tmp_path / "clip.mp4"
    encode_mp4(np.zeros((2, 64, 64, 3), dtype=np.uint8) + 90, 8, clip)
    rows = []
    for n in range(2_000):
        row = replace(
            ROW, id=f"v{n:04}", prompt=f"<b>scene</b> {n}", image=image if n < 3 else None
        )
        flags = ("frozen",) if n % 4 == 0 else ()
        rows.append(
            ResultRow.for_row(row, "ok", "m", output=f"/o/v{n:04}.mp4", score=n / 10, flags=flags)
        )
        if n >= 1_950:  # the first page, sorted by score
            shutil.copyfile(clip, tmp_path / f"v{n:04}.mp4")
    videos = run_videos(rows, "day", store_start_images(LocalStorage(tmp_path), rows))
    (tmp_path / "index.html").write_bytes(gallery_html(videos, rows, SUMMARY))
    cards = """() => [...document.querySelectorAll('figure')].map((figure) => figure.id)"""
    best = [f"v{n:04}" for n in range(1_999, -1, -1)]
    unflagged = [name for name in best if int(name[1:]) % 4]
    with served_folder(tmp_path) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            fetched: list[str] = []
            page.on("request", lambda request: fetched.append(request.url.rsplit("/", 1)[-1]))
            page.goto(f"{url}/index.html")
            assert page.evaluate(cards) == best[:PAGE]
            assert page.locator("video").count() == PAGE
            page.locator("video").first.evaluate("(v) => v.play()")  # muted: allowed to play
            page.wait_for_function("() => document.querySelector('video').currentTime > 0")
            players = {name for name in fetched if name.endswith(".mp4")}
            assert f"{best[0]}.mp4" in players
            assert players <= {f"{name}.mp4" for name in best[:PAGE]}
            assert page.locator(".range").first.inner_text() == "videos 1–48 of 2000"
            caption = page.locator("figcaption b").first.evaluate("(b) => b.parentNode.textContent")
            assert caption == f"{best[0]} <b>scene</b> 1999"  # the user's text, as text

            page.locator(".next").last.click()
            assert page.evaluate(cards) == best[PAGE : 2 * PAGE]
            page.locator(".page").first.fill("42")
            page.locator(".page").first.dispatch_event("change")
            assert page.evaluate(cards) == best[41 * PAGE :]
            assert page.locator(".next").first.is_disabled()
            shown = page.locator("img[alt^='start image of']")
            assert shown.count() == 3
            page.wait_for_function(
                "() => [...document.querySelectorAll('img')].every((img) => img.naturalWidth)"
            )

            page.check("#hide-flagged")
            assert page.evaluate(cards) == unflagged[:PAGE]  # back to the first page
            assert page.locator(".range").last.inner_text() == "videos 1–48 of 1500"
            page.locator(".page").last.fill("32")
            page.locator(".page").last.dispatch_event("change")
            assert page.evaluate(cards) == unflagged[31 * PAGE :]
            page.uncheck("#hide-flagged")
            assert page.evaluate(cards) == best[:PAGE]
        finally:
            browser.close()


# Chromium counts the audio bytes it decoded; audioTracks is behind a flag.
HEARD = """() => [...document.querySelectorAll('video')].map((v) => (
  {muted: v.muted, time: v.currentTime, audio: v.webkitAudioDecodedByteCount,
   error: v.error && v.error.code}))"""


def test_a_video_with_sound_plays_its_sound_in_chromium(
    chromium: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "id,prompt,num_frames,height,width,num_inference_steps,fps\nkite,a red kite,17,64,96,2,8\n"
    )
    out = tmp_path / "out"
    done = t2v("render", str(manifest), "--model", "tiny-ltx2", "--out", str(out), env=cli_env)
    assert done.returncode == 0, done.stdout + done.stderr
    with served_folder(out) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(f"{url}/index.html")
            # A click is the user's gesture a browser asks for before playing sound.
            page.locator("video").click()
            page.evaluate(PLAY_ALL)
            page.wait_for_function(ALL_PAST_THE_START, timeout=60_000)
            page.wait_for_timeout(500)
            (heard,) = page.evaluate(HEARD)
        finally:
            browser.close()
    assert heard["error"] is None and heard["time"] > 0
    assert heard["muted"] is False
    assert heard["audio"] > 0
