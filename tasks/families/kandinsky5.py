"""Kandinsky 5.0 Video Lite (Kandinsky Lab): a 2 B DiT over HunyuanVideo's VAE, prompted
through Qwen2.5-VL 7B and CLIP ViT-L."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
from tasks.families.base import Family, PresetInfo
from tasks.families.parts import (
    QWEN25_VL_7B,
    TINY_WORDS,
    building_on,
    byte_tokenizer,
    byte_vocab,
    word_tokenizer,
)
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

KANDINSKY_LITE_REPO = "kandinskylab/Kandinsky-5.0-T2V-Lite-sft-5s-Diffusers"
QWEN_MAX_TOKENS = 512  # Kandinsky5T2VPipeline's `max_sequence_length` default
CLIP_MAX_TOKENS = 77
# dit_params of configs/config_5s_sft.yaml in github.com/ai-forever/Kandinsky-5.
LITE_TRANSFORMER: dict[str, Any] = {
    "in_visual_dim": 16,
    "out_visual_dim": 16,
    "time_dim": 512,
    "patch_size": (1, 2, 2),
    "model_dim": 1792,
    "ff_dim": 7168,
    "num_text_blocks": 2,
    "num_visual_blocks": 32,
    "axes_dims": (16, 24, 24),
    "visual_cond": True,
    "in_text_dim": 3584,
    "in_text_dim2": 768,
}
# openai/clip-vit-large-patch14's text model.
CLIP_L: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "vocab_size": 49408,
    "max_position_embeddings": CLIP_MAX_TOKENS,
    "hidden_act": "quick_gelu",
}


class Kandinsky5(Family):
    """Kandinsky5T2VPipeline: 4k + 1 frames (HunyuanVideo's VAE), sizes multiples of 16."""

    name: ClassVar[str] = "Kandinsky 5"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"Kandinsky5T2VPipeline"})
    # The pipeline's defaults (the 5 s model: 121 frames of 512×768, 24 fps, 50 steps,
    # guidance 5). check_inputs wants sizes divisible by 16. A 5 s model trained at 512p:
    # no more frames or pixels than its default video.
    rules: ClassVar[ManifestRules] = ManifestRules(
        family="Kandinsky 5",
        num_frames=121,
        height=512,
        width=768,
        num_inference_steps=50,
        guidance_scale=5.0,
        fps=24,
        max_frames=121,
        min_size=16,
        max_size=768,
        size_multiple=16,
        frame_step=4,
        max_voxels=121 * 512 * 768,
        max_voxels_shape=(121, 512, 768),
    )
    token_limit: ClassVar[int] = QWEN_MAX_TOKENS
    denoiser_name: ClassVar[str] = "transformer"
    # Its attention dispatches on diffusers' backends and it declares repeated blocks. It is
    # a CacheMixin, but a first-block cache fails on its blocks' signature
    # (`hidden_states` is not a parameter of theirs): no profile chooses a cache.
    speed: ClassVar[SpeedSupport] = SpeedSupport(
        step_caches=True,
        attention_backends=True,
        fast=Levers(attention="cudnn", compile="regional"),
        fastest=Levers(attention="cudnn", compile="regional", quantize="fp8"),
    )
    card_fps: ClassVar[int] = 24
    # GPU memory: bf16 weights (Qwen2.5-VL 7B 16.6 GB, transformer ≈ 4 GB, CLIP 0.25 GB)
    # and a margin for decoding 121 frames of 512×768; an estimate, not measured.
    presets: ClassVar[tuple[PresetInfo, ...]] = (
        PresetInfo("kandinsky-5-lite", KANDINSKY_LITE_REPO, "2 B", 32.0, "MIT"),
        PresetInfo(
            "tiny-kandinsky-5", None, "~0.02 M", None, "none (random weights built in code)"
        ),
    )

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes of diffusers' tests/pipelines/kandinsky5/test_kandinsky5.py, with the real
        VAE's 8× spatial and 4× temporal compression and tokenizers made here."""
        from diffusers import AutoencoderKLHunyuanVideo, Kandinsky5Transformer3DModel
        from transformers import (
            CLIPTextConfig,
            CLIPTextModel,
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
        )

        torch.manual_seed(seed)
        vae = AutoencoderKLHunyuanVideo(
            latent_channels=16,
            down_block_types=["HunyuanVideoDownBlock3D"] * 4,
            up_block_types=["HunyuanVideoUpBlock3D"] * 4,
            block_out_channels=[8, 8, 8, 8],
            layers_per_block=1,
            norm_num_groups=4,
            mid_block_add_attention=False,
        )
        width = 32
        qwen: dict[str, Any] = {
            "text_config": {
                "hidden_size": width,
                "intermediate_size": width,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]},
                "vocab_size": len(TINY_WORDS) + 3,
            },
            "vision_config": {
                "depth": 1,
                "hidden_size": width,
                "intermediate_size": width,
                "num_heads": 2,
                "out_hidden_size": width,
            },
            "hidden_size": width,
            "vocab_size": len(TINY_WORDS) + 3,
        }
        text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**qwen))
        text_encoder_2 = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=16,
                intermediate_size=16,
                num_attention_heads=2,
                num_hidden_layers=2,
                vocab_size=len(byte_vocab()),
                max_position_embeddings=CLIP_MAX_TOKENS,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                projection_dim=16,
            )
        )
        transformer = Kandinsky5Transformer3DModel(
            in_visual_dim=16,
            out_visual_dim=16,
            in_text_dim=width,
            in_text_dim2=16,
            time_dim=16,
            patch_size=(1, 2, 2),
            model_dim=16,
            ff_dim=32,
            num_text_blocks=1,
            num_visual_blocks=2,
            axes_dims=(2, 2, 4),
            visual_cond=True,
        )
        return assemble(transformer, vae, text_encoder, text_encoder_2)

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """Kandinsky 5.0 Lite's transformer, HunyuanVideo's VAE, Qwen2.5-VL 7B and CLIP
        ViT-L, random weights, on `device`."""
        if blocks is not None:
            raise ValueError(f"`blocks` slices only the benchmarked families, not {preset}.")
        from diffusers import AutoencoderKLHunyuanVideo, Kandinsky5Transformer3DModel
        from transformers import (
            CLIPTextConfig,
            CLIPTextModel,
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
        )

        if preset != "kandinsky-5-lite":
            raise ModelLoadError(f"{preset!r} is not a full-size Kandinsky 5 preset")
        with building_on(device, dtype):
            transformer = Kandinsky5Transformer3DModel(**LITE_TRANSFORMER)
            vae = AutoencoderKLHunyuanVideo()  # its defaults are HunyuanVideo's VAE
            text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**QWEN25_VL_7B))
            text_encoder_2 = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        return assemble(transformer, vae, text_encoder, text_encoder_2)


def assemble(transformer: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> Any:
    """A Kandinsky5T2VPipeline of these models in eval mode, with a flow-matching scheduler
    (shift 5, as diffusers' tests build it)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Kandinsky5T2VPipeline

    return Kandinsky5T2VPipeline(
        transformer=transformer.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        # Whole words, so the pipeline's prompt template (whose first 128 tokens it drops)
        # still leaves the prompt's words to encode.
        tokenizer=word_tokenizer(QWEN_MAX_TOKENS),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=byte_tokenizer(CLIP_MAX_TOKENS),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
    )
