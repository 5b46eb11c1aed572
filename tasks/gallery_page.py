"""index.html: the gallery's page, its videos as one JSON blob that a script in the page
shows a page of cards at a time, so the file and the browser's work stay small with
thousands of videos."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import jinja2

from tasks.gallery import VIDEO_FIELDS, Video
from tasks.results import RESULTS_CSV, RESULTS_JSON, ResultRow, RunSummary, format_counts

# Cards the page shows at a time: a browser makes a player for each <video> it holds, and
# thousands of them made the page slow to open.
PAGE_SIZE = 48
# Each video is a row of these, in this order; `src` is its link from the page.
COLUMNS = ("src", *VIDEO_FIELDS, "run", "start_image", "flags", "score")
# Values most videos share (one model, a few workers and runs, start images used by many
# rows): each is written once, in `shared`, and a row holds its index there (null for none).
SHARED_COLUMNS = ("model", "worker", "run", "start_image")


@functools.cache
def _template() -> jinja2.Template:
    # Autoescaped: prompts, ids and errors are the user's text, shown as text; `tojson`
    # escapes <, > and & so that no text ends the script element holding the videos.
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tasks", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "ensure_ascii": False}
    return environment.get_template("gallery.html.j2")


def page_videos(videos: list[Video], link: Callable[[str], str]) -> dict[str, Any]:
    """The videos as the page's script reads them: `columns`, a row per video, `shared`."""
    shared: dict[str, int] = {}

    def cell(video: Video, column: str) -> Any:
        value = link(video["key"]) if column == "src" else video.get(column)
        if column == "start_image" and value and not value.startswith("data:"):
            value = link(value)  # a key in DEST; a record may also hold an embedded image
        if column in SHARED_COLUMNS:
            return shared.setdefault(value, len(shared)) if value else None
        return value

    rows = [[cell(video, column) for column in COLUMNS] for video in videos]
    return {
        "columns": COLUMNS,
        "shared_columns": SHARED_COLUMNS,
        "shared": list(shared),
        "videos": rows,
    }


def _by_score(video: Video) -> tuple[bool, float]:
    score = video.get("score")
    return score is None, -float(score or 0.0)


def gallery_html(
    videos: list[Video],
    results: list[ResultRow],
    summary: RunSummary,
    link: Callable[[str], str] = quote,
) -> bytes:
    """The page: every video, this run's counts, and this run's rows not rendered.

    `link` turns a key in DEST into the page's URL for it: by default the relative
    key, which works wherever index.html is served from beside the videos.
    """
    if any(video.get("score") is not None for video in videos):
        # Best first; unscored videos last, in the record's order.
        videos = sorted(videos, key=_by_score)
    page = _template().render(
        summary=summary,
        counts=format_counts(summary.counts),
        videos=page_videos(videos, link),
        page_size=PAGE_SIZE,
        flagged=sum(bool(video.get("flags")) for video in videos),
        problems=[r for r in results if r.status in ("failed", "invalid")],
        link=link,
        results_csv=RESULTS_CSV,
        results_json=RESULTS_JSON,
    )
    return page.encode("utf-8")
