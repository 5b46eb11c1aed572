"""Claiming a batch's rows: those this run renders, those another run stored meanwhile,
and those another run holds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from storage import StorageError
from tasks.claims import Claims
from tasks.manifest import RenderRow
from tasks.owner import Owner
from tasks.publish import OutputPlan
from tasks.results import ResultRow
from tasks.stored import inspect_key


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
