"""The gallery plays every video in a real browser: Debian's Chromium through Playwright."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.publish import ResultRow
from tests.conftest import CHROMIUM_FLAGS
from tests.factories import t2v

pytestmark = pytest.mark.slow


@pytest.fixture
def served(rendered_demo: tuple[Path, list[ResultRow]]) -> Iterator[str]:
    """The destination folder over HTTP on a free loopback port, stopped afterwards."""
    folder, _ = rendered_demo
    yield from serve(folder)


def serve(folder: Path) -> Iterator[str]:
    """`folder`'s index.html over HTTP on a free loopback port, stopped afterwards."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


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

    from tasks.gallery import gallery_html, run_videos
    from tests.factories import ROW, SUMMARY

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
    for url in serve(out):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(url)
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
