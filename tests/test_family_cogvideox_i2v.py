"""CogVideoX-5b-I2V: its architecture, and the one size its learned positional embeddings
render, refused otherwise before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tasks.families.cogvideox_i2v import PRESET
from tasks.manifest import parse_manifest
from tasks.presets import PRESETS, model_family, model_rules

FAMILY = PRESETS[PRESET].family


def billions(module: torch.nn.Module) -> float:
    return sum(parameter.numel() for parameter in module.parameters()) / 1e9


def test_the_random_preset_has_the_full_size_architecture() -> None:
    pipe = FAMILY.build_random(PRESET, torch.device("meta"), torch.bfloat16)
    assert type(pipe).__name__ == "CogVideoXImageToVideoPipeline"
    # The card's "5B": 5.57 B, cogvideox-5b's transformer with 16 more input channels.
    assert round(billions(pipe.transformer), 2) == 5.57
    config = pipe.transformer.config
    assert (config.in_channels, config.out_channels) == (32, 16)
    assert config.use_learned_positional_embeddings and config.use_rotary_positional_embeddings
    assert (config.sample_height, config.sample_width, config.sample_frames) == (60, 90, 49)
    assert round(billions(pipe.text_encoder), 2) == 4.76  # T5-XXL's encoder
    assert pipe.vae.config.scaling_factor == 0.7


def test_learned_positions_fix_the_size_and_the_rows_are_told_so() -> None:
    rules = model_rules(PRESET)
    assert (rules.height, rules.width, rules.fixed_size) == (480, 720, (480, 720))
    manifest = parse_manifest(b"prompt,image,height,width\na,,256,720\n", "m.csv", rules=rules)
    assert manifest.invalid[0].error.startswith(
        "`height` must be 480 for CogVideoX I2V, got 256. `image` must name a start image: "
    )
    # The tiny preset has rotary positions only, and takes any size CogVideoX does.
    assert model_rules("tiny-cogvideox-i2v").fixed_size is None


@pytest.mark.parametrize("learned", [True, False])
def test_a_folder_is_recognised_and_ruled_from_its_configs(tmp_path: Path, learned: bool) -> None:
    (tmp_path / "transformer").mkdir()
    index = {"_class_name": "CogVideoXImageToVideoPipeline", "_diffusers_version": "0.42.1"}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    config = {"use_learned_positional_embeddings": learned, "sample_height": 8, "sample_width": 12}
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(config))
    assert model_family(str(tmp_path)) is FAMILY
    assert model_rules(str(tmp_path)).fixed_size == ((64, 96) if learned else None)
