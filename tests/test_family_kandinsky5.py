"""Kandinsky 5's own checks: the 5 s Lite model's defaults and bounds, and its exact size."""

from __future__ import annotations

import torch

from tasks.families.kandinsky5 import Kandinsky5
from tasks.manifest import parse_manifest
from tasks.presets import model_rules

FAMILY = Kandinsky5()


def test_an_empty_row_takes_the_lite_5s_video_and_longer_ones_are_refused() -> None:
    manifest = parse_manifest(
        b"prompt,num_frames\na kite,\na boat,241\n", "m.csv", rules=model_rules("kandinsky-5-lite")
    )
    (row,) = manifest.rows
    assert (row.num_frames, row.height, row.width, row.fps) == (121, 512, 768, 24)
    assert (row.num_inference_steps, row.guidance_scale) == (50, 5.0)
    (invalid,) = manifest.invalid
    assert "`num_frames` must be 4k+1 in 1…121 for Kandinsky 5" in invalid.error


def test_the_random_preset_is_the_lite_transformer_with_qwen25_vl_7b_and_clip_l() -> None:
    pipe = FAMILY.build_random("kandinsky-5-lite", torch.device("meta"), torch.bfloat16)
    assert pipe.transformer.device.type == "meta"

    def billions(module: torch.nn.Module) -> float:
        return round(sum(p.numel() for p in module.parameters()) / 1e9, 2)

    # The model card's 2 B; Qwen2.5-VL 7B's 8.29 B; HunyuanVideo's VAE.
    assert billions(pipe.transformer) == 2.01
    assert billions(pipe.text_encoder) == 8.29
    assert pipe.transformer.config.in_text_dim == pipe.text_encoder.config.text_config.hidden_size
    assert pipe.transformer.config.in_text_dim2 == pipe.text_encoder_2.config.hidden_size
