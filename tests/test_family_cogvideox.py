from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from tasks.families.cogvideox import CogVideoX
from tasks.manifest import RenderRow
from tests.factories import render_row

FAMILY = CogVideoX()


@pytest.fixture(scope="module")
def tiny() -> Any:
    pipe = FAMILY.build_tiny(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe: Any, rows: list[RenderRow]) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(row.seed) for row in rows]
    return FAMILY.generate(pipe, rows, generators).pixels


def billions(module: torch.nn.Module) -> float:
    return sum(parameter.numel() for parameter in module.parameters()) / 1e9


def test_a_frame_count_off_the_rule_renders_fewer_frames(tiny: Any) -> None:
    rules = FAMILY.rules
    assert render(tiny, [render_row(1, num_frames=12)]).shape[1] == 9
    assert 12 % rules.frame_step != 1
    assert (9 - 1) % rules.frame_step == 0


def test_the_rules_default_to_the_models_native_video_and_let_it_through() -> None:
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    # The pipeline's size and frame defaults come from the transformer's sample size,
    # whose defaults are the 1.0 models' own.
    sample = inspect.signature(CogVideoXTransformer3DModel.__init__).parameters
    defaults = inspect.signature(CogVideoXPipeline.__call__).parameters
    rules = FAMILY.rules
    assert rules.height == sample["sample_height"].default * 8
    assert rules.width == sample["sample_width"].default * 8
    assert rules.num_frames == sample["sample_frames"].default
    assert rules.num_inference_steps == defaults["num_inference_steps"].default
    assert rules.guidance_scale == defaults["guidance_scale"].default
    assert FAMILY.token_limit == defaults["max_sequence_length"].default
    assert (rules.num_frames - 1) % rules.frame_step == 0
    for size in (rules.height, rules.width):
        assert size % rules.size_multiple == 0 and rules.min_size <= size <= rules.max_size
    assert rules.num_frames <= rules.max_frames
    assert rules.num_frames * rules.height * rules.width <= rules.max_voxels


def test_long_prompts_count_more_tokens_than_the_limit(tiny: Any) -> None:
    assert tiny.tokenizer.model_max_length == FAMILY.token_limit == 226
    assert FAMILY.count_tokens(tiny, "a cat runs") == 4  # three words and </s>
    assert FAMILY.count_tokens(tiny, "cat " * 300) == 301 > FAMILY.token_limit


@pytest.mark.parametrize(
    ("preset", "low", "high", "rotary"),
    [("cogvideox-2b", 1.6, 1.8, False), ("cogvideox-5b", 5.5, 5.7, True)],
)
def test_the_random_presets_have_the_full_size_architecture(
    preset: str, low: float, high: float, rotary: bool
) -> None:
    pipe = FAMILY.build_random(preset, torch.device("meta"), torch.bfloat16)
    assert low < billions(FAMILY.denoiser(pipe)) < high
    assert pipe.transformer.config.use_rotary_positional_embeddings is rotary
    assert 4.7 < billions(pipe.text_encoder) < 4.8  # T5-XXL's encoder
    assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (8, 4)
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.transformer.device.type == "meta"
