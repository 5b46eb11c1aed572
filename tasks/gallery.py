"""index.html: a self-contained page that plays every video t2v recorded in DEST.

The page lists this run's videos first, then those of earlier runs, from a record
t2v keeps beside them (`.t2v/gallery.json`): a `--limit 1` run into a folder of 8
videos still shows all 8, while results.csv/json describe this run's rows only. A damaged
record is kept aside and the list rebuilt from the last results.json's stored videos.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import jinja2

from storage import Storage, StorageError
from tasks.images import thumbnail
from tasks.results import (
    PARAMETER_COLUMNS,
    RESULTS_CSV,
    RESULTS_JSON,
    ResultRow,
    RunSummary,
    format_counts,
)
from tasks.stored import inspect_key

logger = logging.getLogger("t2v")

GALLERY_HTML = "index.html"
GALLERY_RECORD = ".t2v/gallery.json"
VIDEO_FIELDS = ("id", "prompt", "negative_prompt", *PARAMETER_COLUMNS, "model", "worker", "audio")
# What the quality checks said of a video: known only from the run that rendered it, so a
# run that skips the video keeps what the record has.
QUALITY_FIELDS = ("flags", "score")

# Tries to merge into the record while other runs write it: each lost try means another
# run wrote it between this run's read and write, a few milliseconds apart.
RECORD_ATTEMPTS = 20

Video = dict[str, Any]


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


def run_videos(results: list[ResultRow], run: str) -> list[Video]:
    """The videos of a run's `ok` and `skipped` rows, as the gallery lists them, each with
    its start image embedded (a start image may live where the page cannot link); `run`
    dates those it rendered (a skipped one was stored by an earlier run: `merge_videos`
    dates it)."""
    shown = functools.cache(thumbnail)
    return [
        # Videos sit in DEST beside index.html: a video's key is its file name.
        {
            "key": r.output.rsplit("/", 1)[-1],
            "run": run if r.status == "ok" else None,
            **{f: getattr(r, f) for f in VIDEO_FIELDS},
            **({"start_image": shown(r.image, r.image_sha256)} if r.image_sha256 else {}),
            **({f: getattr(r, f) for f in QUALITY_FIELDS} if r.status == "ok" else {}),
        }
        for r in results
        if r.status in ("ok", "skipped")
    ]


def merge_videos(newest: list[Video], earlier: list[Video]) -> list[Video]:
    """This run's videos first, over what the record had of them, then earlier runs' that
    this run did not list again; a video this run skipped keeps the date the record holds
    for it, when it was stored."""
    recorded = {video["key"]: video for video in earlier}
    keys = {video["key"] for video in newest}
    return [
        *(_over(recorded.get(video["key"], {}), video) for video in newest),
        *(video for video in earlier if video["key"] not in keys),
    ]


def _over(recorded: Video, video: Video) -> Video:
    """`video` over the record's entry for it, dated by the record when this run did not."""
    return {**recorded, **video, "run": video["run"] or recorded.get("run")}


def record_videos(storage: Storage, newest: list[Video]) -> tuple[list[Video], str]:
    """Merge this run's videos into the record of every video in DEST, and return them with
    the record's new version. A compare-and-swap: when another run wrote the record since
    it was read, read it again and merge again, so that no run's videos are lost."""
    for _ in range(RECORD_ATTEMPTS):
        current = storage.read_versioned(GALLERY_RECORD)
        data, expected = current if current is not None else (b"", None)
        earlier = _parse_record(data) if data else []
        if earlier is None:
            earlier = _set_aside(storage, data)
        videos = merge_videos(newest, earlier)
        version = storage.write_if(GALLERY_RECORD, gallery_record(videos), expected)
        if version is not None:
            return videos, version
    raise StorageError(
        f"cannot update {storage.uri(GALLERY_RECORD)}: other runs wrote it {RECORD_ATTEMPTS} "
        "times while this run merged its videos into it",
        retryable=True,
    )


def videos_since(storage: Storage, version: str) -> tuple[list[Video], str] | None:
    """Every recorded video and the record's version, if a run has written the record
    since `version`; None if it has not."""
    current = storage.read_versioned(GALLERY_RECORD)
    if current is None or current[1] == version:
        return None
    return _parse_record(current[0]) or [], current[1]


def _parse_record(data: bytes) -> list[Video] | None:
    """The videos in a record; None for a damaged one."""
    try:
        videos = json.loads(data)["videos"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(videos, list):
        return None
    return [v for v in videos if isinstance(v, dict) and isinstance(v.get("key"), str)]


def _set_aside(storage: Storage, damaged: bytes) -> list[Video]:
    """Keep a damaged record beside it (named by its digest, so a retry keeps one copy),
    say so, and list instead the videos of DEST's last results.json that are still stored."""
    aside = f"{GALLERY_RECORD}.damaged-{hashlib.sha256(damaged).hexdigest()[:12]}"
    storage.write_bytes(aside, damaged)
    logger.warning(
        "%s was damaged: kept as %s; the gallery lists this run's videos and those of the "
        "last results.json still stored",
        storage.uri(GALLERY_RECORD),
        storage.uri(aside),
    )
    try:
        document = json.loads(storage.read_bytes(RESULTS_JSON))
        fields = {field.name for field in dataclasses.fields(ResultRow)}
        rows = [ResultRow(**{k: v for k, v in r.items() if k in fields}) for r in document["rows"]]
        run = str(document["summary"]["finished_at"])
    except (StorageError, ValueError, KeyError, TypeError, AttributeError):
        return []  # none, or not one t2v can read: this run's videos make a valid record
    return [
        video
        for video in run_videos(rows, run)
        if inspect_key(storage, video["key"]).state == "video"
    ]


def _by_score(video: Video) -> tuple[bool, float]:
    score = video.get("score")
    return score is None, -float(score or 0.0)


def gallery_record(videos: list[Video]) -> bytes:
    document = {"generator": "t2v-batch", "videos": videos}
    return json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"


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
        videos=videos,
        flagged=sum(bool(video.get("flags")) for video in videos),
        problems=[r for r in results if r.status in ("failed", "invalid")],
        link=link,
        results_csv=RESULTS_CSV,
        results_json=RESULTS_JSON,
    )
    return page.encode("utf-8")
