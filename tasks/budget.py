"""The per-run budget: how much rendering one run may ask for, refused before any model loads."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.errors import BudgetError
from tasks.manifest import RenderRow

# A reference video: the manifest's documented defaults of 16 frames of 256×256 with 25 steps.
REFERENCE_WORK = 16 * 256 * 256 * 25
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_WORK = DEFAULT_MAX_ROWS * REFERENCE_WORK


def work(row: RenderRow) -> int:
    """What rendering a row costs, in frames × height × width × steps, for each candidate."""
    return row.candidates * row.num_frames * row.height * row.width * row.num_inference_steps


def check_budget(rows: Sequence[RenderRow], max_rows: int, max_work: int, source: str) -> None:
    """Refuse a run of `rows` (the manifest's valid rows) past either limit, naming both numbers."""
    renders = sum(row.candidates for row in rows)
    if renders > max_rows:
        raise BudgetError(
            f"{source} asks for {renders:,} videos but a run may render at most "
            f"{max_rows:,}: raise --max-rows (the max_rows parameter) or split the manifest"
        )
    total = sum(work(row) for row in rows)
    if total > max_work:
        raise BudgetError(
            f"{source} asks for {total:,} frame × pixel × step units of rendering (as much as "
            f"{total / REFERENCE_WORK:,.1f} videos of 16 frames at 256×256 with 25 steps) but a "
            f"run may render at most {max_work:,}: raise --max-work (the max_work parameter) "
            "or split the manifest"
        )
