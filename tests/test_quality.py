from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.candidates import candidate_seed, expand, render_best
from tasks.errors import ModelLoadError
from tasks.families.base import to_uint8
from tasks.manifest_row import MAX_DERIVED_SEED
from tasks.presets import pull_model, resolve_model
from tasks.quality import (
    BLACK_MEAN,
    BLACK_OR_NAN,
    FROZEN_CHANGE,
    UNIFORM_STD,
    inspect_video,
)
from tasks.render_call import RenderedVideo, render_batch
from tasks.scoring import Scoring, get_scorer
from tests.factories import broken_tiny, small_row, t2v

slow = pytest.mark.slow

SHAPE = (8, 64, 64, 3)


def moving(seed: int = 0) -> np.ndarray:
    """A video whose every frame is new noise around mid-grey: nothing to flag."""
    return np.random.default_rng(seed).integers(40, 216, SHAPE, dtype=np.uint8)


def test_a_normal_video_is_not_flagged() -> None:
    found = inspect_video(moving())
    assert (found.flags, found.warning, found.fault) == ((), "", "")


def test_an_all_black_video_is_a_render_fault() -> None:
    found = inspect_video(np.zeros(SHAPE, dtype=np.uint8))
    assert found.flags == ("black", "frozen")
    assert found.fault == BLACK_OR_NAN == "the render produced black/NaN frames"


def test_near_black_frames_are_flagged_and_the_video_kept() -> None:
    video = moving()
    video[2:4] = int(BLACK_MEAN) - 2  # dark, and just under the threshold
    found = inspect_video(video)
    assert found.flags == ("black",) and not found.fault
    assert found.warning == "flagged black: 2 of 8 frames near-black"


def test_a_dark_scene_above_the_threshold_is_not_black() -> None:
    video = np.random.default_rng(1).integers(0, 2 * int(BLACK_MEAN) + 4, SHAPE, dtype=np.uint8)
    assert inspect_video(video).flags == ()


def test_nan_in_the_float_output_is_a_render_fault() -> None:
    found = inspect_video(moving(), nonfinite=True)
    assert found.flags == ("nan",)
    assert found.fault == BLACK_OR_NAN


def test_uniform_frames_are_flagged_and_a_flat_video_is_a_fault() -> None:
    video = moving()
    video[5] = 200
    video[5, ::7, ::7] += 1  # within UNIFORM_STD of flat
    found = inspect_video(video)
    assert found.flags == ("uniform",) and not found.fault
    grey = np.full(SHAPE, 128, dtype=np.uint8)
    grey[:, :, :, 0] = np.arange(8, dtype=np.uint8)[:, None, None] * 30  # moving, but flat
    flat = inspect_video(grey)
    assert flat.flags == ("uniform",) and flat.fault == BLACK_OR_NAN
    assert np.asarray(grey[0], dtype=float).std(axis=(0, 1)).max() < UNIFORM_STD


def test_a_still_video_is_frozen_and_a_slow_one_is_not() -> None:
    still = np.repeat(moving()[:1], SHAPE[0], axis=0)
    assert inspect_video(still).flags == ("frozen",)
    slow = still.copy()
    slow[4:] = np.clip(slow[4:].astype(int) + 1, 0, 255)  # one level, once
    assert FROZEN_CHANGE < 1
    assert inspect_video(slow).flags == ()


def test_a_single_frame_is_never_frozen() -> None:
    assert inspect_video(moving()[:1]).flags == ()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_to_uint8_reports_non_finite_values_per_video(bad: float) -> None:
    frames = torch.rand(3, 2, 3, 8, 8)
    frames[1, 1, 0, 4, 4] = bad
    decoded = to_uint8(frames)
    assert decoded.pixels.shape == (3, 2, 8, 8, 3)
    assert decoded.nonfinite.tolist() == [False, True, False]


def _render_folder(pipe: Any, tmp_path: Path, env: dict[str, str]) -> list[dict[str, str]]:
    """`t2v render` of three rows, the second prompt holding `~`, with `pipe` saved as a
    folder model; the results.csv rows."""
    pipe.save_pretrained(tmp_path / "model")
    manifest = tmp_path / "prompts.csv"
    manifest.write_text(
        "id,prompt,seed,num_frames,height,width,num_inference_steps,fps\n"
        "a,a red kite over the sea,1,4,64,64,2,8\n"
        "b,a ~ kite over the sea,2,4,64,64,2,8\n"
        "c,a small boat in the rain,3,4,64,64,2,8\n"
    )
    out = tmp_path / "out"
    done = t2v(
        "render", str(manifest), "--model", str(tmp_path / "model"), "--out", str(out),
        env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8-sig")))
    assert list(rows[0])[list(rows[0]).index("image_sha256") + 1] == "flags"
    stored = sorted(path.name for path in out.glob("*.mp4"))
    assert stored == sorted(Path(row["output"]).name for row in rows if row["status"] == "ok")
    return rows


@slow
def test_render_fails_the_nan_row_and_stores_the_others(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    rows = _render_folder(broken_tiny("nan-token"), tmp_path, cli_env)
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert [row["flags"] for row in rows] == ["", "", ""]
    assert rows[1]["error"] == BLACK_OR_NAN


@slow
def test_render_of_a_vae_decoding_black_fails_every_row_and_stores_none(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    rows = _render_folder(broken_tiny("black"), tmp_path, cli_env)
    assert [(row["status"], row["error"]) for row in rows] == [("failed", BLACK_OR_NAN)] * 3


def test_a_score_under_the_threshold_flags_low_score() -> None:
    still = inspect_video(np.repeat(moving()[:1], SHAPE[0], axis=0))
    assert still.scored(25.0, 20.0) == replace(still, score=25.0)
    low = still.scored(12.5, 20.0)
    assert (low.flags, low.score) == (("frozen", "low_score"), 12.5)
    assert low.warning.endswith("; low_score: 12.5 under 20")
    assert inspect_video(moving()).scored(3, 20).warning == "flagged low_score: 3 under 20"


def test_tiny_clip_scores_a_video_against_its_prompt_once_loaded() -> None:
    scorer = get_scorer("tiny-clip", torch.device("cpu"))
    assert get_scorer("tiny-clip", torch.device("cpu")) is scorer
    video = moving()
    first = scorer.score("a red kite", video)
    assert scorer.score("a red kite", video) == first
    assert scorer.score("a blue boat", video) != first
    assert -100 <= first <= 100
    # Any frame size and count: frames are resized and centre-cropped to CLIP's input.
    assert -100 <= scorer.score("a red kite", moving()[:1, :, :40]) <= 100


def test_render_batch_scores_each_video(tiny_pipe: Any) -> None:
    scorer = get_scorer("tiny-clip", torch.device("cpu"))
    rows = [small_row(1), small_row(2)]
    kept, flagged = (
        render_batch(tiny_pipe, rows, (scorer, -100.0)),
        render_batch(tiny_pipe, rows, (scorer, 100.0)),
    )
    assert all(isinstance(video, RenderedVideo) for video in [*kept, *flagged])
    scores = [video.score for video in kept if isinstance(video, RenderedVideo)]
    assert all(score is not None for score in scores)
    assert [video.flags for video in kept if isinstance(video, RenderedVideo)] == [(), ()]
    assert [video.flags for video in flagged if isinstance(video, RenderedVideo)] == [
        ("low_score",)
    ] * 2


@slow
def test_render_with_the_tiny_scorer_fills_score_and_low_score(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = t2v(
        "render", "examples/prompts.csv", "--model", "tiny-random", "--out", str(out),
        "--limit", "2", "--score", "tiny-clip", "--score-threshold", "100", env=cli_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8-sig")))
    assert list(rows[0])[list(rows[0]).index("flags") + 1] == "score"
    assert [row["flags"] for row in rows] == ["low_score", "low_score"]
    assert all(-100 <= float(row["score"]) <= 100 for row in rows)
    assert all("low_score" in row["warning"] for row in rows)


def test_the_clip_scorer_offline_says_how_to_pull_it() -> None:
    # conftest sets HF_HUB_OFFLINE: tests never download.
    with pytest.raises(ModelLoadError, match=r"HF_HUB_OFFLINE=0 t2v models pull clip"):
        pull_model("clip")
    with pytest.raises(ModelLoadError, match=r"openai/clip-vit-base-patch32"):
        get_scorer("clip", torch.device("cpu"))


def test_candidates_are_the_rows_seed_and_seeds_derived_from_it() -> None:
    row = small_row(3, candidates=3)
    expansion = expand([row, small_row(4)])
    seeds = [candidate.seed for candidate in expansion.rows]
    assert seeds[0] == 3 and seeds[3] == 4
    assert len(set(seeds)) == 4 and seeds[1:3] == [candidate_seed(3, 1), candidate_seed(3, 2)]
    assert all(0 <= seed <= MAX_DERIVED_SEED for seed in seeds)
    assert {expansion.origin[c.line].line for c in expansion.rows} == {3, 4}
    assert all(candidate.candidates == 1 for candidate in expansion.rows)


@pytest.mark.parametrize("scoring", [None, Scoring("tiny-clip")])
def test_best_of_three_keeps_one_video_and_lists_every_candidate(
    scoring: Scoring | None,
) -> None:
    rows = [small_row(1, candidates=3), small_row(2)]
    result = render_best(resolve_model("tiny-random"), "cpu", rows, scoring=scoring)
    best, single = result.outcomes
    assert isinstance(best, RenderedVideo) and isinstance(single, RenderedVideo)
    assert (best.row, single.row, single.candidates) == (rows[0], rows[1], ())
    assert [candidate.seed for candidate in best.candidates] == [
        candidate_seed(1, number) for number in range(3)
    ]
    kept = [candidate for candidate in best.candidates if candidate.kept]
    assert len(kept) == 1 and (kept[0].flags, kept[0].score) == (best.flags, best.score)
    if scoring is not None:
        scores = [candidate.score for candidate in best.candidates]
        assert best.score == max(score for score in scores if score is not None)


@slow
def test_render_best_of_three_stores_one_video_and_lists_three_candidates(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "prompts.csv"
    manifest.write_text(
        "id,prompt,seed,num_frames,height,width,num_inference_steps,fps,candidates\n"
        "a,a red kite over the sea,1,4,64,64,2,8,3\n"
        "b,a small boat in the rain,2,4,64,64,2,8,\n"
    )
    out = tmp_path / "out"
    args = ["render", str(manifest), "--model", "tiny-random", "--out", str(out)]
    done = t2v(*args, "--score", "tiny-clip", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("a-*.mp4"))) == 1 and len(list(out.glob("b-*.mp4"))) == 1
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [len(row["candidates"]) for row in rows] == [3, 0]
    assert rows[0]["candidates"][0]["seed"] == 1
    assert sum(candidate["kept"] for candidate in rows[0]["candidates"]) == 1
    assert all(candidate["score"] is not None for candidate in rows[0]["candidates"])
    again = t2v(*args, env=cli_env)  # no scorer: another key, so row `a` renders again
    statuses = [row["status"] for row in json.loads((out / "results.json").read_text())["rows"]]
    assert again.returncode == 0 and statuses == ["ok", "skipped"]


def test_a_noisy_near_black_video_and_a_flat_grey_one_are_render_faults() -> None:
    dark = np.random.default_rng(2).integers(0, 12, SHAPE, dtype=np.uint8)  # mean ≈ 5.5
    assert inspect_video(dark).flags == ("black",)
    assert inspect_video(dark).fault == BLACK_OR_NAN
    grey = inspect_video(np.full(SHAPE, 128, dtype=np.uint8))  # a zeroed VAE's output
    assert (grey.flags, grey.fault) == (("uniform", "frozen"), BLACK_OR_NAN)
