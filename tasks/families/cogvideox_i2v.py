"""CogVideoX 1.0 I2V (CogVideoXImageToVideoPipeline): CogVideoX-5b reading a start image's
latents beside the noise; rows need an image, at the one size its positions were learned at."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
from tasks.families.base import Family, PresetInfo
from tasks.families.cogvideox import TRANSFORMER_CONFIGS, VAE_SCALING_FACTORS, CogVideoX, assemble
from tasks.families.parts import T5_XXL_CONFIG, building_on, one_layer, tiny_t5_encoder
from tasks.rules import ManifestRules

I2V_RULES = replace(
    CogVideoX.rules, family="CogVideoX I2V", image_columns=("image",), required_images=("image",)
)
PRESET = "cogvideox-5b-i2v"
# transformer/config.json of THUDM/CogVideoX-5b-I2V (diffusers' convert script with --i2v):
# CogVideoX-5b's with the image's 16 latent channels beside the noise's, and positional
# embeddings learned at 49 frames of 480×720 (60×90 latents), the only size it renders.
I2V_TRANSFORMER: dict[str, Any] = {
    **TRANSFORMER_CONFIGS["cogvideox-5b"],
    "in_channels": 32,
    "use_learned_positional_embeddings": True,
}
SPATIAL = 8  # the VAE's compression in space


class CogVideoXI2V(Family):
    """THUDM's CogVideoXImageToVideoPipeline: CogVideoX's rules, and a start image per row."""

    name: ClassVar[str] = "CogVideoX I2V"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"CogVideoXImageToVideoPipeline"})
    image_pipeline: ClassVar[str | None] = "CogVideoXImageToVideoPipeline"
    text_family: ClassVar[str] = CogVideoX.name
    rules: ClassVar[ManifestRules] = I2V_RULES
    token_limit: ClassVar[int] = CogVideoX.token_limit
    denoiser_name: ClassVar[str] = "transformer"
    speed = CogVideoX.speed
    card_fps: ClassVar[int] = 8
    # GPU memory as cogvideox-5b's (the model card: 26 GB without diffusers' offloading).
    presets: ClassVar[tuple[PresetInfo, ...]] = (
        PresetInfo(
            PRESET,
            "THUDM/CogVideoX-5b-I2V",
            "5.6 B",
            26.0,
            "CogVideoX licence (custom; commercial use needs registration)",
        ),
        PresetInfo(
            "tiny-cogvideox-i2v", None, "~0.12 M", None, "none (random weights built in code)"
        ),
    )

    def rules_for(self, configs: Mapping[str, Mapping[str, Any]]) -> ManifestRules:
        """Learned positional embeddings fix the size: diffusers refuses any other."""
        transformer = configs.get("transformer", {})
        if not transformer.get("use_learned_positional_embeddings"):
            return I2V_RULES
        size = (
            int(transformer.get("sample_height", 60)) * SPATIAL,
            int(transformer.get("sample_width", 90)) * SPATIAL,
        )
        return replace(I2V_RULES, height=size[0], width=size[1], fixed_size=size)

    def preset_configs(self, preset: str) -> dict[str, dict[str, Any]]:
        return {"transformer": I2V_TRANSFORMER} if preset == PRESET else {}

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes of diffusers' tests/pipelines/cogvideo/test_cogvideox_image2video.py with
        rotary positions only (any size), the real VAE's compression and 226 text positions."""
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

        torch.manual_seed(seed)
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=16,  # rotary positions need a multiple of 16
            in_channels=8,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=32,
            num_layers=2,
            sample_width=4,
            sample_height=4,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=CogVideoX.token_limit,
            use_rotary_positional_embeddings=True,
        )
        vae = AutoencoderKLCogVideoX(
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        )
        return image_pipeline(assemble(transformer, vae, tiny_t5_encoder()))

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """CogVideoX-5b-I2V's transformer, VAE and T5-XXL, random weights, on `device`."""
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
        from transformers import T5Config, T5EncoderModel

        if preset != PRESET:
            raise ModelLoadError(f"{preset!r} is not a full-size CogVideoX I2V preset")
        with building_on(device, dtype):
            config = {**I2V_TRANSFORMER, "num_layers": blocks or I2V_TRANSFORMER["num_layers"]}
            transformer = CogVideoXTransformer3DModel(**config)
            vae = AutoencoderKLCogVideoX(scaling_factor=VAE_SCALING_FACTORS["cogvideox-5b"])
            text_encoder = T5EncoderModel(T5Config(**one_layer(T5_XXL_CONFIG, blocks)))
        return image_pipeline(assemble(transformer, vae, text_encoder))


def image_pipeline(text_pipe: Any) -> Any:
    """The image-to-video pipeline of a CogVideoXPipeline's components and scheduler."""
    from diffusers import CogVideoXImageToVideoPipeline

    return CogVideoXImageToVideoPipeline(**text_pipe.components)
