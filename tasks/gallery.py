"""index.html: a self-contained page that plays every video, with its prompt and parameters."""

from __future__ import annotations

import functools
from collections.abc import Callable
from urllib.parse import quote

import jinja2

from tasks.results import RESULTS_CSV, RESULTS_JSON, ResultRow, RunSummary, format_counts

GALLERY_HTML = "index.html"


@functools.cache
def _template() -> jinja2.Template:
    # Autoescaped: prompts, ids and errors are the user's text, shown as text.
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tasks", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return environment.get_template("gallery.html.j2")


def gallery_html(
    results: list[ResultRow], summary: RunSummary, link: Callable[[str], str] = quote
) -> bytes:
    """The page for a run's results.

    `link` turns a key in DEST into the page's URL for it: by default the relative
    key, which works wherever index.html is served from beside the videos.
    """
    # Videos sit in DEST beside index.html: a video's key is its file name.
    videos = [
        {**vars(result), "key": result.output.rsplit("/", 1)[-1]}
        for result in results
        if result.status in ("ok", "skipped")
    ]
    page = _template().render(
        summary=summary,
        counts=format_counts(summary.counts),
        videos=videos,
        problems=[r for r in results if r.status in ("failed", "invalid")],
        link=link,
        results_csv=RESULTS_CSV,
        results_json=RESULTS_JSON,
    )
    return page.encode("utf-8")
