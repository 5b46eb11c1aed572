"""AnyFlow's own checks: a distilled preset's defaults, any step count, its exact size."""

from __future__ import annotations

import torch

from tasks.families.anyflow import AnyFlow
from tasks.manifest import parse_manifest
from tasks.presets import model_rules, resolve_model
from tasks.render import render_rows
from tasks.render_call import RenderedVideo
from tests.factories import render_row

FAMILY = AnyFlow()


def test_an_empty_row_takes_the_distilled_steps_and_guidance() -> None:
    manifest = parse_manifest(
        b"prompt\na kite\n", "m.csv", rules=model_rules("anyflow-wan2.1-1.3b")
    )
    (row,) = manifest.rows
    assert (row.num_inference_steps, row.guidance_scale) == (4, 1.0)
    assert (row.num_frames, row.height, row.width, row.fps) == (81, 480, 832, 16)


def test_one_step_and_many_steps_both_render() -> None:
    # A flow map samples at any step count: none is refused, and each renders.
    for steps in (1, 8):
        row = render_row(1, num_frames=5, height=32, width=48, num_inference_steps=steps)
        (video,) = render_rows(resolve_model("tiny-anyflow"), "cpu", [row]).outcomes
        assert isinstance(video, RenderedVideo) and video.frames.shape == (5, 32, 48, 3)


def test_the_random_preset_is_wan21_1_3b_with_the_flow_map_gate() -> None:
    pipe = FAMILY.build_random("anyflow-wan2.1-1.3b", torch.device("meta"), torch.bfloat16)
    assert pipe.transformer.device.type == "meta"
    # The model card's 1.3 B: Wan 2.1 1.3B's 1.42 B (as counted for wan2.1-1.3b) and the
    # gate's second timestep embedding.
    assert round(sum(p.numel() for p in pipe.transformer.parameters()) / 1e9, 2) == 1.42
    assert pipe.transformer.config.gate_value == 0.25
    assert pipe.transformer.config.deltatime_type == "r"
    assert pipe.text_encoder.config.d_model == pipe.transformer.config.text_dim == 4096
