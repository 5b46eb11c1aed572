"""Wan 2.1 / 2.2 (WanPipeline): a flow-matching DiT, a UMT5 text encoder, a causal 3D VAE;
Wan 2.2 TI2V-5B's weights also render rows with a start image."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import torch

from tasks.families.base import PresetInfo
from tasks.families.parts import (
    UMT5_MAX_TOKENS,
    UMT5_XXL_CONFIG,
    building_on,
    char_tokenizer,
    one_layer,
    tiny_umt5_encoder,
    tiny_wan_vae,
)
from tasks.families.wan_images import WanImageRows
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

# The model card's defaults: 81 frames of 480x832 at 16 fps, 50 steps, guidance 5. Its
# negative prompt is a long Chinese list; the default here stays empty, as for ModelScope,
# so that a row means what it says (a row may still name it).
WAN_RULES = ManifestRules(
    family="Wan",
    num_frames=81,
    height=480,
    width=832,
    num_inference_steps=50,
    guidance_scale=5.0,
    fps=16,
    max_frames=121,
    min_size=16,
    max_size=1280,
    size_multiple=16,  # the VAE's 8x times the transformer's 2x2 patches
    frame_step=4,  # the VAE packs 4 frames into one latent frame, after the first
    max_voxels=81 * 720 * 1280,
)
# A VAE compressing 16x in space is Wan 2.2 TI2V-5B's; its card renders 121 frames of
# 1280x704 at 24 fps, which the cap above (Wan 2.1 14B's 720p) would refuse. Its
# transformer also takes a start image as the first latent frame (`expand_timesteps`).
WAN22_5B_VIDEO = (121, 704, 1280)
TI2V_TINY = "tiny-wan2.2-ti2v"


class Wan(WanImageRows):
    name = "Wan"
    pipeline_classes = frozenset({"WanPipeline"})
    rules: ClassVar[ManifestRules] = WAN_RULES
    token_limit = UMT5_MAX_TOKENS
    denoiser_name = "transformer"
    # A first-block cache at 0.05 (FirstBlockCacheConfig's default) for `fast`, at 0.1 for
    # `fastest`: diffusers PR #11180, which added it, measured Wan 2.1 at 0.1 at 222 s -> 90 s.
    # cuDNN attention is exact and ships with PyTorch; regional compile, the whole model's
    # speed at a fraction of its compile time (diffusers' docs, "Regional compilation");
    # FP8 (torchao) as in the diffusers-torchao benchmarks (CogVideoX-5B, H100: 87.5 -> 75.3 s).
    speed = SpeedSupport(
        step_caches=True,
        attention_backends=True,
        fast=Levers(attention="cudnn", cache="first-block:0.05", compile="regional"),
        fastest=Levers(
            attention="cudnn", cache="first-block:0.1", compile="regional", quantize="fp8"
        ),
    )
    card_fps = 16
    # GPU memory: bf16 weights (UMT5-XXL is 11.4 GB of it) and a margin for activations;
    # estimates, not measured.
    presets = (
        PresetInfo("wan2.1-1.3b", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "1.3 B", 18.0, "Apache-2.0"),
        PresetInfo("wan2.1-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "14 B", 48.0, "Apache-2.0"),
        PresetInfo("wan2.2-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "5 B", 28.0, "Apache-2.0"),
        # Both experts resident: 2 × 28.6 GB of bf16 weights besides UMT5-XXL.
        PresetInfo(
            "wan2.2-a14b", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "2 × 14 B", 80.0, "Apache-2.0"
        ),
        PresetInfo("tiny-wan", None, "~0.06 M", None, "built in code"),
        PresetInfo(TI2V_TINY, None, "~0.07 M", None, "built in code"),
    )

    def rules_for(self, configs: Mapping[str, Mapping[str, Any]]) -> ManifestRules:
        """Sizes are multiples of the VAE's spatial factor times the transformer's patch:
        WanPipeline rounds any other size down without an error."""
        spatial = int(configs.get("vae", {}).get("scale_factor_spatial", 8))
        patch = configs.get("transformer", {}).get("patch_size", (1, 2, 2))
        multiple = spatial * max(int(patch[1]), int(patch[2]))
        if spatial == 8 and multiple == WAN_RULES.size_multiple:
            return WAN_RULES
        rules = replace(WAN_RULES, size_multiple=multiple, min_size=multiple)
        if spatial != 16:
            return rules
        frames, height, width = WAN22_5B_VIDEO
        return replace(
            rules,
            num_frames=frames,
            height=height,
            width=width,
            fps=24,
            max_voxels=frames * height * width,
            max_voxels_shape=WAN22_5B_VIDEO,
            image_columns=("image",),
        )

    def preset_configs(self, preset: str) -> dict[str, dict[str, Any]]:
        if preset in ("wan2.2-5b", TI2V_TINY):  # vae/config.json of Wan2.2-TI2V-5B-Diffusers
            return {"vae": {"scale_factor_spatial": 16}}
        return {}

    def component_dtypes(self, dtype: torch.dtype) -> dict[str, torch.dtype]:
        # Wan's causal VAE decodes with visible banding in half precision; the model card
        # loads it in fp32, and it costs little of the GPU's time.
        return {"vae": torch.float32}

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes of diffusers' tests/pipelines/wan/test_wan.py, with a tokenizer made here."""
        from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

        tokenizer = char_tokenizer()
        torch.manual_seed(seed)
        vae, text_encoder = tiny_wan_vae(), tiny_umt5_encoder()
        transformer: Any = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,  # as published: its table must cover the largest size allowed
        )
        return WanPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder.eval(),
            transformer=transformer.eval(),
            vae=vae.eval(),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        )

    def build_tiny_preset(self, preset: str, seed: int = 0) -> Any:
        """`tiny-wan`, or for `tiny-wan2.2-ti2v` the same with Wan 2.2 TI2V-5B's layout: a
        residual VAE of 2×2 patches, 16× in space, and start images as the first latent."""
        from diffusers import AutoencoderKLWan, WanPipeline

        tiny = self.build_tiny(seed)
        if preset != TI2V_TINY:
            return tiny
        vae: Any = AutoencoderKLWan(
            base_dim=3,
            decoder_base_dim=4,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
            latents_mean=[0.0] * 16,
            latents_std=[1.0] * 16,
        )
        return WanPipeline(**{**tiny.components, "vae": vae.eval()}, expand_timesteps=True)

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """The architecture of a full-size preset (configs as published on the Hub), random
        weights, built directly on `device` in `dtype`; `blocks` as in `Family.build_random`."""
        from diffusers import UniPCMultistepScheduler, WanPipeline

        if preset not in RANDOM_SHAPES:
            raise ValueError(
                f"`preset` has to be one of {sorted(RANDOM_SHAPES)} but is {preset!r}."
            )
        with building_on(device, dtype):
            transformer, vae, text_encoder = wan_components(preset, blocks)
            # Wan 2.2 A14B: a second expert of the same shape takes the low-noise steps.
            two_experts = "boundary_ratio" in RANDOM_SHAPES[preset]
            transformer_2 = wan_transformer(preset, blocks) if two_experts else None
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=RANDOM_SHAPES[preset]["flow_shift"],
        )
        return WanPipeline(
            tokenizer=char_tokenizer(),
            text_encoder=text_encoder.eval(),
            transformer=transformer.eval(),
            transformer_2=transformer_2.eval() if transformer_2 is not None else None,
            vae=vae.eval(),
            scheduler=scheduler,
            boundary_ratio=RANDOM_SHAPES[preset].get("boundary_ratio"),
            expand_timesteps=preset == "wan2.2-5b",
        )


# The published transformer configs; Wan 2.2 5B adds its own VAE (16x, 48 channels). Wan
# 2.2 A14B is two 14B experts, the first above the boundary (0.875 of the 1000 training
# timesteps), with the sampling shift of Wan 2.2's t2v-A14B config.
RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "wan2.1-1.3b": dict(heads=12, ffn=8960, layers=30, channels=16, flow_shift=3.0),
    "wan2.1-14b": dict(heads=40, ffn=13824, layers=40, channels=16, flow_shift=5.0),
    "wan2.2-5b": dict(heads=24, ffn=14336, layers=30, channels=48, flow_shift=5.0),
    "wan2.2-a14b": dict(
        heads=40, ffn=13824, layers=40, channels=16, flow_shift=12.0, boundary_ratio=0.875
    ),
}


def wan_components(preset: str, blocks: int | None = None) -> tuple[Any, Any, Any]:
    """Transformer, VAE and UMT5-XXL encoder of `preset`, built on the current device; with
    `blocks`, that many transformer blocks and one encoder layer."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    transformer = wan_transformer(preset, blocks)
    if preset == "wan2.2-5b":
        # Random weights: the latents' per-channel statistics only scale them.
        vae = AutoencoderKLWan(
            base_dim=160,
            decoder_base_dim=256,
            z_dim=48,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
            latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
        )
    else:
        vae = AutoencoderKLWan()  # its defaults are Wan 2.1's VAE
    return transformer, vae, UMT5EncoderModel(UMT5Config(**one_layer(UMT5_XXL_CONFIG, blocks)))


def wan_transformer(preset: str, blocks: int | None = None) -> Any:
    """The transformer of full-size `preset`, built on the current device; its first
    `blocks` blocks only, when given."""
    from diffusers import WanTransformer3DModel

    shape = RANDOM_SHAPES[preset]
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=shape["heads"],
        attention_head_dim=128,
        in_channels=shape["channels"],
        out_channels=shape["channels"],
        text_dim=4096,
        freq_dim=256,
        ffn_dim=shape["ffn"],
        num_layers=blocks or shape["layers"],
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )
