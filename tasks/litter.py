"""What dead runs left in DEST/.t2v/claims: the claims of owners that are gone or whose
lease ran out long ago, on rows whose video is stored. Claims on rows still to render are
taken over by the run that renders them; nothing t2v did not write is touched."""

from __future__ import annotations

import logging
import time

from storage import Storage, StorageError
from tasks.owner import CLAIMS, CLOCK_TOLERANCE_S, claim_key, parse_claim
from tasks.stored import inspect_key

logger = logging.getLogger("t2v")


def remove_dead_claims(storage: Storage) -> list[str]:
    """Delete each claim that a dead run left on a stored row; the output keys freed. A
    failure leaves the rest for the next run: sweeping never fails a run."""
    removed = []
    try:
        for name in storage.names(CLAIMS):
            key = name.removesuffix(".json")
            if name.endswith(".json") and not name.startswith(".") and _dead_and_done(storage, key):
                removed.append(key)
    except StorageError as exc:
        logger.warning("could not sweep the claims dead runs left: %s", exc)
    return removed


def _dead_and_done(storage: Storage, key: str) -> bool:
    current = storage.read_versioned(claim_key(key))
    if current is None:
        return False
    owner, expires_at = parse_claim(current[0])
    if owner is None:
        return False  # not a record t2v can read as its own
    dead = expires_at + CLOCK_TOLERANCE_S < time.time() or owner.gone_from_here()
    if not dead or inspect_key(storage, key).state != "video":
        return False
    return storage.delete_if(claim_key(key), current[1])
