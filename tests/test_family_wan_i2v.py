"""Wan 2.1 I2V: the 14B checkpoints' architecture, found from model_index.json alone, and
the first-last-frame checkpoint's last frame reaching the video."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.devices import get_pipeline
from tasks.families.wan_i2v import FLF2V, FLF2V_TINY, WanI2V
from tasks.images import StartImage
from tasks.presets import PRESETS, model_family, model_rules, resolve_model
from tasks.render import render_rows
from tasks.render_call import RenderedVideo, render_batch
from tests.factories import render_row

FAMILY = WanI2V()


def billions(module: torch.nn.Module) -> float:
    return sum(parameter.numel() for parameter in module.parameters()) / 1e9


@pytest.mark.parametrize("preset", ["wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p", FLF2V])
def test_the_random_presets_have_the_full_size_architecture(preset: str) -> None:
    pipe = FAMILY.build_random(preset, torch.device("meta"), torch.bfloat16)
    # The cards' 14B is Wan 2.1 T2V 14B's transformer (14.29 B, as test_family_wan counts
    # it); image cross-attention (a key and a value projection per block) adds 2.1 B.
    # FLF2V adds the positions of 514 image tokens (0.66 M).
    assert round(billions(pipe.transformer), 1) == 16.4
    assert pipe.transformer.config.in_channels == 36
    assert round(billions(pipe.image_encoder), 2) == 0.63  # ViT-H/14's vision tower
    assert round(billions(pipe.text_encoder), 2) == 5.68  # UMT5-XXL's encoder
    assert pipe.image_processor.crop_size == {"height": 224, "width": 224}
    tokens = pipe.transformer.config.pos_embed_seq_len
    assert tokens == (514 if preset == FLF2V else None)
    assert pipe.transformer.device.type == "meta"


def test_a_folder_is_recognised_and_ruled_from_its_configs_without_loading_weights(
    tmp_path: Path,
) -> None:
    for preset in ("tiny-wan-i2v", FLF2V_TINY):
        folder = tmp_path / preset
        PRESETS[preset].family.build_tiny_preset(preset).save_pretrained(folder)
        for weights in folder.glob("*/*.safetensors"):
            weights.unlink()  # what decides is model_index.json and the configs
        assert model_family(str(folder)) is PRESETS[preset].family
        assert model_rules(str(folder)) == model_rules(preset)
    assert model_rules(FLF2V_TINY).required_images == ("image", "last_image")
    assert model_rules("tiny-wan-i2v").image_columns == ("image",)
    # Wan 2.2 I2V's transformer takes no image tokens: a last frame goes in by the latents.
    config = json.loads((tmp_path / "tiny-wan-i2v" / "transformer" / "config.json").read_text())
    wan22 = FAMILY.rules_for({"transformer": {**config, "image_dim": None}})
    assert (wan22.image_columns, wan22.required_images) == (("image", "last_image"), ("image",))


def test_the_last_frame_reaches_the_video(tmp_path: Path) -> None:
    images = {}
    for name, colour in (("first", (200, 40, 40)), ("dark", (10, 10, 10)), ("light", (250,) * 3)):
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (96, 64), colour).save(path)
        images[name] = StartImage(str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    pipe = get_pipeline(resolve_model(FLF2V_TINY), torch.device("cpu"))
    row = render_row(1, height=64, width=96, image=images["first"], last_image=images["dark"])
    dark, light = render_batch(pipe, [row, replace(row, line=2, last_image=images["light"])])
    assert isinstance(dark, RenderedVideo) and isinstance(light, RenderedVideo)
    # One seed and start image: the last frame alone tells the two apart.
    assert not np.array_equal(dark.frames, light.frames)


def test_a_folder_without_image_encoder_takes_a_last_frame_through_the_latents(
    tmp_path: Path,
) -> None:
    """Wan 2.2 I2V's layout: no CLIP image encoder, a transformer without image tokens."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    tiny = FAMILY.build_tiny(seed=0)
    config = {**tiny.transformer.config, "image_dim": None, "added_kv_proj_dim": None}
    transformer = WanTransformer3DModel.from_config(config).eval()
    shared = ("tokenizer", "text_encoder", "vae", "scheduler")
    parts = {name: getattr(tiny, name) for name in shared}
    WanImageToVideoPipeline(**parts, transformer=transformer).save_pretrained(tmp_path / "wan22")
    ref = resolve_model(str(tmp_path / "wan22"))
    assert ref.rules.required_images == ("image",)
    path = tmp_path / "first.png"
    Image.new("RGB", (96, 64), (200, 40, 40)).save(path)
    image = StartImage(str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    row = render_row(1, height=64, width=96, image=image, last_image=image)
    (video,) = render_rows(ref, "cpu", [row]).outcomes
    assert isinstance(video, RenderedVideo), video
