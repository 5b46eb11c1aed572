"""The real `t2v render` under faults: SIGKILL mid-run, two runs at once, writes that die.

Each test prints one `RELIABILITY` line with what it measured (rows lost, duplicate
writes, time to recover); `pytest -s` shows them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import imageio_ffmpeg
import pytest

from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from storage.s3 import s3_client
from tasks.publish import ALREADY_STORED
from tests.conftest import REPO
from tests.factories import T2V
from tests.mp4probe import probe_mp4

# Each test starts torch and Prefect in fresh processes: seconds apiece.
pytestmark = pytest.mark.slow

HEADER = "id,prompt,seed,num_frames,height,width,num_inference_steps,fps\n"


def _manifest(path: Path, rows: int, frames: int, steps: int | list[int]) -> Path:
    """`rows` rows; `steps` is every row's count, or each row's."""
    counts = steps if isinstance(steps, list) else [steps] * rows
    lines = [
        f"clip-{n},a tiny scene number {n},{n},{frames},64,64,{counts[n]},8\n" for n in range(rows)
    ]
    path.write_text(HEADER + "".join(lines))
    return path


class Destination(Protocol):
    uri: str

    def videos(self) -> dict[str, tuple[object, ...]]:
        """Each video's name and what changes when it is written again."""
        ...

    def fetch(self, name: str, into: Path) -> Path: ...

    def results(self) -> list[list[dict[str, str]]]:
        """Every results.csv the destination has kept, oldest first."""
        ...


class LocalDestination:
    def __init__(self, root: Path) -> None:
        self.root, self.uri = root, str(root)

    def videos(self) -> dict[str, tuple[object, ...]]:
        stats = {p.name: p.stat() for p in self.root.glob("*.mp4")} if self.root.is_dir() else {}
        return {name: (s.st_ino, s.st_mtime_ns, s.st_nlink) for name, s in stats.items()}

    def fetch(self, name: str, into: Path) -> Path:
        return self.root / name

    def results(self) -> list[list[dict[str, str]]]:
        path = self.root / "results.csv"
        return [list(csv.DictReader(path.open(encoding="utf-8-sig")))] if path.exists() else []

    def temporaries(self) -> list[str]:
        return [p.name for p in [*self.root.glob(".*.tmp"), *self.root.glob(".t2v/.*.tmp")]]


class S3Destination:
    """A versioned bucket: a video written twice would have two versions."""

    def __init__(self, bucket: str, prefix: str = "renders") -> None:
        self.bucket, self.prefix = bucket, prefix
        self.uri = f"s3://{bucket}/{prefix}"
        self._client: Any = None

    def client(self) -> Any:
        """One client for every poll: a new one costs a busy machine a second or more."""
        if self._client is None:
            self._client = s3_client()
        return self._client

    def videos(self) -> dict[str, tuple[object, ...]]:
        pages = (
            self.client()
            .get_paginator("list_object_versions")
            .paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/")
        )
        found: dict[str, tuple[object, ...]] = {}
        for page in pages:
            for version in page.get("Versions", []):
                name = version["Key"].rsplit("/", 1)[-1]
                if name.endswith(".mp4"):
                    found[name] = (*found.get(name, ()), version["VersionId"])
        return found

    def fetch(self, name: str, into: Path) -> Path:
        key = f"{self.prefix}/{name}"
        (into / name).write_bytes(
            self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        )
        return into / name

    def results(self) -> list[list[dict[str, str]]]:
        key = f"{self.prefix}/results.csv"
        listed = self.client().list_object_versions(Bucket=self.bucket, Prefix=key)
        versions = sorted(listed.get("Versions", []), key=lambda v: v["LastModified"])
        return [
            list(csv.DictReader(io.StringIO(self._read(key, v["VersionId"])))) for v in versions
        ]

    def _read(self, key: str, version: str) -> str:
        body = self.client().get_object(Bucket=self.bucket, Key=key, VersionId=version)["Body"]
        return str(body.read().decode("utf-8-sig"))


@pytest.fixture(params=["local", "s3"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Destination:
    if request.param == "local":
        return LocalDestination(tmp_path / "out")
    return S3Destination(request.getfixturevalue("s3_bucket"))


@pytest.fixture
def env(
    request: pytest.FixtureRequest, cli_env: dict[str, str], destination: Destination
) -> dict[str, str]:
    """The `t2v` subprocess's environment: the session's Prefect and S3 servers."""
    if isinstance(destination, S3Destination):
        return {**cli_env, **request.getfixturevalue("s3_env")}
    return cli_env


def _start_render(
    manifest: Path,
    destination: Destination,
    env: dict[str, str],
    *options: str,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*T2V, "render", str(manifest), "--model", "tiny-random", "--out", destination.uri,
         *options],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=preexec_fn,
    )  # fmt: skip


def _finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[str, str]:
    """Its output once it exits; whatever is left of its process group is killed."""
    try:
        return process.communicate(timeout=timeout)
    finally:
        _kill_group(process)


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _rewrites(before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]) -> int:
    """Writes beyond the first: extra S3 versions, and local files that changed since `before`."""
    extra_versions = sum(len(f) - 1 for f in after.values() if not isinstance(f[0], int))
    return extra_versions + sum(after[name] != before[name] for name in before)


def _counts(stdout: str) -> dict[str, int]:
    """The summary line's counts: `8 rows: 5 ok, 3 skipped, 0 failed, 0 invalid in …`."""
    return {
        status: int(n) for n, status in re.findall(r"(\d+) (ok|skipped|failed|invalid)", stdout)
    }


def test_a_run_killed_mid_way_resumes_without_rewriting_a_video(
    destination: Destination, env: dict[str, str], tmp_path: Path
) -> None:
    rows, frames = 6, 8
    # ~0.4 s for each of the first two rows, seconds for each of the rest: the kill lands
    # mid-run even when a busy machine is slow to see the second video.
    steps = [6, 6, 40, 40, 40, 40]
    manifest = _manifest(tmp_path / "m.csv", rows, frames, steps)
    first = _start_render(manifest, destination, env, "--batch-size", "1")
    try:
        deadline = time.monotonic() + 240
        while len(destination.videos()) < 2:
            assert first.poll() is None, f"exited before the kill: {_finish(first)}"
            assert time.monotonic() < deadline, "no second video within 240 s"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        _kill_group(first)
    assert first.returncode == -signal.SIGKILL
    survivors = destination.videos()
    assert 2 <= len(survivors) < rows, "the kill did not land mid-run"
    assert destination.results() == []  # the run never got to its results manifest
    for name in survivors:  # no half video under any final key
        assert probe_mp4(destination.fetch(name, tmp_path)).frame_count == frames

    # The rerun is the same flow in this process: its wall time is the time to recover,
    # without the seconds a fresh interpreter spends importing torch and Prefect.
    started = time.monotonic()
    summary = render_manifest(
        **RenderRequest(manifest=str(manifest), destination=destination.uri).parameters()
    )
    recover_s = time.monotonic() - started

    kept = len(survivors)
    assert summary.counts == {"ok": rows - kept, "skipped": kept, "failed": 0, "invalid": 0}
    [results] = destination.results()
    assert [row["id"] for row in results] == [f"clip-{n}" for n in range(rows)]
    for row in results:
        name = row["output"].rsplit("/", 1)[-1]
        assert row["status"] == ("skipped" if name in survivors else "ok"), row
    after = destination.videos()
    assert len(after) == rows
    duplicates = _rewrites(survivors, after)
    assert duplicates == 0
    lost = rows - sum(row["status"] in ("ok", "skipped") for row in results)
    assert lost == 0
    print(
        f"\nRELIABILITY killed-mid-run {type(destination).__name__}: n={rows} k={kept} "
        f"lost={lost} duplicates={duplicates} recover_s={recover_s:.1f} "
        f"scratch_left={len(list(tmp_path.glob('t2v-encode-*')))}"
    )


def test_two_runs_at_once_write_every_video_once(
    destination: Destination, env: dict[str, str], tmp_path: Path
) -> None:
    rows = 6
    manifest = _manifest(tmp_path / "m.csv", rows, frames=4, steps=2)
    runs = [_start_render(manifest, destination, env, "--batch-size", "1") for _ in range(2)]
    outputs = [_finish(run) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], [stderr for _, stderr in outputs]
    counts = [_counts(stdout) for stdout, _ in outputs]
    assert all(c["ok"] + c["skipped"] == rows and c["failed"] == 0 for c in counts), counts
    assert counts[0]["ok"] + counts[1]["ok"] == rows  # each video created by one run
    videos = destination.videos()
    assert len(videos) == rows
    duplicates = _rewrites({}, videos)
    assert duplicates == 0
    manifests = destination.results()  # S3 keeps both runs' results.csv, a folder the last
    assert len(manifests) == (2 if isinstance(destination, S3Destination) else 1)
    for results in manifests:
        assert [row["id"] for row in results] == [f"clip-{n}" for n in range(rows)]
        assert {row["status"] for row in results} <= {"ok", "skipped"}
        assert {row["output"].rsplit("/", 1)[-1] for row in results} == set(videos)
    # Claims keep each run off the rows the other holds: no render is thrown away.
    raced = sum(row["warning"] == ALREADY_STORED for results in manifests for row in results)
    assert raced == 0
    if isinstance(destination, LocalDestination):
        assert destination.temporaries() == []
        assert all(nlink == 1 for _, _, nlink in videos.values())
    lost = rows - sum(row["status"] in ("ok", "skipped") for row in manifests[-1])
    print(
        f"\nRELIABILITY two-runs-at-once {type(destination).__name__}: n={rows} "
        f"ok={counts[0]['ok']}+{counts[1]['ok']} lost={lost} duplicates={duplicates} "
        f"lost_races={raced}"
    )


FILE_SIZE_LIMIT = 40_000  # bytes: above the small videos and the results, below the big ones


def _limit_file_size() -> None:
    # Soft limit only: a child may lift it again, as the ffmpeg wrapper below does.
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, resource.RLIM_INFINITY))


def test_an_encode_or_a_copy_that_dies_mid_file_fails_only_its_row(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Under RLIMIT_FSIZE the kernel kills ffmpeg (SIGXFSZ) when its output outgrows the
    # limit; for `upload-dies` a wrapper lifts the limit for ffmpeg only, so the encode
    # succeeds and the copy into the destination fails mid-file (EFBIG) instead.
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *upload-dies-*) ulimit -f unlimited ;; esac\n'
        f'exec {imageio_ffmpeg.get_ffmpeg_exe()} "$@"\n'
    )
    wrapper.chmod(0o755)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        HEADER
        + "clip-0,a tiny scene,0,4,64,64,2,8\n"
        + "encode-dies,a bigger scene,1,8,128,128,2,8\n"
        + "upload-dies,a bigger scene,2,8,128,128,2,8\n"
        + "clip-1,a tiny scene,3,4,64,64,2,8\n"
    )
    out = LocalDestination(tmp_path / "out")
    run = _start_render(
        manifest, out, {**cli_env, "IMAGEIO_FFMPEG_EXE": str(wrapper)},
        preexec_fn=_limit_file_size,
    )  # fmt: skip
    stdout, stderr = _finish(run)

    assert run.returncode == 1, stderr
    assert _counts(stdout) == {"ok": 2, "skipped": 0, "failed": 2, "invalid": 0}
    [results] = out.results()
    by_id = {row["id"]: row for row in results}
    assert [by_id[id]["status"] for id in ("clip-0", "clip-1")] == ["ok", "ok"]
    encode, upload = by_id["encode-dies"], by_id["upload-dies"]
    assert (encode["status"], encode["output"]) == ("failed", "")
    assert re.fullmatch(
        r"ffmpeg could not encode 128×128 frames to .*/encode-dies-[0-9a-f]{12}\.mp4: "
        r"ffmpeg was killed by SIGXFSZ \(its output outgrew the file size limit\)",
        encode["error"],
    ), encode["error"]
    assert (upload["status"], upload["output"]) == ("failed", "")
    assert re.fullmatch(
        rf"cannot write {out.root}/upload-dies-[0-9a-f]{{12}}\.mp4: File too large",
        upload["error"],
    ), upload["error"]
    # Nothing partial under a final key, and no temporary left behind.
    assert sorted(out.videos()) == sorted(
        Path(by_id[id]["output"]).name for id in ("clip-0", "clip-1")
    )
    assert out.temporaries() == []
    assert sorted(p.name for p in out.root.iterdir() if not p.name.endswith(".mp4")) == [
        ".t2v", "index.html", "results.csv", "results.json"
    ]  # fmt: skip
    print("\nRELIABILITY write-dies-mid-file: n=4 failed=2 lost=0 duplicates=0")
