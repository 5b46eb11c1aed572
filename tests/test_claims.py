"""Claims on output keys: the conditional writes under them on both backends, leases and
takeover, and two runs of one manifest into one destination rendering each row once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage import LocalStorage, S3Storage, Storage
from tasks.claims import Claims, Owner, claim_key
from tests.conftest import REPO

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


# A process that holds a claim, renewing it, until it is killed.
HOLDER = """
import sys, time
from storage import open_storage
from tasks.claims import Claims, Owner
owner = Owner("killed", "worker-k", "host-k", 0)
with Claims(open_storage(sys.argv[1]), owner, lease_s=float(sys.argv[3])) as claims:
    assert claims.claim(sys.argv[2])
    print("claimed", flush=True)
    time.sleep(600)
"""


def test_a_killed_owners_claim_is_taken_over_after_its_lease(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(dest), KEY, "1.0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "claimed\n"
        claims = Claims(LocalStorage(dest), owner("next"), lease_s=1.0)
        assert not claims.claim(KEY)
    finally:
        holder.kill()
        holder.wait()
    wait_until(lambda: claims.claim(KEY), 30, "the killed owner's claim to go stale")
    taken_from = claims.holder(KEY)
    assert taken_from is not None and taken_from.run == "killed"
