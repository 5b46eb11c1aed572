"""Wan 2.1 I2V (WanImageToVideoPipeline): Wan's DiT reading a start image twice, as the
video's first latent frame and through a CLIP ViT-H/14 image encoder; rows need an image,
and a last frame too for the first-last-frame model (FLF2V)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
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
from tasks.families.wan import WAN_RULES, Wan
from tasks.families.wan_images import WanImageRows
from tasks.rules import ManifestRules

I2V_REPO, LICENCE = "Wan-AI/Wan2.1-I2V-14B", "Apache-2.0"
I2V_RULES = replace(
    WAN_RULES, family="Wan I2V", image_columns=("image",), required_images=("image",)
)
FLF2V, FLF2V_TINY = "wan2.1-flf2v-14b-720p", "tiny-wan-flf2v"

# transformer/config.json of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers and -720P-Diffusers (the
# same architecture; diffusers' scripts/convert_wan_to_diffusers.py): Wan 2.1 14B with 36
# input channels (noise, the first-frame mask, the image's latents) and image cross-attention.
I2V_14B_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "rope_max_seq_len": 1024,
}
# Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers: the same, with positions for both images' ViT
# tokens (257 each), which it always takes together.
FLF2V_TOKENS = 2 * 257
# image_encoder/config.json: laion/CLIP-ViT-H-14-laion2B-s32B-b79K's vision tower.
VIT_H_14: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 16,
    "num_hidden_layers": 32,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}


class WanI2V(WanImageRows):
    """Every row renders from its start image; a last frame too where the checkpoint's
    transformer places both images' tokens (first-last-frame models)."""

    name = "Wan I2V"
    pipeline_classes = frozenset({"WanImageToVideoPipeline"})
    text_family = Wan.name
    rules: ClassVar[ManifestRules] = I2V_RULES
    token_limit = UMT5_MAX_TOKENS
    denoiser_name = "transformer"
    speed = Wan.speed
    card_fps = 16
    # The cards' "14B" is the text-to-video transformer; image cross-attention adds 2.1 B.
    # GPU memory: bf16 weights (the transformer's 33 GB, UMT5-XXL 11.4 GB, the fp32 image
    # encoder 2.5 GB) and a margin for activations; estimates, not measured.
    presets = (
        PresetInfo("wan2.1-i2v-14b-480p", f"{I2V_REPO}-480P-Diffusers", "16.4 B", 56.0, LICENCE),
        PresetInfo("wan2.1-i2v-14b-720p", f"{I2V_REPO}-720P-Diffusers", "16.4 B", 60.0, LICENCE),
        PresetInfo(FLF2V, "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers", "16.4 B", 60.0, LICENCE),
        PresetInfo("tiny-wan-i2v", None, "~0.07 M", None, "built in code"),
        PresetInfo(FLF2V_TINY, None, "~0.07 M", None, "built in code"),
    )

    def rules_for(self, configs: Mapping[str, Mapping[str, Any]]) -> ManifestRules:
        """A last frame where the pipeline can place it: a first-last-frame transformer gives
        both images' tokens positions (`pos_embed_seq_len`) and needs both; one without image
        tokens (Wan 2.2 I2V) takes it through the latents alone. Wan 2.1 I2V's takes one."""
        transformer = configs.get("transformer", {})
        both = ("image", "last_image")
        if transformer.get("pos_embed_seq_len"):
            return replace(I2V_RULES, image_columns=both, required_images=both)
        if "image_dim" in transformer and transformer["image_dim"] is None:
            return replace(I2V_RULES, image_columns=both)
        return I2V_RULES

    def preset_configs(self, preset: str) -> dict[str, dict[str, Any]]:
        if preset in (FLF2V, FLF2V_TINY):
            return {"transformer": {"pos_embed_seq_len": FLF2V_TOKENS}}
        return {}

    def component_dtypes(self, dtype: torch.dtype) -> dict[str, torch.dtype]:
        # The model card loads the VAE and the image encoder in fp32.
        return {"vae": torch.float32, "image_encoder": torch.float32}

    def build_tiny(self, seed: int = 0) -> Any:
        return self.build_tiny_preset("tiny-wan-i2v", seed)

    def build_tiny_preset(self, preset: str, seed: int = 0) -> Any:
        """Shapes of diffusers' tests/pipelines/wan/test_wan_image_to_video.py, with the
        image cross-attention of the 14B checkpoints and a tokenizer made here; for
        `tiny-wan-flf2v`, positions for a first and a last frame's 65 ViT tokens each."""
        from diffusers import WanTransformer3DModel
        from transformers import CLIPVisionConfig, CLIPVisionModel

        torch.manual_seed(seed)
        vae, text_encoder = tiny_wan_vae(), tiny_umt5_encoder()
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=36,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,
            image_dim=4,
            added_kv_proj_dim=24,
            pos_embed_seq_len=2 * 65 if preset == FLF2V_TINY else None,
        )
        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=4,
                intermediate_size=16,
                num_attention_heads=2,
                num_hidden_layers=2,
                image_size=32,
                patch_size=4,
                projection_dim=4,
            )
        )
        return assemble(transformer, vae, text_encoder, image_encoder, 32, shift=7.0)

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """Wan 2.1 I2V 14B's transformer, VAE, UMT5-XXL and ViT-H/14, random weights, on
        `device`; `blocks` as in `Family.build_random`."""
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

        if preset not in (info.name for info in self.presets if info.repo):
            raise ModelLoadError(f"{preset!r} is not a full-size Wan I2V preset")
        flf2v = preset == FLF2V
        with building_on(device, dtype):
            config = {**I2V_14B_TRANSFORMER, "num_layers": blocks or 40}
            if flf2v:
                config["pos_embed_seq_len"] = FLF2V_TOKENS
            transformer = WanTransformer3DModel(**config)
            text_encoder = UMT5EncoderModel(UMT5Config(**one_layer(UMT5_XXL_CONFIG, blocks)))
            image_encoder = CLIPVisionModel(CLIPVisionConfig(**VIT_H_14))
            vae = AutoencoderKLWan()  # its defaults are Wan 2.1's VAE
        # The checkpoints' schedulers: UniPC at flow shift 3, FLF2V's at 16
        # (diffusers' scripts/convert_wan_to_diffusers.py).
        shift = 16.0 if flf2v else 3.0
        return assemble(transformer, vae, text_encoder, image_encoder, 224, shift=shift)


def assemble(
    transformer: Any, vae: Any, text_encoder: Any, image_encoder: Any, size: int, shift: float
) -> Any:
    """A WanImageToVideoPipeline of these models in eval mode, with a CLIP image processor
    for `size`-pixel crops made here (OpenAI's mean and deviation, no download)."""
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline
    from transformers import CLIPImageProcessor

    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift
    )
    return WanImageToVideoPipeline(
        tokenizer=char_tokenizer(),
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=scheduler,
        image_processor=CLIPImageProcessor(crop_size=size, size={"shortest_edge": size}),
        image_encoder=image_encoder.eval(),
        transformer=transformer.eval(),
    )
