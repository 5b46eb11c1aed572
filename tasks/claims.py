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
An owner whose renewals fail for two thirds of a lease gives the claim up (`lapsed`), so
that it stops rendering the row before another run may take the claim over.
A record t2v cannot read is stale; fields it does not know (a newer version's) are ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from storage import Storage, StorageError
from storage.errors import RETRY_DELAYS_S
from tasks import interrupt
from tasks.litter import remove_dead_claims
from tasks.owner import CLAIMS, CLOCK_TOLERANCE_S, Owner, claim_key, claim_record, parse_claim

__all__ = ["CLAIMS", "Claims", "Owner", "claim_key", "release_every_claim"]

logger = logging.getLogger("t2v")

# A killed worker's rows wait at most about this long (plus a poll) for another run.
LEASE_S = 60.0
# Tries at a claim whose record changes under us (released, taken, renewed) before the
# row counts as held and is tried again after the next wait.
ATTEMPTS = 3
# The share of a lease after its last renewal at which an owner whose renewals keep failing
# gives a claim up: before anyone else may take it over.
GIVE_UP_SHARE = 2 / 3

T = TypeVar("T")


# Every Claims entered and not yet left in this process, for `release_every_claim`.
_open: set[Claims] = set()
_open_lock = threading.Lock()


def release_every_claim() -> None:
    """Release every claim this process holds: for a process about to end without
    unwinding the runs that hold them."""
    with _open_lock:
        entered = list(_open)
    for claims in entered:
        claims.close()


@dataclass(frozen=True)
class _Seen:
    """Another owner's claim as this process first saw its current version."""

    owner: Owner | None
    version: str
    since: float  # time.monotonic()


class Claims:
    """One owner's claims on one destination's keys, renewed in the background while held
    and all released on leaving the `with`."""

    def __init__(self, storage: Storage, owner: Owner, lease_s: float | None = None) -> None:
        self.storage, self.owner = storage, owner
        self.lease_s = LEASE_S if lease_s is None else lease_s  # read now: tests shorten it
        self._held: dict[str, str] = {}  # output key → version of this owner's record
        self._renewed: dict[str, float] = {}  # output key → time.monotonic() of its last write
        self._lapsed: set[str] = set()
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
        remove_dead_claims(self.storage)
        self._renewer.start()
        with _open_lock:
            _open.add(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop renewing and release every claim held."""
        with _open_lock:
            _open.discard(self)
        self._closed.set()
        self._renewer.join()
        for key in list(self._held):
            self.release(key)

    def claim(self, key: str) -> bool:
        """Whether this owner holds `key` now: created, already held, or taken over. Storage
        failures that may pass are tried again after 1, 4 and 16 s."""
        if key in self._held:
            return True
        for _ in range(ATTEMPTS):
            if self._retried(self._write, key, None) is not None:
                return True
            current = self._retried(self.storage.read_versioned, claim_key(key))
            if current is None:
                continue  # released since: create it again
            data, version = current
            owner, expires_at = parse_claim(data)
            if owner is not None and owner.nonce == self.owner.nonce:
                # This owner's own record: a create whose answer was lost and whose retry
                # found it in place, or a claim given up whose record stayed.
                self._hold(key, version)
                return True
            if not self._stale(key, owner, version, expires_at):
                return False
            if self._retried(self._write, key, version) is not None:
                logger.warning(
                    "took over the stale claim on %s of %s",
                    key,
                    owner.describe() if owner else "an unknown owner",
                )
                return True
        return False

    def lapsed(self) -> frozenset[str]:
        """The keys whose claims this owner lost while holding them, without releasing them:
        renewals failed for two thirds of a lease, or another run took the claim over. Their
        rows should not be rendered or stored by this owner (claim them again first)."""
        with self._lock:
            return frozenset(self._lapsed)

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
            self._renewed.pop(key, None)
        if version is None:
            return
        try:
            self._retried(self.storage.delete_if, claim_key(key), version)
        except StorageError as exc:
            logger.warning("could not release the claim on %s (it lapses): %s", key, exc)

    def renew(self) -> bool:
        """Extend the lease of every claim held; give up those another owner took over or
        whose renewals failed for too long. Whether every renewal succeeded."""
        failed = False
        with self._lock:
            for key, version in list(self._held.items()):
                try:
                    renewed = self.storage.write_if(claim_key(key), self._record(), version)
                    if renewed is None:
                        renewed = self._still_mine(key)
                except StorageError as exc:
                    failed = True
                    late = time.monotonic() - self._renewed[key] >= self.lease_s * GIVE_UP_SHARE
                    if late:
                        logger.warning("gave up the claim on %s: cannot renew it: %s", key, exc)
                        self._give_up(key)
                    else:
                        logger.warning("could not renew the claim on %s: %s", key, exc)
                    continue
                if renewed is None:
                    logger.warning("lost the claim on %s to another run", key)
                    self._give_up(key)
                else:
                    self._held[key], self._renewed[key] = renewed, time.monotonic()
        return not failed

    def _still_mine(self, key: str) -> str | None:
        """The current version of `key`'s claim when the record is still this owner's (a
        conflicting request that did not land failed our write), else None."""
        current = self.storage.read_versioned(claim_key(key))
        if current is None:
            return None
        owner, _ = parse_claim(current[0])
        return current[1] if owner is not None and owner.nonce == self.owner.nonce else None

    def _renew_while_open(self) -> None:
        """Renew every third of a lease; after a failed renewal, again after 1, 4 and 16 s
        (never later than a third of a lease)."""
        every = self.lease_s / 3
        wait, delays = every, iter(RETRY_DELAYS_S)
        while not self._closed.wait(wait):
            if self.renew():
                wait, delays = every, iter(RETRY_DELAYS_S)
            else:
                wait = min(next(delays, every), every)

    def _write(self, key: str, expected: str | None) -> str | None:
        """Create (`expected` None) or replace this owner's record for `key`; held if so."""
        with self._lock:
            version = self.storage.write_if(claim_key(key), self._record(), expected)
            if version is not None:
                self._hold(key, version)
            return version

    def _hold(self, key: str, version: str) -> None:
        self._held[key], self._renewed[key] = version, time.monotonic()
        self._lapsed.discard(key)

    def _give_up(self, key: str) -> None:
        del self._held[key], self._renewed[key]
        self._lapsed.add(key)

    def _retried(self, call: Callable[..., T], *args: object) -> T:
        """`call(*args)`, tried again after each pause of RETRY_DELAYS_S while it fails in a
        way that may pass; a stop request ends the pauses."""
        for delay in RETRY_DELAYS_S:
            try:
                return call(*args)
            except StorageError as exc:
                if not exc.retryable:
                    raise
                logger.warning("%s; trying again in %g s", exc, delay)
                if interrupt.wait_for_stop(delay):
                    raise
        return call(*args)

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
        return claim_record(self.owner, time.time() + self.lease_s, self._writes)
