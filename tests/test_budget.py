"""The per-run budget: refused by name and number before any model loads or output is made."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prefect.states import State

from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from tasks.budget import DEFAULT_MAX_WORK, REFERENCE_WORK, check_budget, work
from tasks.errors import BudgetError
from tasks.families.modelscope import ModelScope
from tasks.manifest import RenderRow

ROW = RenderRow(
    line=1, id="a", prompt="a cat", negative_prompt="", seed=1, num_frames=16, height=256,
    width=256, num_inference_steps=25, guidance_scale=9.0, fps=8,
)  # fmt: skip


def test_work_is_frames_pixels_and_steps() -> None:
    assert work(ROW) == REFERENCE_WORK == 16 * 256 * 256 * 25
    assert work(replace(ROW, height=512, num_inference_steps=50)) == 4 * REFERENCE_WORK
    assert DEFAULT_MAX_WORK == 10_000 * REFERENCE_WORK


def test_a_run_at_its_limits_passes() -> None:
    check_budget([ROW, ROW], max_rows=2, max_work=2 * REFERENCE_WORK, source="m.csv")


def test_too_many_rows_are_refused_with_both_numbers() -> None:
    with pytest.raises(BudgetError) as caught:
        check_budget([ROW] * 3, max_rows=2, max_work=DEFAULT_MAX_WORK, source="m.csv")
    assert str(caught.value) == (
        "m.csv asks for 3 videos but a run may render at most 2: "
        "raise --max-rows (the max_rows parameter) or split the manifest"
    )


def test_too_much_work_is_refused_in_reference_videos() -> None:
    rows = [replace(ROW, num_frames=64, height=512, width=512)]  # 16 reference videos
    with pytest.raises(BudgetError, match=r"as much as 16\.0 videos of 16 frames") as caught:
        check_budget(rows, max_rows=10, max_work=10 * REFERENCE_WORK, source="m.csv")
    assert "at most 262,144,000: raise --max-work" in str(caught.value)


def test_the_flow_refuses_before_loading_a_model_or_writing(
    tmp_path: Path, prefect_api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ModelScope().build_tiny(seed=21).save_pretrained(tmp_path / "model")  # never loaded
    manifest = tmp_path / "m.csv"
    manifest.write_text("prompt,num_frames,height,width\n" + "a cat,4,64,64\n" * 3)
    caplog.set_level(logging.INFO, logger="t2v")
    request = RenderRequest(
        manifest=str(manifest),
        destination=str(tmp_path / "out"),
        model=str(tmp_path / "model"),
        max_rows=2,
    )
    state: State[Any] = render_manifest(**request.parameters(), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BudgetError)
    assert "asks for 3 videos but a run may render at most 2" in str(error)
    assert not [r for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert not (tmp_path / "out").exists()


def test_the_budget_counts_every_candidate() -> None:
    row = replace(ROW, candidates=3)
    assert work(row) == 3 * work(ROW)
    check_budget([row], max_rows=3, max_work=3 * work(ROW), source="m.csv")
    with pytest.raises(BudgetError, match="asks for 3 videos"):
        check_budget([row], max_rows=2, max_work=10**12, source="m.csv")
