"""The gallery's record of the videos t2v stored in DEST (`.t2v/gallery.json`), which
index.html shows (tasks/gallery_page.py).

It lists this run's videos first, then those of earlier runs still in DEST: a `--limit 1`
run into a folder of 8 videos still shows all 8, while results.csv/json describe this run's
rows only. A damaged record is kept aside and the list rebuilt from the last results.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from storage import Storage, StorageError
from tasks.images import thumbnail
from tasks.results import PARAMETER_COLUMNS, RESULTS_JSON, ResultRow

logger = logging.getLogger("t2v")

GALLERY_HTML = "index.html"
GALLERY_RECORD = ".t2v/gallery.json"
START_IMAGES = ".t2v/start-images"  # a thumbnail per start image, named by its sha256
VIDEO_FIELDS = ("id", "prompt", "negative_prompt", *PARAMETER_COLUMNS, "model", "worker", "audio")
# What the quality checks said of a video: known only from the run that rendered it, so a
# run that skips the video keeps what the record has.
QUALITY_FIELDS = ("flags", "score")

# Tries to merge into the record while other runs write it: each lost try means another
# run wrote it between this run's read and write, a few milliseconds apart.
RECORD_ATTEMPTS = 20

Video = dict[str, Any]


def run_videos(
    results: list[ResultRow], run: str, start_images: Mapping[str, str] | None = None
) -> list[Video]:
    """The videos of a run's `ok` and `skipped` rows, as the gallery lists them, each with
    the key of its start image's thumbnail in `start_images` (by the image's sha256); `run`
    dates those it rendered (a skipped one was stored by an earlier run: `merge_videos`
    dates it)."""
    shown = start_images or {}
    return [
        # Videos sit in DEST beside index.html: a video's key is its file name.
        {
            "key": r.output.rsplit("/", 1)[-1],
            "run": run if r.status == "ok" else None,
            **{f: getattr(r, f) for f in VIDEO_FIELDS},
            **({"start_image": shown[r.image_sha256]} if r.image_sha256 in shown else {}),
            **({f: getattr(r, f) for f in QUALITY_FIELDS} if r.status == "ok" else {}),
        }
        for r in results
        if r.status in ("ok", "skipped")
    ]


def store_start_images(storage: Storage, results: list[ResultRow]) -> dict[str, str]:
    """The key in DEST of a thumbnail of each start image of `results`' videos, by the
    image's sha256, stored once per image (one listing tells those stored by earlier runs):
    the image itself may live where the page cannot link. An image that cannot be read now,
    or is no longer the one rendered, has none."""
    images = {
        r.image_sha256: r.image for r in results if r.image_sha256 and r.status in ("ok", "skipped")
    }
    stored = set(storage.names(START_IMAGES)) if images else set()
    keys = {}
    for sha256, uri in images.items():
        name = f"{sha256}.jpg"
        if name not in stored:
            data = thumbnail(uri, sha256)
            if data is None:
                continue
            storage.write_bytes(f"{START_IMAGES}/{name}", data)
        keys[sha256] = f"{START_IMAGES}/{name}"
    return keys


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
    """Merge this run's videos into the record of every video in DEST, less those no longer
    there, and return them with the record's new version. A compare-and-swap: when another
    run wrote the record since it was read, read it again and merge again, so that no run's
    videos are lost."""
    for _ in range(RECORD_ATTEMPTS):
        current = storage.read_versioned(GALLERY_RECORD)
        data, expected = current if current is not None else (b"", None)
        earlier = _parse_record(data) if data else []
        if earlier is None:
            earlier = _set_aside(storage, data)
        # Listed after the record was read: every video it lists was stored before then.
        stored = set(storage.names(""))
        videos = merge_videos(newest, [video for video in earlier if video["key"] in stored])
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
    say so, and list instead the videos of DEST's last results.json."""
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
    return run_videos(rows, run, store_start_images(storage, rows))


def gallery_record(videos: list[Video]) -> bytes:
    document = {"generator": "t2v-batch", "videos": videos}
    return json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
