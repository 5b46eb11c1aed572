"""Builders shared by test modules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tasks.manifest import RenderRow


def render_row(line: int, **changes: Any) -> RenderRow:
    """A valid row numbered `line` (9 frames of 32×32, 3 steps, seed `line`), with `changes`;
    9 frames is 8k + 1 and 4k + 1, and 32 a multiple of every family's size step."""
    row = RenderRow(
        line=line,
        id=f"row-{line}",
        prompt=f"a small cat runs through the snow in scene number {line}",
        negative_prompt="",
        seed=line,
        num_frames=9,
        height=32,
        width=32,
        num_inference_steps=3,
        guidance_scale=6.0,
        fps=8,
    )
    return replace(row, **changes)
