"""Wan's rules per checkpoint: a Wan 2.2 TI2V-5B-shaped VAE (16×, patch 2) takes sizes in
multiples of 32, its own native video and start images, read from the saved folder's
configs; its image rows go through WanImageToVideoPipeline over the same components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.families.wan import TI2V_TINY, Wan
from tasks.manifest import parse_manifest
from tasks.presets import model_rules, resolve_model
from tasks.render import render_rows
from tasks.render_call import FailedRender, RenderedVideo
from tests.factories import render_row

FAMILY = Wan()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wan22-5b")
    FAMILY.build_tiny_preset(TI2V_TINY).save_pretrained(path)
    return path


def two_experts(seed: int = 0) -> Any:
    """tiny-wan with a second expert for the low-noise steps, laid out as Wan 2.2 A14B."""
    from diffusers import WanPipeline

    tiny = FAMILY.build_tiny(seed)
    torch.manual_seed(seed + 1)
    low_noise = type(tiny.transformer)(**tiny.transformer.config)
    components = {**tiny.components, "transformer_2": low_noise.eval()}
    return WanPipeline(**components, boundary_ratio=0.875)


def _errors(rules: Any, row: str) -> list[str]:
    manifest = parse_manifest(
        f"prompt,num_frames,height,width\na kite,{row}\n".encode(), "m.csv", rules=rules
    )
    return [invalid.error for invalid in manifest.invalid]


def test_a_5b_shaped_folder_refuses_sizes_its_pipeline_would_round_down(folder: Path) -> None:
    rules = model_rules(str(folder))
    assert resolve_model(str(folder)).rules == rules
    assert _errors(rules, "5,64,96") == []
    (error,) = _errors(rules, "5,48,80")
    assert "`height` must be a multiple of 32 in 32…1280 for Wan, got 48 (nearest: 32 or 64)" in (
        error
    )
    assert _errors(FAMILY.rules, "5,48,80") == []  # Wan 2.1's VAE takes them


def test_the_5b_preset_takes_its_native_video_and_wan21_refuses_it() -> None:
    rules = model_rules("wan2.2-5b")
    assert (
        model_rules("wan2.2-5b-random") == rules == model_rules("Wan-AI/Wan2.2-TI2V-5B-Diffusers")
    )
    assert (rules.num_frames, rules.height, rules.width, rules.fps) == (121, 704, 1280, 24)
    assert _errors(rules, "121,704,1280") == []
    assert _errors(rules, "121,1280,704") == []
    (error,) = _errors(model_rules("wan2.1-14b"), "121,704,1280")
    assert "at most 74,649,600 for Wan" in error
    assert model_rules("wan2.1-1.3b") == model_rules("tiny-wan") == FAMILY.rules


def test_a_row_rendered_at_another_size_than_asked_is_failed(folder: Path) -> None:
    # Past the rules (a Hub repo read before its configs are fetched): the pipeline
    # renders 32×32 for 48×48 and must not be reported as the asked size.
    asked = render_row(1, num_frames=5, height=48, width=48, num_inference_steps=2)
    fits = render_row(2, num_frames=5, height=64, width=64, num_inference_steps=2)
    ref = resolve_model(str(folder))
    ((failed,), (fitting,)) = (render_rows(ref, "cpu", [row]).outcomes for row in (asked, fits))
    assert isinstance(fitting, RenderedVideo)
    assert isinstance(failed, FailedRender)
    assert failed.error.startswith("the model rendered 5 frames of 32×32, not the row's 5 of 48×48")


def test_a_two_expert_folder_renders_by_model_folder_with_both_experts(tmp_path: Path) -> None:
    folder = tmp_path / "wan22-a14b"
    two_experts().save_pretrained(folder)
    one_expert = tmp_path / "one"
    FAMILY.build_tiny().save_pretrained(one_expert)
    row = render_row(1, num_frames=5, height=32, width=48, num_inference_steps=4)
    ref = resolve_model(str(folder))
    assert ref.family_name == "Wan" and ref.rules == FAMILY.rules
    (both,) = render_rows(ref, "cpu", [row]).outcomes
    (first_only,) = render_rows(resolve_model(str(one_expert)), "cpu", [row]).outcomes
    assert isinstance(both, RenderedVideo) and isinstance(first_only, RenderedVideo)
    assert both.frames.shape == (5, 32, 48, 3)
    # The low-noise steps ran on the second expert: the video differs from the first alone.
    assert not np.array_equal(both.frames, first_only.frames)


def test_the_a14b_preset_is_two_14b_experts_with_the_boundary() -> None:
    pipe = FAMILY.build_random("wan2.2-a14b", torch.device("meta"), torch.bfloat16)
    for expert in (pipe.transformer, pipe.transformer_2):
        assert expert.device.type == "meta"
        # The model card's "A14B": 14 B active per step, as counted for wan2.1-14b.
        assert round(sum(p.numel() for p in expert.parameters()) / 1e9, 2) == 14.29
    assert pipe.config.boundary_ratio == 0.875


def test_a_5b_shaped_folder_takes_start_images_and_wan21_refuses_them(folder: Path) -> None:
    assert model_rules(str(folder)).image_columns == ("image",)
    assert model_rules("wan2.2-5b").image_columns == ("image",)
    assert model_rules("wan2.1-14b").image_columns == model_rules("tiny-wan").image_columns == ()


def test_image_rows_render_through_the_loaded_components_without_a_copy() -> None:
    pipe = FAMILY.build_tiny_preset(TI2V_TINY)
    image_pipe = FAMILY.image_pipe(pipe)
    assert type(image_pipe).__name__ == "WanImageToVideoPipeline"
    assert image_pipe.config.expand_timesteps is True
    for name in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(image_pipe, name) is getattr(pipe, name), name
