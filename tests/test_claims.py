"""Claims on output keys: the conditional writes under them on both backends, leases and
takeover, and two runs of one manifest into one destination rendering each row once."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tasks.claims
from flows import progress
from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from storage import LocalStorage, S3Storage, Storage
from tasks import interrupt
from tasks.claims import CLAIMS, Claims, Owner, claim_key
from tasks.encode import encode_mp4
from tasks.publish import ALREADY_STORED, publish_video
from tasks.results import ResultRow, RunSummary
from tests.conftest import REPO
from tests.devicefaults import UnetCall, unet_faults
from tests.factories import s3_claims, s3_versions, tiny_manifest
from tests.s3faults import injected, landed_then_dropped, s3_error

KEY = "clip-0123456789ab.mp4"


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A destination of each kind: a folder, and a prefix of a bucket on moto's server."""
    if request.param == "local":
        return LocalStorage(tmp_path / "dest")
    return S3Storage(request.getfixturevalue("s3_bucket"), "renders")


def owner(run: str) -> Owner:
    return Owner(run=run, worker=f"worker-{run}", host="test-host", pid=1)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


def test_write_if_creates_once_and_replaces_only_the_version_seen(storage: Storage) -> None:
    first = storage.write_if("a/claim.json", b"one", None)
    assert first is not None
    assert storage.write_if("a/claim.json", b"other", None) is None
    assert storage.read_versioned("a/claim.json") == (b"one", first)

    second = storage.write_if("a/claim.json", b"two", first)
    assert second is not None and second != first
    assert storage.write_if("a/claim.json", b"three", first) is None  # a stale version
    assert storage.read_versioned("a/claim.json") == (b"two", second)


def test_delete_if_deletes_only_the_version_seen(storage: Storage) -> None:
    first = storage.write_if("claim.json", b"one", None)
    assert first is not None
    second = storage.write_if("claim.json", b"two", first)
    assert second is not None
    assert not storage.delete_if("claim.json", first)
    assert storage.read_versioned("claim.json") == (b"two", second)
    assert storage.delete_if("claim.json", second)
    assert storage.read_versioned("claim.json") is None
    assert not storage.delete_if("claim.json", second)
    assert storage.write_if("claim.json", b"three", second) is None  # gone: nothing to replace


def test_of_threads_racing_to_create_one_object_exactly_one_wins(storage: Storage) -> None:
    writers = 8
    start = threading.Barrier(writers)

    def create(n: int) -> str | None:
        start.wait()
        return storage.write_if("claim.json", f"writer {n}".encode(), None)

    with ThreadPoolExecutor(writers) as pool:
        versions = list(pool.map(create, range(writers)))
    winners = [n for n, version in enumerate(versions) if version is not None]
    assert len(winners) == 1
    assert storage.read_versioned("claim.json") == (
        f"writer {winners[0]}".encode(),
        versions[winners[0]],
    )


# A process that waits for `go`, then tries to create the object; prints whether it did.
CREATOR = """
import os, sys, time
from storage import LocalStorage
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
print(LocalStorage(sys.argv[1]).write_if("claim.json", str(os.getpid()).encode(), None) is not None)
"""


def test_of_processes_racing_to_create_one_file_exactly_one_wins(tmp_path: Path) -> None:
    dest, go = tmp_path / "dest", tmp_path / "go"
    creators = [
        subprocess.Popen(
            [sys.executable, "-c", CREATOR, str(dest), str(go)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(6)
    ]
    time.sleep(0.5)  # most are waiting by now; any later one only races less
    go.touch()
    answers = [creator.communicate(timeout=60)[0].strip() for creator in creators]
    assert sorted(answers) == ["False"] * 5 + ["True"]
    winner = creators[answers.index("True")].pid
    assert (dest / "claim.json").read_text() == str(winner)


def test_a_claim_keeps_others_out_until_released(storage: Storage) -> None:
    mine, theirs = Claims(storage, owner("a")), Claims(storage, owner("b"))
    assert mine.claim(KEY)
    assert mine.claim(KEY)  # held already
    assert not theirs.claim(KEY)
    assert theirs.holder(KEY) == mine.owner
    record = json.loads(storage.read_bytes(claim_key(KEY)))
    assert record["owner"]["run"] == "a" and record["expires_at"] > time.time()

    mine.release(KEY)
    assert storage.read_versioned(claim_key(KEY)) is None
    assert theirs.claim(KEY)


def test_a_claim_nobody_renews_is_taken_over_after_a_lease(storage: Storage) -> None:
    # Outside `with`, nothing renews: the owner may as well be dead.
    dead = Claims(storage, owner("dead"), lease_s=0.5)
    alive = Claims(storage, owner("alive"), lease_s=0.5)
    assert dead.claim(KEY)
    assert not alive.claim(KEY)  # first seen now: live for a lease at least
    time.sleep(0.6)
    assert alive.claim(KEY)
    assert json.loads(storage.read_bytes(claim_key(KEY)))["owner"]["run"] == "alive"

    # The slow owner learns it lost the claim, and releasing leaves the new owner's alone.
    dead.renew()
    dead.release(KEY)
    assert json.loads(storage.read_bytes(claim_key(KEY)))["owner"]["run"] == "alive"


def test_a_renewed_claim_is_not_taken_over(storage: Storage) -> None:
    with Claims(storage, owner("a"), lease_s=1.5) as mine:
        assert mine.claim(KEY)
        theirs = Claims(storage, owner("b"), lease_s=1.5)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert not theirs.claim(KEY)
            time.sleep(0.2)
    # Leaving the `with` released it.
    assert storage.read_versioned(claim_key(KEY)) is None


@pytest.mark.parametrize("record", [b"not json", b'{"owner": "someone"}', None])
def test_a_claim_long_expired_or_unreadable_is_taken_at_once(
    storage: Storage, record: bytes | None
) -> None:
    if record is None:  # a well-formed claim whose owner died an hour ago
        left = {
            "owner": {"run": "old", "worker": "w", "host": "h", "pid": 1, "nonce": "x"},
            "expires_at": time.time() - 3600,
            "write": 9,
        }
        record = json.dumps(left).encode()
    storage.write_bytes(claim_key(KEY), record)
    assert Claims(storage, owner("new")).claim(KEY)


# A process that holds a claim, renewing it, until it is killed: as a process of another
# machine (`elsewhere`, under a lease of argv[4] s) or of this one (`here`, the full lease).
HOLDER = """
import sys, time
from storage import open_storage
from tasks.claims import Claims, Owner
if sys.argv[3] == "here":
    owner, lease = Owner.here("killed", "worker-k"), None
else:
    owner, lease = Owner("killed", "worker-k", "host-k", 0), float(sys.argv[4])
with Claims(open_storage(sys.argv[1]), owner, lease_s=lease) as claims:
    assert claims.claim(sys.argv[2])
    print("claimed", flush=True)
    time.sleep(600)
"""


def _holder(dest: Path, *where: str) -> subprocess.Popen[str]:
    """A process holding KEY's claim in `dest`, once it has it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(dest), KEY, *where],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "claimed\n"
    return holder


def test_a_killed_owners_claim_is_taken_over_after_its_lease(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    holder = _holder(dest, "elsewhere", "1.0")
    try:
        claims = Claims(LocalStorage(dest), owner("next"), lease_s=1.0)
        assert not claims.claim(KEY)
    finally:
        holder.kill()
        holder.wait()
    wait_until(lambda: claims.claim(KEY), 30, "the killed owner's claim to go stale")
    taken_from = claims.holder(KEY)
    assert taken_from is not None and taken_from.run == "killed"


def test_a_claim_whose_owner_died_on_this_machine_is_taken_over_at_once(tmp_path: Path) -> None:
    # `t2v render` killed with -9, then run again: the rerun need not wait out a lease.
    dest = tmp_path / "dest"
    holder = _holder(dest, "here")
    try:
        claims = Claims(LocalStorage(dest), Owner.here("next", "worker-n"))
        assert not claims.claim(KEY), "a live owner on this machine keeps its claim"
    finally:
        holder.kill()
        holder.wait()
    assert claims.claim(KEY), "its process is gone: taken over without waiting for the lease"
    taken_from = claims.holder(KEY)
    assert taken_from is not None and taken_from.run == "killed"
    # The same pid on another machine (or in another boot) says nothing about that owner.
    elsewhere = dataclasses.replace(taken_from, host="another-host")
    rebooted = dataclasses.replace(taken_from, boot="another-boot")
    assert not elsewhere.gone_from_here() and not rebooted.gone_from_here()
    assert taken_from.gone_from_here()


def test_a_live_owner_in_another_pid_namespace_keeps_its_claim(tmp_path: Path) -> None:
    # Pods with hostNetwork share the node's hostname and boot id, not its pids: a pid that
    # is free here may be a live process there.
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    dest, pid = tmp_path / "dest", 4_000_000  # beyond any pid of this namespace
    holder = subprocess.Popen(
        ["unshare", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount-proc",
         "sh", "-c", f'echo {pid} > /proc/sys/kernel/ns_last_pid && "$0" -c "$1" "$2" "$3" here',
         sys.executable, HOLDER, str(dest), KEY],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        if holder.stdout is None or holder.stdout.readline() != "claimed\n":
            pytest.skip("this kernel does not let an unprivileged user make a pid namespace")
        record = json.loads(LocalStorage(dest).read_bytes(claim_key(KEY)))
        assert record["owner"]["pid"] == pid + 1 and not Path(f"/proc/{pid + 1}").exists()
        claims = Claims(LocalStorage(dest), Owner.here("next", "worker-n"))
        assert not claims.claim(KEY), "its pid is not ours to judge: it waits for the lease"
    finally:
        holder.kill()
        holder.wait()


def test_a_reused_pid_does_not_keep_a_dead_owners_claim() -> None:
    me = Owner.here("run", "worker")
    assert not me.gone_from_here()
    # This very pid, started at another time: its owner is gone and the pid was reused.
    assert dataclasses.replace(me, started=me.started + 1).gone_from_here()
    # Recorded in another pid namespace: nothing about its pid can be judged from here.
    assert not dataclasses.replace(me, pid=4_000_001, pidns="pid:[1]").gone_from_here()


def _claim_record(owner: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"owner": owner, "expires_at": time.time() + 60, **fields}).encode()


def test_a_record_with_fields_from_a_newer_version_is_not_stale(storage: Storage) -> None:
    holder = owner("newer")
    newer = {**dataclasses.asdict(holder), "gpu": "H100", "labels": {"a": 1}}
    storage.write_bytes(claim_key(KEY), _claim_record(newer, format=2, priority=5))
    theirs = Claims(storage, owner("older"))
    assert not theirs.claim(KEY)
    assert theirs.holder(KEY) == holder


@pytest.mark.parametrize("pid", ["1234", 2**70, -5, True, None, 1.5])
def test_a_claim_whose_pid_cannot_be_a_process_is_stale(storage: Storage, pid: object) -> None:
    here = {**dataclasses.asdict(Owner.here("odd", "w")), "pid": pid}
    storage.write_bytes(claim_key(KEY), _claim_record(here))
    assert Claims(storage, owner("new")).claim(KEY)


def test_a_claim_whose_create_landed_but_whose_answer_was_lost_is_held(s3_bucket: str) -> None:
    # botocore retries the dropped PUT; the retry's If-None-Match finds the claim in place.
    store = S3Storage(s3_bucket, "renders")
    mine = Claims(store, owner("a"))

    def lose_the_first_answer(request: Any, path: str, attempt: int) -> None:
        if path.endswith(claim_key(KEY)) and attempt == 1:
            raise landed_then_dropped(request)

    started = time.monotonic()
    with injected("PutObject", lose_the_first_answer) as attempts:
        assert mine.claim(KEY), "its own claim, not another run's"
    assert time.monotonic() - started < 5, "no lease waited for"
    assert sum(attempts.values()) == 2
    assert mine.holder(KEY) is None
    mine.release(KEY)
    assert s3_claims(s3_bucket, "renders/") == []


def test_claim_io_is_retried_after_a_pause_when_storage_slows_down(s3_bucket: str) -> None:
    store = S3Storage(s3_bucket, "renders")

    def slow_down(request: Any, path: str, attempt: int) -> Any:
        if path.endswith(claim_key(KEY)) and attempt <= 3:  # every try of botocore's
            return s3_error(request, 503, "SlowDown", "Please reduce your request rate.")
        return None

    started = time.monotonic()
    with injected("PutObject", slow_down) as attempts:
        assert Claims(store, owner("a")).claim(KEY)
    assert sum(attempts.values()) == 4
    assert time.monotonic() - started >= 1.0  # the first pause of 1, 4 and 16 s


def test_a_claim_whose_renewals_keep_failing_is_given_up_as_lapsed(s3_bucket: str) -> None:
    store = S3Storage(s3_bucket, "renders")

    def refuse(request: Any, path: str, attempt: int) -> Any:
        if path.endswith(claim_key(KEY)):
            return s3_error(request, 503, "SlowDown", "Please reduce your request rate.")
        return None

    with Claims(store, owner("a"), lease_s=1.5) as mine:
        assert mine.claim(KEY) and mine.lapsed() == frozenset()
        with injected("PutObject", refuse):
            wait_until(lambda: KEY in mine.lapsed(), 10, "the claim to lapse")
        # Given up within its lease: before another run may take it over.
        record = json.loads(store.read_bytes(claim_key(KEY)))
        assert time.time() < record["expires_at"] + tasks.claims.CLOCK_TOLERANCE_S
        assert mine.claim(KEY), "claimed again once storage answers"
        assert mine.lapsed() == frozenset()


class RowsSeen:
    """A progress listener that keeps every row result of every run in this process."""

    def __init__(self) -> None:
        self.rows: list[ResultRow] = []
        self._lock = threading.Lock()

    def phase(self, text: str) -> None:
        """Only rows matter here."""

    def started(self, total_rows: int) -> None:
        """Only rows matter here."""

    def row_finished(self, result: ResultRow) -> None:
        with self._lock:
            self.rows.append(result)


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> float:
    """Leases of 2 s, so a waiting run looks again every third of a second."""
    monkeypatch.setattr(tasks.claims, "LEASE_S", 2.0)
    return 2.0


def _render_in_thread(request: RenderRequest) -> tuple[threading.Thread, list[Any]]:
    """Start `render-manifest` for `request` in a thread; the list gets its final state."""
    states: list[Any] = []
    thread = threading.Thread(
        target=lambda: states.append(render_manifest(**request.parameters(), return_state=True))
    )
    thread.start()
    return thread, states


def _results(folder: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in json.loads((folder / "results.json").read_text())["rows"]}


def _claims_left(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / CLAIMS).glob("*.json"))


@pytest.mark.usefixtures("prefect_api_url", "short_lease")
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_runs_of_one_manifest_render_each_row_once(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    rows = 6
    bucket = request.getfixturevalue("s3_bucket") if kind == "s3" else ""
    destination = f"s3://{bucket}/renders" if kind == "s3" else str(tmp_path / "out")
    render = RenderRequest(
        manifest=str(tiny_manifest(tmp_path, rows)), destination=destination, batch_size=1
    )
    seen, start = RowsSeen(), threading.Barrier(2)

    def run(_: int) -> RunSummary:
        start.wait()
        return render_manifest(**render.parameters())

    with progress.listening(seen), ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(run, range(2)))

    # A row rendered twice would be `ok` in one run and skipped as ALREADY_STORED in the
    # other (its PUT lost): each row is `ok` once, and every other result waited for it.
    assert sorted(r.id for r in seen.rows if r.status == "ok") == [f"clip-{n}" for n in range(rows)]
    assert sum(summary.counts["ok"] for summary in summaries) == rows
    others = [r for r in seen.rows if r.status != "ok"]
    assert len(others) == rows
    assert all(r.status == "skipped" and r.warning != ALREADY_STORED for r in others)
    if kind == "s3":
        videos = {
            key: n for key, n in s3_versions(bucket, "renders/").items() if key.endswith("mp4")
        }
        assert len(videos) == rows and set(videos.values()) == {1}
        assert s3_claims(bucket, "renders/") == []
    else:
        assert _claims_left(tmp_path / "out") == []


def _held_row_setup(tmp_path: Path) -> tuple[RenderRequest, LocalStorage, str, Path]:
    """Two rows, and a video of the first rendered elsewhere: the request into `out`, its
    storage, the first row's key, and that video."""
    manifest = tiny_manifest(tmp_path, 2)
    render_manifest(
        **RenderRequest(manifest=str(manifest), destination=str(tmp_path / "elsewhere"))
        .model_copy(update={"limit": 1})
        .parameters()
    )
    (video,) = (tmp_path / "elsewhere").glob("clip-0-*.mp4")
    request = RenderRequest(manifest=str(manifest), destination=str(tmp_path / "out"), batch_size=1)
    return request, LocalStorage(tmp_path / "out"), video.name, video


@pytest.mark.usefixtures("prefect_api_url", "short_lease")
def test_a_row_another_live_run_holds_is_skipped_once_that_run_stores_it(tmp_path: Path) -> None:
    request, out, key, video = _held_row_setup(tmp_path)
    other = Owner("other-run", "other-worker", "other-host", 7)
    with Claims(out, other) as theirs:
        assert theirs.claim(key)
        thread, states = _render_in_thread(request)
        # The run claims and renders the second row only after finding the first held.
        wait_until(lambda: any(out.root.glob("clip-1-*.mp4")), 120, "the second row's video")
        assert publish_video(out, key, video, exclusive=True) is not None
        theirs.release(key)
        thread.join(timeout=120)
    assert states and states[0].is_completed()
    results = _results(out.root)
    assert results["clip-0"]["status"] == "skipped"
    assert results["clip-0"]["warning"] == (
        "rendered by run other-run on worker other-worker (pid 7 on other-host) "
        "while this run waited for it"
    )
    assert results["clip-0"]["worker"] == "other-worker"
    assert results["clip-0"]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert results["clip-1"]["status"] == "ok"
    assert _claims_left(out.root) == []


@pytest.mark.usefixtures("prefect_api_url", "short_lease")
def test_a_row_whose_claim_lapses_without_a_video_is_rendered(tmp_path: Path) -> None:
    request, out, key, _ = _held_row_setup(tmp_path)
    # Claimed, then never renewed: its owner died after claiming.
    assert Claims(out, Owner("dead-run", "dead-worker", "h", 7), lease_s=2.0).claim(key)
    render_manifest(**request.parameters())
    results = _results(out.root)
    assert [results[f"clip-{n}"]["status"] for n in range(2)] == ["ok", "ok"]
    assert results["clip-0"]["warning"] == ""
    assert _claims_left(out.root) == []


@pytest.mark.usefixtures("prefect_api_url", "short_lease")
def test_a_stop_ends_the_wait_and_releases_the_runs_claims(tmp_path: Path) -> None:
    request, out, key, _ = _held_row_setup(tmp_path)
    try:
        with Claims(out, Owner("other-run", "other-worker", "h", 7)) as theirs:
            assert theirs.claim(key)
            thread, states = _render_in_thread(request)
            wait_until(lambda: any(out.root.glob("clip-1-*.mp4")), 120, "the second row's video")
            interrupt.request_stop("stop requested (test)")
            thread.join(timeout=60)
            assert not thread.is_alive()
            # Only the other run's claim is left.
            assert _claims_left(out.root) == [f"{key}.json"]
    finally:
        interrupt.clear()
    assert states and states[0].is_failed()
    results = _results(out.root)
    assert results["clip-0"]["status"] == "failed"
    assert results["clip-0"]["error"] == interrupt.INTERRUPTED
    assert results["clip-1"]["status"] == "ok"


@pytest.mark.usefixtures("prefect_api_url", "short_lease")
def test_a_row_whose_claim_lapses_while_it_renders_is_failed_not_stored(
    tmp_path: Path, s3_bucket: str, tiny_pipe: Any
) -> None:
    request = RenderRequest(
        manifest=str(tiny_manifest(tmp_path, 1)), destination=f"s3://{s3_bucket}/renders"
    )

    def refuse_renewals(request: Any, path: str, attempt: int) -> Any:
        if f"/{CLAIMS}/" in path and "If-Match" in request.headers:
            return s3_error(request, 503, "SlowDown", "Please reduce your request rate.")
        return None

    faults = contextlib.ExitStack()

    def outlast_the_lease(call: UnetCall) -> None:
        if call.step == 0:
            # The flow's own client (made as it starts) refuses renewals from now on.
            faults.enter_context(injected("PutObject", refuse_renewals))
            time.sleep(2.0 * 1.5)  # past the 2 s lease

    with faults, unet_faults(tiny_pipe, outlast_the_lease):
        state = render_manifest(**request.parameters(), return_state=True)
    assert state.is_failed()
    (row,) = json.loads(S3Storage(s3_bucket, "renders").read_bytes("results.json"))["rows"]
    assert row["status"] == "failed"
    assert re.fullmatch(
        r"the claim on clip-0-[0-9a-f]{12}\.mp4 lapsed .*; rerun to resume", row["error"]
    )
    videos = [key for key in s3_versions(s3_bucket, "renders/") if key.endswith(".mp4")]
    assert videos == [], "a row whose claim lapsed is not stored by this run"


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    encode_mp4(np.zeros((2, 64, 64, 3), dtype=np.uint8) + 90, 8, path)
    return path


def _left_claim(storage: Storage, key: str, holder: Owner, expires_at: float) -> None:
    record = {"owner": dataclasses.asdict(holder), "expires_at": expires_at, "write": 3}
    storage.write_bytes(claim_key(key), json.dumps(record).encode())


def test_a_rerun_removes_dead_runs_claims_on_stored_rows_and_nothing_else(
    storage: Storage, mp4: Path
) -> None:
    for key in (KEY, "live.mp4"):
        assert publish_video(storage, key, mp4, exclusive=True) is not None
    _left_claim(storage, KEY, owner("dead"), time.time() - 3600)
    _left_claim(storage, "unstored.mp4", owner("dead"), time.time() - 3600)
    _left_claim(storage, "live.mp4", owner("live"), time.time() + 60)
    storage.write_bytes(f"{CLAIMS}/readme.txt", b"someone's notes")
    with Claims(storage, owner("rerun")):
        pass
    assert storage.read_versioned(claim_key(KEY)) is None
    for left in (claim_key("unstored.mp4"), claim_key("live.mp4"), f"{CLAIMS}/readme.txt"):
        assert storage.read_versioned(left) is not None, left


def test_a_rerun_after_kill_9_leaves_no_claim_of_the_killed_run(tmp_path: Path, mp4: Path) -> None:
    dest = tmp_path / "dest"
    holder = _holder(dest, "here")
    holder.kill()
    holder.wait()
    storage = LocalStorage(dest)
    assert publish_video(storage, KEY, mp4, exclusive=True) is not None  # its video landed
    with Claims(storage, Owner.here("rerun", "worker-r")):
        pass
    assert _claims_left(dest) == []
