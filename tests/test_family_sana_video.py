"""SANA-Video's own checks: its defaults and size rule, sizes rendered as asked (no
resolution binning), and the 2B architecture's size."""

from __future__ import annotations

import torch

from tasks.families.sana_video import SanaVideo
from tasks.manifest import parse_manifest
from tasks.presets import model_rules

FAMILY = SanaVideo()


def test_an_empty_row_takes_the_docs_defaults_and_sizes_are_multiples_of_32() -> None:
    manifest = parse_manifest(
        b"prompt,height\na kite,\na boat,48\n", "m.csv", rules=model_rules("sana-video-2b")
    )
    (row,) = manifest.rows
    assert (row.num_frames, row.height, row.width, row.fps) == (81, 480, 832, 16)
    assert (row.num_inference_steps, row.guidance_scale) == (50, 6.0)
    (invalid,) = manifest.invalid
    assert "`height` must be a multiple of 32 in 32…832 for SANA-Video, got 48" in invalid.error


def test_a_row_off_the_480p_bins_is_called_at_its_own_size() -> None:
    from tests.factories import render_row

    call = FAMILY.call_arguments([render_row(1, num_frames=9, height=64, width=96)])
    assert (call["frames"], call["height"], call["width"]) == (9, 64, 96)
    assert call["use_resolution_binning"] is False and "num_frames" not in call


def test_the_random_preset_has_the_2b_transformer_and_gemma_2_2b() -> None:
    pipe = FAMILY.build_random("sana-video-2b", torch.device("meta"), torch.bfloat16)
    assert pipe.transformer.device.type == "meta"
    # The model card's "2B"; diffusers' convert script prints the same count.
    assert round(sum(p.numel() for p in pipe.transformer.parameters()) / 1e9, 2) == 2.06
    assert pipe.text_encoder.config.hidden_size == pipe.transformer.config.caption_channels
