"""Claiming a batch's rows: those this run renders, those another run stored meanwhile,
and those another run holds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from storage import StorageError
from tasks.claims import Claims
from tasks.manifest import RenderRow
from tasks.publish import OutputPlan, skipped_row, stored_meanwhile
from tasks.results import ResultRow
from tasks.stored import StoredBy, inspect_key


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
        if holder is None:
            warning = stored_meanwhile(stored.by)
        else:
            warning = f"rendered by {holder.describe()} while this run waited for it"
            stored = dataclasses.replace(stored, by=StoredBy(holder.run, holder.worker))
        settled.append(skipped_row(row, model, storage.uri(key), stored, warning))
    return Taken(render, settled, held)
