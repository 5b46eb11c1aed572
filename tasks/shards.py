"""A sharded run's pieces: rows split into shards, and each shard's results file in DEST.

A shard's run writes its rows' results to `DEST/.t2v/shards/<parent run>/<shard>.json` as it
goes (`complete` once it has them all), so the parent merges them even when the shard's own
return value is lost, and a shard run again knows which of its rows an earlier try finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import open_storage
from tasks.batching import plan_batches
from tasks.csvstream import open_manifest
from tasks.errors import ShardError
from tasks.manifest import RenderRow
from tasks.results import ResultRow, SpeedLevers
from tasks.settings import settings

SHARDS_FOLDER = ".t2v/shards"
# About 16 minutes of GPU work a shard at 30 s a video (Wan 2.1 1.3B on an H100 class GPU):
# long beside a shard's fixed cost (start, pick-up, model load), short enough to balance.
DEFAULT_SHARD_ROWS = 32
# A shard whose run no gpu worker took within this long fails its rows: no worker, no end.
DEFAULT_SHARD_START_TIMEOUT_S = 600.0
MAX_SHARD_START_TIMEOUT_S = 7 * 24 * 3600.0
# Shards a run splits into at most: each is a flow run the parent follows.
MAX_SHARDS = 10_000


def split_into_shards(
    rows: list[RenderRow], batch_size: int, shards: int | None, shard_rows: int
) -> list[list[RenderRow]]:
    """Whole batches of compatible rows, in order, into `shards` shards (at most one per
    batch), else into shards of about `shard_rows` rows."""
    batches = plan_batches(rows, batch_size)
    if not batches:
        return []
    wanted = shards if shards is not None else -(-len(rows) // shard_rows)
    count = max(1, min(wanted, len(batches)))
    # Contiguous runs of batches, sizes differing by at most one batch.
    size, extra = divmod(len(batches), count)
    split, start = [], 0
    for number in range(count):
        end = start + size + (number < extra)
        split.append([row for batch in batches[start:end] for row in batch])
        start = end
    return split


def shared_location(uri: str) -> str:
    """`uri` as every worker finds it: s3:// as it is; a local folder or file as an absolute
    path, only when T2V_SHARED_FOLDER=1 says every worker sees it there."""
    if uri.startswith("s3://"):
        return uri
    if not settings().shared_folder:
        raise ShardError(
            f"{uri!r} is on this machine: a sharded run needs s3:// locations, or a folder "
            "every worker sees at the same path (a network mount) with T2V_SHARED_FOLDER=1"
        )
    return str(Path(uri).expanduser().resolve())


@dataclass(frozen=True)
class ShardRecord:
    """What one try of a shard reported: its rows so far, and whether that is all of them."""

    shard: int
    flow_run: str
    worker: str
    device: str
    complete: bool
    rows: list[ResultRow]
    speed_levers: SpeedLevers = dataclasses.field(default_factory=dict)  # applied, skipped
    refused: str = ""  # why the run rendered none of its rows (its rows fail with it)


def manifest_sha256(uri: str) -> str:
    """The manifest's content as the parent planned it: a shard refuses another content."""
    digest = hashlib.sha256()
    with open_manifest(uri) as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def shard_key(parent_run: str, shard: int) -> str:
    return f"{SHARDS_FOLDER}/{parent_run}/{shard}.json"


def _marker_key(parent_run: str) -> str:
    return f"{SHARDS_FOLDER}/{parent_run}/run.json"


def write_run_marker(destination: str, parent_run: str) -> None:
    """Mark DEST as this run's, before any shard starts: a shard checks it sees the mark."""
    data = json.dumps({"generator": "t2v-batch", "parent_run": parent_run}).encode("utf-8")
    open_storage(destination).write_bytes(_marker_key(parent_run), data)


def check_run_marker(destination: str, parent_run: str, worker: str) -> None:
    """Refuse a worker that does not see DEST as the parent does (a folder not mounted
    there, another S3 endpoint or account): its videos would land where nobody looks."""
    if open_storage(destination).stat(_marker_key(parent_run)) is None:
        raise ShardError(
            f"worker {worker} does not see {destination!r} as the run's parent does (no "
            f"{_marker_key(parent_run)} there): use s3:// locations, or mount the folder at "
            "the same path on every worker"
        )


def write_shard_record(destination: str, parent_run: str, record: ShardRecord) -> None:
    document = {"generator": "t2v-batch", **dataclasses.asdict(record)}
    data = json.dumps(document, ensure_ascii=False).encode("utf-8")
    open_storage(destination).write_bytes(shard_key(parent_run, record.shard), data)


def read_shard_record(destination: str, parent_run: str, shard: int) -> ShardRecord | None:
    """The shard's latest record; None when it has written none yet. Fields this version does
    not know (a newer one's) are ignored; one it needs and does not find is a ShardError."""
    storage = open_storage(destination)
    key = shard_key(parent_run, shard)
    if storage.stat(key) is None:
        return None
    try:
        document = json.loads(storage.read_bytes(key))
        rows = [ResultRow(**_known(ResultRow, row)) for row in document["rows"]]
        return ShardRecord(**{**_known(ShardRecord, document), "rows": rows})
    except (ValueError, TypeError, KeyError) as exc:
        raise ShardError(
            f"{storage.uri(key)} was written by another version of t2v (its workers run the "
            "deployed commit): make deploy from this checkout, then rerun"
        ) from exc


def _known(kind: type, document: dict[str, Any]) -> dict[str, Any]:
    names = {known.name for known in dataclasses.fields(kind)}
    return {name: value for name, value in document.items() if name in names}
