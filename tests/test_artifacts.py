"""The run's artifacts: the plain builders, and what a real flow run leaves on the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flows import artifacts
from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from tasks.manifest import RenderRow
from tasks.publish import ResultRow, RunSummary


def _summary(destination: str = "/data/out") -> RunSummary:
    return RunSummary(
        counts={"ok": 2, "skipped": 1, "failed": 0, "invalid": 1},
        rows=4,
        wall_s=12.5,
        videos_per_minute=9.6,
        model="tiny-random",
        device="cpu",
        destination=destination,
        results=f"{destination}/results.csv",
        started_at="2026-11-28T02:00:00+00:00",
        finished_at="2026-11-28T02:00:12+00:00",
        versions={},
    )


def test_summary_shows_local_locations_as_text() -> None:
    # file:// links from the Prefect UI are dead in a browser.
    text = artifacts.summary_markdown(_summary())
    assert "4 rows: 2 ok, 1 skipped, 0 failed, 1 invalid" in text
    assert "| videos per minute | 9.6 |" in text
    assert "| flagged videos | 0 |" in text
    assert "- results.csv: `/data/out/results.csv`" in text
    assert "- gallery: `/data/out/index.html`" in text
    assert "file://" not in text and "](" not in text


def test_summary_shows_s3_locations_as_text_never_presigned() -> None:
    # A presigned URL in the server's records would hand read access to anyone with the UI.
    text = artifacts.summary_markdown(_summary("s3://bucket/renders/2026-11-28"))
    assert "- gallery: `s3://bucket/renders/2026-11-28/index.html`" in text
    assert "- results.csv: `s3://bucket/renders/2026-11-28/results.csv`" in text
    assert "X-Amz" not in text and "](" not in text


def test_table_has_one_row_per_result_with_long_prompts_clipped() -> None:
    row = RenderRow(
        line=1, id="a", prompt="x" * 500, negative_prompt="", seed=1, num_frames=4,
        height=64, width=64, num_inference_steps=2, guidance_scale=9.0, fps=8,
    )  # fmt: skip
    result = ResultRow.for_row(row, "failed", "tiny-random", error="boom")
    (cells,) = artifacts.results_table([result])
    assert list(cells) == ["status", "error", "id", "prompt", "output", "flags"]
    assert cells == {
        "status": "failed",
        "id": "a",
        "prompt": "x" * 199 + "…",
        "output": "",
        "error": "boom",
        "flags": "",
    }


def test_progress_counts_the_flagged_videos_of_the_rows_finished() -> None:
    assert artifacts.progress_description(0, 0, 250) == "0 of 250 rows finished."
    assert artifacts.progress_description(40, 3, 250) == (
        "40 of 250 rows finished; 3 of their videos flagged."
    )


@pytest.mark.usefixtures("prefect_api_url")
def test_a_run_with_an_invalid_row_leaves_all_three_artifacts(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "id,prompt,num_frames,height,width,num_inference_steps\n"
        "good,a cat,4,64,64,2\n"
        "bad,a dog,4,100,64,2\n"
    )
    request = RenderRequest(
        # No video scores 100: every one is flagged `low_score`.
        manifest=str(manifest), destination=str(tmp_path / "out"), score="tiny-clip",
        score_threshold=100,
    )  # fmt: skip
    state = render_manifest(**request.parameters(), return_state=True)
    assert state.is_failed()

    found = _artifacts(state.state_details.flow_run_id)
    assert set(found) == {"render-progress", "render-results", "render-summary"}
    assert found["render-progress"].data == 100
    assert found["render-progress"].description == (
        "2 of 2 rows finished; 1 of their videos flagged."
    )
    table = found["render-results"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert [(row["id"], row["status"]) for row in table] == [("good", "ok"), ("bad", "invalid")]
    assert "height" in table[1]["error"]
    assert "1 ok, 0 skipped, 0 failed, 1 invalid" in found["render-summary"].data
    assert "| flagged videos | 1 |" in found["render-summary"].data


def _artifacts(flow_run_id: Any) -> dict[str, Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in found if artifact.key}
