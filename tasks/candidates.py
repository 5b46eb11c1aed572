"""Best of N: a row of `candidates` > 1 renders that many seeds and keeps the best video.

The first candidate is the row's own seed, the others derive from it, so a row always
renders the same candidates. The best has the highest score when a scorer ran, else the
fewest flags (the earlier seed on a tie). A candidate whose frames are a render fault
(black, NaN) just loses; any other failure, or a render stopped before every candidate
finished, fails the row.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tasks.manifest_row import MAX_DERIVED_SEED, RenderRow
from tasks.quality import BLACK_OR_NAN, Candidate
from tasks.render import BatchResult, Slot, render_rows
from tasks.render_call import FailedRender, RenderedVideo, RenderOutcome
from tasks.rules import MAX_CANDIDATES
from tasks.speed import EXACT, Levers

if TYPE_CHECKING:
    from tasks.presets import ModelRef
    from tasks.scoring import Scoring


def candidate_seed(seed: int, number: int) -> int:
    """The seed of the row's candidate `number` (0 is the row's own)."""
    if number == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()[:8]
    return int.from_bytes(digest, "big") & MAX_DERIVED_SEED


@dataclass(frozen=True)
class Expansion:
    """Each row's candidates as rows of their own, numbered apart (`line`), and the way back."""

    rows: list[RenderRow]
    origin: dict[int, RenderRow]  # candidate line → the manifest row


def expand(rows: Sequence[RenderRow]) -> Expansion:
    """Every candidate of `rows` as a row to render, the candidates of a row together."""
    expanded, origin = [], {}
    for row in rows:
        for number in range(row.candidates):
            line = row.line * MAX_CANDIDATES + number
            expanded.append(
                replace(row, line=line, seed=candidate_seed(row.seed, number), candidates=1)
            )
            origin[line] = row
    return Expansion(expanded, origin)


def render_best(
    model: ModelRef,
    device: str,
    rows: Sequence[RenderRow],
    timeout_scale: float = 1.0,
    levers: Levers = EXACT,
    ticket: int | None = None,
    scoring: Scoring | None = None,
    slot: Slot = contextlib.nullcontext,
) -> BatchResult:
    """`render.render_rows` of every candidate of `rows`, as many per pipeline call as
    `rows`; one outcome per row: its best video, or why it failed. The first call takes
    the device at `ticket`'s turn, the others queue after it; each holds `slot` with it."""
    expansion = expand(rows)
    outcomes: list[RenderOutcome] = []
    results: list[BatchResult] = []
    for start in range(0, len(expansion.rows), len(rows)):
        chunk = expansion.rows[start : start + len(rows)]
        turn = ticket if start == 0 else None
        results.append(
            render_rows(model, device, chunk, timeout_scale, levers, turn, scoring, slot)
        )
        outcomes += results[-1].outcomes
    failure = next((r.device_failure for r in results if r.device_failure), None)
    best = [_best(row, outcomes, expansion) for row in rows]
    # The device was held from the first call's turn to the last call's end.
    return BatchResult(best, failure, started=results[0].started, ended=results[-1].ended)


def _best(row: RenderRow, outcomes: list[RenderOutcome], expansion: Expansion) -> RenderOutcome:
    """The row's best candidate, as the row; or its failure."""
    mine = sorted(
        (o for o in outcomes if expansion.origin[o.row.line].line == row.line),
        key=lambda outcome: outcome.row.line,
    )
    videos = [o for o in mine if isinstance(o, RenderedVideo)]
    failures = [o.error for o in mine if isinstance(o, FailedRender)]
    real = [error for error in failures if error != BLACK_OR_NAN]
    if real or not videos:
        return FailedRender(row, (real or failures)[0])
    best = min(videos, key=lambda video: (-(video.score or 0.0), len(video.flags), video.row.line))
    if row.candidates == 1:
        return replace(best, row=row)
    listed = tuple(
        Candidate(o.row.seed, o.flags, o.score, kept=o is best)
        if isinstance(o, RenderedVideo)
        else Candidate(o.row.seed, error=o.error)
        for o in mine
    )
    return replace(best, row=row, candidates=listed)
