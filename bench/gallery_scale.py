"""How the gallery scales with the videos in DEST: the time to write index.html after a run,
its size, and the time Chromium takes to open it and show the first page of players.

    python -m bench.gallery_scale          # updates its section of bench/RESULTS.md
    python -m bench.gallery_scale --videos 100 1000 --no-write

Needs Debian's Chromium (`make browser`) and Playwright (a test dependency).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.report import environment, markdown_table, publish_section
from tasks.encode import encode_mp4
from tasks.gallery import GALLERY_RECORD
from tasks.gallery_page import PAGE_SIZE, gallery_html
from tasks.manifest import RenderRow
from tasks.publish import write_results
from tasks.results import ResultRow, summarize

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
PROMPT = "a red fox running through fresh snow at dawn, cinematic lighting, scene {n}"
# The first page is shown: as many cards as it holds, each player past its video's metadata.
PLAYERS_READY = """(cards) => document.querySelectorAll('figure').length === cards &&
  [...document.querySelectorAll('video')].every((v) => v.readyState >= 1)"""
# The page's script runs as the document is parsed: its cards are there by this time.
PARSED_MS = "() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"


@dataclass(frozen=True)
class Opened:
    parsed_s: float  # from navigation to the document parsed, the first page's cards in it
    players_s: float  # … to each of their players holding its video's metadata
    heap_mib: float  # the page's JavaScript heap then
    players: int  # <video> elements in the document
    fetched: int  # MP4s the browser asked for


@dataclass(frozen=True)
class Measured:
    videos: int
    write_s: float  # write_results of a one-row run into DEST: record, listing, page, files
    page_s: float  # gallery_html alone
    html_bytes: int
    bytes_per_video: float  # beyond the page with no video
    opened: Opened  # in Chromium


def result_row(n: int) -> ResultRow:
    row = RenderRow(
        line=n + 1, id=f"clip-{n:05}", prompt=PROMPT.format(n=n), negative_prompt="blurry",
        seed=1_000_000 + n, num_frames=16, height=256, width=256, num_inference_steps=25,
        guidance_scale=9.0, fps=8,
    )  # fmt: skip
    flags = ("frozen",) if n % 10 == 0 else ()
    result = ResultRow.for_row(
        row, "ok", "ms-1.7b", output=video_key(n), score=20 + n % 97 / 10, flags=flags
    )
    return replace(result, worker=f"gpu-node-{n % 4}")


def video_key(n: int) -> str:
    """A key as t2v names its videos: the row's id and 12 hex digits of a hash."""
    return f"clip-{n:05}-{hashlib.sha256(str(n).encode()).hexdigest()[:12]}.mp4"


def fill_destination(folder: Path, videos: int) -> None:
    """DEST after earlier runs stored `videos - 1` videos (one small MP4, hard-linked), and
    the video of the run whose results are then written."""
    clip = folder.parent / f"{folder.name}.mp4"
    encode_mp4(np.zeros((2, 64, 64, 3), dtype=np.uint8) + 90, 8, clip)
    folder.mkdir()
    for n in range(videos):
        os.link(clip, folder / video_key(n))
    earlier = [result_row(n) for n in range(1, videos)]
    write_results(str(folder), earlier, [], summarize(earlier, "ms-1.7b", "cuda", str(folder), 0))


def measure(videos: int, scratch: Path, repeats: int) -> Measured:
    folder = scratch / f"dest-{videos}"
    fill_destination(folder, videos)
    run = [result_row(0)]
    writes = []
    for _ in range(repeats):
        started = time.perf_counter()
        write_results(str(folder), run, [], summarize(run, "ms-1.7b", "cuda", str(folder), 0))
        writes.append(time.perf_counter() - started)
    recorded = json.loads((folder / GALLERY_RECORD).read_bytes())["videos"]
    summary = summarize(run, "ms-1.7b", "cuda", str(folder), 0)
    pages = []
    for _ in range(repeats):
        started = time.perf_counter()
        gallery_html(recorded, run, summary)
        pages.append(time.perf_counter() - started)
    html_bytes = (folder / "index.html").stat().st_size
    empty = len(gallery_html([], run, summary))
    opened = open_in_chromium(folder, min(videos, PAGE_SIZE), repeats)
    return Measured(
        videos=videos,
        write_s=min(writes),
        page_s=min(pages),
        html_bytes=html_bytes,
        bytes_per_video=(html_bytes - empty) / videos,
        opened=opened,
    )


def open_in_chromium(folder: Path, cards: int, repeats: int) -> Opened:
    """The fastest of `repeats` fresh pages opening the gallery over loopback HTTP."""
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    with served_folder(folder) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        try:
            runs = [open_once(browser, f"{url}/index.html", cards) for _ in range(repeats)]
        finally:
            browser.close()
    return min(runs, key=lambda run: run.players_s)


def open_once(browser: Browser, url: str, cards: int) -> Opened:
    page = browser.new_page()
    fetched: set[str] = set()
    page.on("request", lambda request: fetched.add(request.url))
    started = time.perf_counter()
    page.goto(url, wait_until="commit")  # not "load": players delay it
    page.wait_for_function(PLAYERS_READY, arg=cards, timeout=120_000)
    players_s = time.perf_counter() - started
    opened = Opened(
        parsed_s=page.evaluate(PARSED_MS) / 1000,
        players_s=players_s,
        heap_mib=page.evaluate("() => performance.memory.usedJSHeapSize") / 2**20,
        players=page.locator("video").count(),
        fetched=sum(address.endswith(".mp4") for address in fetched),
    )
    page.close()
    return opened


@contextmanager
def served_folder(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on a free loopback port, as a browser opens a gallery; stopped
    afterwards. Yields its address."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def section(results: Sequence[Measured], load: str) -> str:
    rows = [
        [
            f"{m.videos:,}", f"{m.write_s:.3f}", f"{m.page_s * 1000:.1f}",
            f"{m.html_bytes / 1024:,.0f}", f"{m.bytes_per_video:.0f}", f"{m.opened.parsed_s:.2f}",
            f"{m.opened.players_s:.2f}", f"{m.opened.heap_mib:.1f}",
            f"{m.opened.players}", f"{m.opened.fetched}",
        ]
        for m in results
    ]  # fmt: skip
    table = markdown_table(
        [
            "videos in DEST", "write s", "page ms", "index.html KiB", "bytes per video",
            "page parsed s", "players ready s", "JS heap MiB", "players", "MP4s fetched",
        ],
        rows,
    )  # fmt: skip
    return (
        "## Gallery: index.html over thousands of videos (measured)\n\n"
        f"{environment('CPU (2 cores shared with other work)')} Load average at the start: "
        f"{load}.\n\n{table}\n"
        "DEST holds that many videos, one small MP4 hard-linked, and the gallery's record of "
        "them; prompts of ~75 characters, one video in ten flagged, all scored. *write s*: "
        "`write_results` of a one-row run into that DEST, which reads the record, lists DEST "
        "once, merges, and writes the record, results.csv/json and index.html; *page ms*: "
        "rendering index.html alone. *bytes per video*: index.html's size beyond a page "
        "with no video, divided by the videos (the prompt and id included). *page parsed s*: from "
        "navigation (headless Debian Chromium, the folder served on loopback) to the end of "
        "DOMContentLoaded, when the page's script has put the first page's "
        f"{PAGE_SIZE} cards in the document; *players ready s*: to each of their players "
        "holding its video's metadata (wall time, Playwright's polling included); JS heap "
        "then. Times are the fastest of the "
        "repeats. The page is one JSON blob "
        "of the videos, and its script keeps one page of cards, so of players, in the "
        "document: the browser makes and feeds players for that page only.\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each size (fastest kept)")
    parser.add_argument("--no-write", action="store_true", help="print instead of updating")
    args = parser.parse_args(argv)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="t2v-bench-gallery-") as scratch:
        results = [measure(videos, Path(scratch), args.repeats) for videos in args.videos]
    publish_section("gallery_scale", section(results, load), print_only=args.no_write)


if __name__ == "__main__":
    main()
