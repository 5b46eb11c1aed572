"""Storing videos create-only, and what publishing imports."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from storage import LocalStorage, StorageError, StoredObject, open_storage
from tasks.keys import output_key
from tasks.manifest import Manifest
from tasks.presets import resolve_model
from tasks.publish import (
    ALREADY_STORED,
    plan_outputs,
    publish_rendered,
    publish_video,
    write_results,
)
from tasks.render_call import RenderedVideo
from tasks.results import ResultRow
from tests.factories import ROW, SUMMARY, gallery_videos


def test_publish_video_writes_whole_file_and_reports_its_digest(tmp_path: Path) -> None:
    source = tmp_path / "scratch.mp4"
    source.write_bytes(b"\x00mp4 bytes" * 1000)
    storage = LocalStorage(tmp_path / "out")
    published = publish_video(storage, "clip-abc.mp4", source)
    assert published.output == str(tmp_path / "out" / "clip-abc.mp4")
    assert published.bytes == 10_000
    assert published.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".t2v", "clip-abc.mp4"]
    assert storage.stat("clip-abc.mp4") == StoredObject(
        10_000, True, {"t2v-bytes": "10000", "t2v-sha256": published.sha256}
    )


def test_an_exclusive_publish_keeps_the_video_already_there(tmp_path: Path) -> None:
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    storage = LocalStorage(tmp_path / "out")
    published = publish_video(storage, "clip-abc.mp4", first, exclusive=True)
    assert published is not None and published.sha256 == hashlib.sha256(b"first").hexdigest()
    assert publish_video(storage, "clip-abc.mp4", second, exclusive=True) is None
    assert storage.read_bytes("clip-abc.mp4") == b"first"


def test_publishing_does_not_import_torch() -> None:
    # The results manifest and uploads run where torch is not needed (and is slow to import).
    code = "import sys, tasks.publish; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _rendered(row_id: str) -> RenderedVideo:
    frames = np.full((2, 64, 64, 3), 90, np.uint8)
    return RenderedVideo(replace(ROW, id=row_id), frames, render_s=0.5)


def test_planning_skips_only_sound_videos_t2v_stored(tmp_path: Path) -> None:
    # Today anything at a key counted as a finished video: zero bytes, random bytes, a
    # link to /etc/hostname were `skipped`; a dangling link or a folder re-rendered each run.
    out = tmp_path / "out"
    ids = ["ours", "broken", "empty", "random", "link", "dangling", "folder", "new"]
    rows = [replace(ROW, id=row_id, line=n) for n, row_id in enumerate(ids, 1)]
    keys = {row.id: output_key(row, "tiny-random") for row in rows}
    stored = publish_rendered(
        str(out), _rendered("ours"), keys["ours"], "tiny-random", exclusive=True
    )
    publish_rendered(str(out), _rendered("broken"), keys["broken"], "tiny-random", exclusive=True)
    with (out / keys["broken"]).open("r+b") as video:
        video.truncate(100)
    (out / keys["empty"]).write_bytes(b"")
    (out / keys["random"]).write_bytes(bytes(range(256)) * 40)
    (out / keys["link"]).symlink_to("/etc/hostname")
    (out / keys["dangling"]).symlink_to(tmp_path / "gone.mp4")
    (out / keys["folder"]).mkdir()

    plan = plan_outputs(Manifest(rows, [], []), resolve_model("tiny-random"), str(out), force=False)
    assert [row.id for row in plan.to_render] == ["broken", "new"]
    done = {result.id: result for result in plan.done}
    skipped = done.pop("ours")
    assert (skipped.status, skipped.bytes, skipped.sha256) == (
        "skipped",
        stored.bytes,
        stored.sha256,
    )
    assert {row_id: result.status for row_id, result in done.items()} == dict.fromkeys(
        ["empty", "random", "link", "dangling", "folder"], "failed"
    )
    assert done["link"].error == (
        f"{out / keys['link']} holds a file, link or folder that t2v did not store: "
        "move it away and rerun (t2v never replaces it)"
    )
    forced = plan_outputs(
        Manifest(rows, [], []), resolve_model("tiny-random"), str(out), force=True
    )
    assert [row.id for row in forced.to_render] == ["ours", "broken", "new"]
    assert (out / keys["link"]).readlink() == Path("/etc/hostname")


def test_a_broken_video_t2v_stored_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    key = output_key(ROW, "m")
    publish_rendered(str(out), _rendered("clip"), key, "m", exclusive=True)
    (out / key).write_bytes((out / key).read_bytes()[:-10])  # the record stays
    result = publish_rendered(str(out), _rendered("clip"), key, "m", exclusive=True)
    assert result.status == "ok"
    assert (out / key).stat().st_size == result.bytes


def test_a_key_taken_while_rendering_is_skipped_or_failed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = publish_rendered(str(out), _rendered("clip"), "a.mp4", "m", exclusive=True)
    again = publish_rendered(str(out), _rendered("clip"), "a.mp4", "m", exclusive=True)
    assert (again.status, again.warning) == ("skipped", ALREADY_STORED)
    assert (again.bytes, again.sha256) == (first.bytes, first.sha256)
    (out / "b.mp4").write_bytes(b"someone else's")
    theirs = publish_rendered(str(out), _rendered("clip"), "b.mp4", "m", exclusive=True)
    assert theirs.status == "failed" and "t2v did not store" in theirs.error
    assert (out / "b.mp4").read_bytes() == b"someone else's"


def _ok(row_id: str) -> ResultRow:
    return ResultRow.for_row(replace(ROW, id=row_id), "ok", "m", output=f"/out/{row_id}.mp4")


def _store(out: str, rows: list[ResultRow]) -> list[ResultRow]:
    """Put a stand-in at each row's key: the gallery lists only videos DEST holds."""
    storage = open_storage(out)
    for row in rows:
        storage.write_bytes(f"{row.id}.mp4", b"video")
    return rows


def test_a_smaller_run_keeps_earlier_videos_in_the_gallery(tmp_path: Path) -> None:
    # A `--limit 1` run into the demo's folder replaced its 8-row gallery.
    out = str(tmp_path / "out")
    write_results(
        out, _store(out, [_ok(n) for n in "abc"]), [], replace(SUMMARY, finished_at="day 1")
    )
    write_results(out, _store(out, [_ok("d")]), [], replace(SUMMARY, finished_at="day 2"))
    page = (tmp_path / "out" / "index.html").read_text()
    assert [video["src"] for video in gallery_videos(page)] == [f"{n}.mp4" for n in "dabc"]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [row["id"] for row in rows] == ["d"]  # results describe this run's rows
    data = (tmp_path / "out" / "results.csv").read_bytes()
    assert [row["id"] for row in csv.DictReader(io.StringIO(data.decode("utf-8-sig")))] == ["d"]


@pytest.mark.parametrize("name", ["index.html", "results.csv", "results.json"])
def test_results_files_t2v_did_not_write_are_never_replaced(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"my own notes")
    with pytest.raises(StorageError, match=f"{out / name} was not written by t2v-batch: move"):
        write_results(str(out), [_ok("a")], [], SUMMARY)
    assert sorted(p.name for p in out.iterdir()) == [name]
    assert (out / name).read_bytes() == b"my own notes"


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_runs_writing_their_results_at_once_lose_no_video_from_the_gallery(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Two runs of one manifest into one DEST (each renders what it claims) finish together.
    if backend == "s3":
        out = f"s3://{request.getfixturevalue('s3_bucket')}/out"
    else:
        out = str(tmp_path / "out")
    runs = [_store(out, [_ok(f"run{r}-{n}") for n in range(3)]) for r in range(6)]
    barrier = threading.Barrier(len(runs))

    def finish(rows: list[ResultRow]) -> None:
        barrier.wait()
        write_results(out, rows, [], SUMMARY)

    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(finish, runs))
    storage = open_storage(out)
    recorded = json.loads(storage.read_bytes(".t2v/gallery.json"))["videos"]
    everyone = {row.id for rows in runs for row in rows}
    assert {video["id"] for video in recorded} == everyone
    page = storage.read_bytes("index.html").decode()
    assert {video["src"] for video in gallery_videos(page)} == {f"{n}.mp4" for n in everyone}


def test_a_flagged_video_is_stored_ok_with_its_flags_and_warning(tmp_path: Path) -> None:
    video = replace(_rendered("still"), flags=("uniform", "frozen"), warning="flagged frozen")
    result = publish_rendered(
        str(tmp_path), video, output_key(video.row, "tiny-random"), "tiny-random", exclusive=True
    )
    assert (result.status, result.flags, result.warning) == (
        "ok",
        "uniform frozen",
        "flagged frozen",
    )
    assert Path(result.output).is_file()
