"""Who holds a claim, and a claim record written and read back; a record t2v cannot read
names no owner, and fields this version does not know (a newer version's) are ignored."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CLAIMS = ".t2v/claims"
# How far the clocks of the machines sharing a destination may disagree.
CLOCK_TOLERANCE_S = 10.0


def claim_key(key: str) -> str:
    return f"{CLAIMS}/{key}.json"


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


OWNER_FIELDS = {f.name: f.type for f in dataclasses.fields(Owner)}
MAX_PID = 2**31 - 1  # pid_t


def claim_record(owner: Owner, expires_at: float, write: int) -> bytes:
    """The record of `owner`'s claim until `expires_at` (time.time()); `write` counts the
    owner's writes, so that each record, and so its version, is new."""
    record = {"owner": dataclasses.asdict(owner), "expires_at": expires_at, "write": write}
    return json.dumps(record, sort_keys=True).encode()


def parse_claim(data: bytes) -> tuple[Owner | None, float]:
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


def _fits(kind: object, value: object) -> bool:
    """Whether `value` is what an Owner field of type `kind` holds; a pid must be one
    `os.kill` takes."""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PID
    return isinstance(value, str)
