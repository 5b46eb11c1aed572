"""Claims: which run renders an output key now, so that two runs of one manifest into one
destination do not both render a row.

A claim is a small record at `DEST/.t2v/claims/<output key>.json`, created only where none
exists (as videos are), naming its owner and when its lease ends. The owner renews it every
third of a lease while it lives and deletes it once the row's video is stored or the row
failed. A claim nobody renews is stale and another run takes it over by replacing exactly
the version it saw, so of several runs that find one stale claim, one gets it.

Stale, by three rules: its owner ran on this machine, in this boot and pid namespace, and
its process is gone or its pid now names a process started at another time (`kill -9`,
then a rerun), its recorded expiry is more than CLOCK_TOLERANCE_S in this machine's
past (a claim left long ago is taken at once; the clocks of the machines must agree within
that tolerance), or, comparing no clocks at all, this process has seen the same version of
it for a whole lease (its owner renews three times a lease, each renewal a new version).
A record t2v cannot read is stale; fields it does not know (a newer version's) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from storage import Storage, StorageError
from tasks.manifest import RenderRow
from tasks.publish import OutputPlan
from tasks.results import ResultRow
from tasks.stored import inspect_key

logger = logging.getLogger("t2v")

CLAIMS = ".t2v/claims"
# A killed worker's rows wait at most about this long (plus a poll) for another run.
LEASE_S = 60.0
CLOCK_TOLERANCE_S = 10.0
# Tries at a claim whose record changes under us (released, taken, renewed) before the
# row counts as held and is tried again after the next wait.
ATTEMPTS = 3


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: a run in a process; `nonce` tells apart two holders in one run.
    Its pid means something only in its machine's boot (`boot`) and pid namespace (`pidns`:
    containers sharing a host's name and boot have their own), and names this process only
    while the process started then (`started`, in clock ticks after boot) runs."""

    run: str
    worker: str
    host: str
    pid: int
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)
    boot: str = ""
    pidns: str = ""
    started: int = 0

    @classmethod
    def here(cls, run: str, worker: str) -> Owner:
        """This process, in run `run` on worker `worker`."""
        pidns, started = _this_process()
        return cls(
            run,
            worker,
            socket.gethostname(),
            os.getpid(),
            boot=_boot_id(),
            pidns=pidns,
            started=started,
        )

    def gone_from_here(self) -> bool:
        """Whether this owner ran on this machine, in this boot and pid namespace, and its
        process is gone: its claims are stale now, not a lease from now (a rerun after
        `kill -9`). Where any of these is unknown, nothing is judged."""
        recorded = (self.host, self.boot, self.pidns)
        here = (socket.gethostname(), _boot_id(), _this_process()[0])
        if not (self.boot and self.pidns and self.started) or recorded != here:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's: its start time still tells a reused pid
        started = _start_time(str(self.pid))
        return started is not None and started != self.started

    def describe(self) -> str:
        run = self.run or "(no run id)"
        return f"run {run} on worker {self.worker} (pid {self.pid} on {self.host})"


@dataclass(frozen=True)
class _Seen:
    """Another owner's claim as this process first saw its current version."""

    owner: Owner | None
    version: str
    since: float  # time.monotonic()


def _boot_id() -> str:
    """This machine's boot, as Linux names it; empty where it does not (no pid is then
    judged). Containers share their host's boot: `host`, their own name, tells them apart."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _this_process() -> tuple[str, int]:
    """This process's pid namespace and start time; ("", 0) where /proc is not this
    namespace's (then no pid is judged)."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return "", 0
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "", 0
    return namespace, _start_time("self") or 0


def _start_time(pid: str) -> int | None:
    """When process `pid` started, in clock ticks after boot; None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after its end.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def claim_key(key: str) -> str:
    return f"{CLAIMS}/{key}.json"


class Claims:
    """One owner's claims on one destination's keys, renewed in the background while held
    and all released on leaving the `with`."""

    def __init__(self, storage: Storage, owner: Owner, lease_s: float | None = None) -> None:
        self.storage, self.owner = storage, owner
        self.lease_s = LEASE_S if lease_s is None else lease_s  # read now: tests shorten it
        self._held: dict[str, str] = {}  # output key → version of this owner's record
        self._seen: dict[str, _Seen] = {}
        self._writes = 0  # makes each record this owner writes unique, so its version is new
        self._lock = threading.Lock()  # one conditional write at a time: versions stay ours
        self._closed = threading.Event()
        self._renewer = threading.Thread(target=self._renew_while_open, daemon=True)

    @property
    def poll_s(self) -> float:
        """How often a run waiting for rows another owner holds looks again."""
        return self.lease_s / 6

    def __enter__(self) -> Claims:
        self._renewer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._renewer.join()
        for key in list(self._held):
            self.release(key)

    def claim(self, key: str) -> bool:
        """Whether this owner holds `key` now: created, already held, or taken over."""
        if key in self._held:
            return True
        for _ in range(ATTEMPTS):
            with self._lock:
                version = self.storage.write_if(claim_key(key), self._record(), None)
                if version is not None:
                    self._held[key] = version
                    return True
            current = self.storage.read_versioned(claim_key(key))
            if current is None:
                continue  # released since: create it again
            data, version = current
            owner, expires_at = _parse(data)
            if not self._stale(key, owner, version, expires_at):
                return False
            with self._lock:
                taken = self.storage.write_if(claim_key(key), self._record(), version)
                if taken is not None:
                    logger.warning(
                        "took over the stale claim on %s of %s",
                        key,
                        owner.describe() if owner else "an unknown owner",
                    )
                    self._held[key] = taken
                    return True
        return False

    def holder(self, key: str) -> Owner | None:
        """The other owner last seen holding `key`, if any: kept after this owner claims it,
        to say who stored a video this run waited for."""
        seen = self._seen.get(key)
        return seen.owner if seen else None

    def release(self, key: str) -> None:
        """Delete this owner's claim on `key`, if it holds one. A claim that cannot be
        deleted lapses within a lease."""
        with self._lock:
            version = self._held.pop(key, None)
            if version is None:
                return
            try:
                self.storage.delete_if(claim_key(key), version)
            except StorageError as exc:
                logger.warning("could not release the claim on %s (it lapses): %s", key, exc)

    def renew(self) -> None:
        """Extend the lease of every claim held; forget those another owner took over."""
        with self._lock:
            for key, version in list(self._held.items()):
                try:
                    renewed = self.storage.write_if(claim_key(key), self._record(), version)
                    if renewed is None:
                        renewed = self._still_mine(key)
                except StorageError as exc:
                    logger.warning("could not renew the claim on %s: %s", key, exc)
                    continue
                if renewed is None:
                    logger.warning("lost the claim on %s to another run", key)
                    del self._held[key]
                else:
                    self._held[key] = renewed

    def _still_mine(self, key: str) -> str | None:
        """The current version of `key`'s claim when the record is still this owner's (a
        conflicting request that did not land failed our write), else None."""
        current = self.storage.read_versioned(claim_key(key))
        if current is None:
            return None
        owner, _ = _parse(current[0])
        return current[1] if owner is not None and owner.nonce == self.owner.nonce else None

    def _renew_while_open(self) -> None:
        while not self._closed.wait(self.lease_s / 3):
            self.renew()

    def _stale(self, key: str, owner: Owner | None, version: str, expires_at: float) -> bool:
        if expires_at + CLOCK_TOLERANCE_S < time.time():
            return True
        if owner is not None and owner.gone_from_here():
            self._seen[key] = _Seen(owner, version, time.monotonic())  # says who it was
            return True
        now, seen = time.monotonic(), self._seen.get(key)
        if seen is None or seen.version != version:
            self._seen[key] = _Seen(owner, version, now)
            return False
        return now - seen.since >= self.lease_s

    def _record(self) -> bytes:
        self._writes += 1
        record = {
            "owner": dataclasses.asdict(self.owner),
            "expires_at": time.time() + self.lease_s,
            "write": self._writes,
        }
        return json.dumps(record, sort_keys=True).encode()


OWNER_FIELDS = {f.name: f.type for f in dataclasses.fields(Owner)}
MAX_PID = 2**31 - 1  # pid_t


def _parse(data: bytes) -> tuple[Owner | None, float]:
    """A claim record's owner and expiry; a record t2v cannot read is stale at once. Fields
    this version does not know are left out, not taken for damage."""
    try:
        record = json.loads(data)
    except ValueError:
        return None, 0.0
    found = record.get("owner") if isinstance(record, dict) else None
    expires_at = record.get("expires_at") if isinstance(record, dict) else None
    if not isinstance(found, dict) or not _number(expires_at):
        return None, 0.0
    known = {name: value for name, value in found.items() if name in OWNER_FIELDS}
    if set(known) < {"run", "worker", "host", "pid"} or not all(
        _fits(OWNER_FIELDS[name], value) for name, value in known.items()
    ):
        return None, 0.0
    return Owner(**known), float(expires_at or 0)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fits(kind: object, value: Any) -> bool:
    """Whether `value` is what an Owner field of type `kind` holds; a pid must be one
    `os.kill` takes."""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PID
    return isinstance(value, str)


@dataclass(frozen=True)
class Taken:
    """Rows after claiming: this run renders `render`; `settled` need no render here
    (another run stored the video, or the claim failed); another owner holds `held`."""

    render: list[RenderRow]
    settled: list[ResultRow]
    held: list[RenderRow]


def take_rows(claims: Claims, plan: OutputPlan, rows: list[RenderRow], force: bool) -> Taken:
    """Claim each row's key. A claimed row whose key holds a video by now (another run
    stored it after this run planned) is `skipped` unless `force`, and its claim released."""
    render, settled, held = [], [], []
    storage, model = claims.storage, plan.model.name
    for row in rows:
        key = plan.keys[row.line]
        try:
            if not claims.claim(key):
                held.append(row)
                continue
            stored = inspect_key(storage, key)
        except StorageError as exc:
            settled.append(plan.failed(row, f"cannot claim {key} for rendering: {exc}"))
            continue
        if stored.state != "video" or force:
            render.append(row)
            continue
        claims.release(key)
        holder = claims.holder(key)
        result = ResultRow.for_row(
            row,
            "skipped",
            model,
            output=storage.uri(key),
            warning=stored_elsewhere(holder),
            bytes=stored.bytes,
            sha256=stored.sha256,
        )
        if holder is not None:
            result = dataclasses.replace(result, worker=holder.worker, flow_run=holder.run)
        settled.append(result)
    return Taken(render, settled, held)


def stored_elsewhere(holder: Owner | None) -> str:
    if holder is None:
        return "stored by another run after this run planned it"
    return f"rendered by {holder.describe()} while this run waited for it"
