from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from tasks.families.ltx import LTXVideo
from tasks.manifest import RenderRow, parse_manifest
from tests.factories import render_row

FAMILY = LTXVideo()


@pytest.fixture(scope="module")
def tiny() -> Any:
    pipe = FAMILY.build_tiny(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe: Any, rows: list[RenderRow]) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(row.seed) for row in rows]
    return FAMILY.generate(pipe, rows, generators).pixels


def test_the_rows_fps_conditions_the_video(tiny: Any) -> None:
    at_25, at_8 = (render(tiny, [render_row(1, fps=fps)]) for fps in (25, 8))
    assert not torch.equal(at_25, at_8)
    with pytest.raises(ValueError, match=r"share one fps for LTX-Video but have \[8, 25\]"):
        render(tiny, [render_row(1, fps=25), render_row(2, fps=8)])


def test_a_frame_count_off_the_rule_renders_fewer_frames(tiny: Any) -> None:
    rules = FAMILY.rules
    assert render(tiny, [render_row(1, num_frames=12)]).shape[1] == 9
    assert 12 % rules.frame_step != 1
    assert (9 - 1) % rules.frame_step == 0


def test_the_rules_default_to_the_pipelines_own_defaults_and_let_them_through() -> None:
    from diffusers import LTXPipeline

    defaults = inspect.signature(LTXPipeline.__call__).parameters
    rules = FAMILY.rules
    for column, argument in [
        ("height", "height"),
        ("width", "width"),
        ("num_frames", "num_frames"),
        ("fps", "frame_rate"),
        ("num_inference_steps", "num_inference_steps"),
        ("guidance_scale", "guidance_scale"),
    ]:
        assert getattr(rules, column) == defaults[argument].default, column
    assert FAMILY.token_limit == defaults["max_sequence_length"].default
    assert (rules.num_frames - 1) % rules.frame_step == 0
    for size in (rules.height, rules.width):
        assert size % rules.size_multiple == 0 and rules.min_size <= size <= rules.max_size
    assert rules.num_frames <= rules.max_frames
    assert rules.num_frames * rules.height * rules.width <= rules.max_voxels


def test_one_step_is_refused_as_its_scheduler_cannot_take_it(tiny: Any) -> None:
    # shift_terminal stretches the schedule by its last sigma: 0 / 0 with a single step.
    with (
        pytest.warns(RuntimeWarning, match="invalid value encountered in divide"),
        pytest.raises(IndexError),
    ):
        render(tiny, [render_row(1, num_inference_steps=1)])
    manifest = parse_manifest(
        b"prompt,num_inference_steps\na,1\nb,2\n", "m.csv", rules=FAMILY.rules
    )
    assert [row.num_inference_steps for row in manifest.rows] == [2]
    assert manifest.invalid[0].error == (
        "`num_inference_steps` must be an integer in 2…150 for LTX-Video, got 1 (nearest: 2)."
    )


def test_long_prompts_count_more_tokens_than_the_limit(tiny: Any) -> None:
    assert tiny.tokenizer.model_max_length == FAMILY.token_limit == 128
    assert FAMILY.count_tokens(tiny, "a cat runs") == 4  # three words and </s>
    assert FAMILY.count_tokens(tiny, "cat " * 200) == 201 > FAMILY.token_limit


def test_the_random_preset_has_the_full_size_architecture() -> None:
    pipe = FAMILY.build_random("ltx-video", torch.device("meta"), torch.bfloat16)

    def billions(module: torch.nn.Module) -> float:
        return sum(parameter.numel() for parameter in module.parameters()) / 1e9

    assert 1.9 < billions(FAMILY.denoiser(pipe)) < 2.0
    assert 4.7 < billions(pipe.text_encoder) < 4.8  # T5-XXL's encoder
    assert pipe.vae.spatial_compression_ratio == 32
    assert pipe.vae.temporal_compression_ratio == 8
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.transformer.device.type == "meta"
