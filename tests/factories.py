"""Builders and data shared by test modules: rows, manifest CSV, a summary, awkward results."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import Any

from tasks.manifest import InvalidRow, Manifest, RenderRow, parse_manifest
from tasks.results import ResultRow, RunSummary

ROW = RenderRow(
    line=1,
    id="clip",
    prompt="a cat",
    negative_prompt="",
    seed=1,
    num_frames=8,
    height=64,
    width=64,
    num_inference_steps=4,
    guidance_scale=9.0,
    fps=8,
    extra={"Campaign": "spring"},
)
SUMMARY = RunSummary(
    counts={"ok": 1, "skipped": 0, "failed": 0, "invalid": 1},
    rows=2,
    wall_s=1.0,
    videos_per_minute=60.0,
    model="tiny-random",
    device="cpu",
    destination="/out",
    results="/out/results.csv",
    started_at="2026-11-28T00:00:00+00:00",
    finished_at="2026-11-28T00:00:01+00:00",
    versions={"python": "3.11"},
)


def sample_results() -> list[ResultRow]:
    ok = ResultRow.for_row(
        replace(ROW, prompt="=HYPERLINK(1)", negative_prompt='line\nbreak, comma "quoted" 猫 🎬'),
        "ok",
        "tiny-random",
        output="/out/clip-abc.mp4",
        render_s=0.1234,
        bytes=10,
        sha256="ff",
    )
    bad = InvalidRow(
        2, "bad", "`height` must be …", {"prompt": "@x", "height": "100", "Campaign": "-5"}
    )
    return [ok, ResultRow.for_invalid(bad, "tiny-random")]


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


def table(*rows: list[str]) -> str:
    """Rows written as RFC 4180 CSV, so cells may hold commas, quotes and newlines."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def parse(text: str, limit: int | None = None) -> Manifest:
    """`text` validated as a manifest named test.csv, with ModelScope's rules."""
    return parse_manifest(text.encode("utf-8"), "test.csv", limit=limit)
