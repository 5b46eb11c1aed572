"""LTX-Video (Lightricks): a 2 B DiT over a VAE that compresses 32× in space and 8× in
time, prompted through T5-XXL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
from tasks.families.base import Family, PresetInfo
from tasks.families.parts import (
    T5_XXL_CONFIG,
    building_on,
    one_layer,
    tiny_t5_encoder,
    word_tokenizer,
)
from tasks.manifest import RenderRow
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

LTX_REPO = "Lightricks/LTX-Video"
# LTXPipeline's `max_sequence_length` default, and the tokenizer's model_max_length.
LTX_MAX_TOKENS = 128


class LTXVideo(Family):
    """Lightricks' LTXPipeline: frame counts 8k + 1, sizes multiples of 32, 25 fps."""

    name: ClassVar[str] = "LTX-Video"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"LTXPipeline"})
    # The same weights condition on a first frame (its latent replaces the first one).
    image_pipeline: ClassVar[str | None] = "LTXImageToVideoPipeline"
    # LTXPipeline.__call__'s defaults. The model card: sizes divisible by 32, 8k + 1
    # frames, best under 720×1280 and 257 frames, which bound the rest.
    rules: ClassVar[ManifestRules] = ManifestRules(
        family="LTX-Video",
        num_frames=161,
        height=512,
        width=704,
        num_inference_steps=50,
        min_inference_steps=2,  # its scheduler's terminal shift divides by zero at 1 step
        guidance_scale=3.0,
        fps=25,
        max_frames=257,
        max_size=1280,
        size_multiple=32,
        frame_step=8,
        max_voxels=257 * 512 * 704,
        image_columns=("image",),
    )
    token_limit: ClassVar[int] = LTX_MAX_TOKENS
    denoiser_name: ClassVar[str] = "transformer"
    # A first-block cache at 0.05 (FirstBlockCacheConfig's default) for `fast`, at 0.1 for
    # `fastest`: diffusers PR #11180, which added it, measured Wan 2.1 at 0.1 at 222 s -> 90 s.
    # cuDNN attention is exact and ships with PyTorch; regional compile, the whole model's
    # speed at a fraction of its compile time (diffusers' docs, "Regional compilation");
    # FP8 (torchao) as in the diffusers-torchao benchmarks (CogVideoX-5B, H100: 87.5 -> 75.3 s).
    speed: ClassVar[SpeedSupport] = SpeedSupport(
        step_caches=True,
        attention_backends=True,
        fast=Levers(attention="cudnn", cache="first-block:0.05", compile="regional"),
        fastest=Levers(
            attention="cudnn", cache="first-block:0.1", compile="regional", quantize="fp8"
        ),
    )
    card_fps: ClassVar[int] = 24  # its card's `export_to_video` call, not the pipeline's 25
    presets: ClassVar[tuple[PresetInfo, ...]] = (
        # The repo's diffusers folders hold v0.9.0 (the later versions are single files
        # or repos of their own), in bf16 without a dtype variant. GPU memory: bf16
        # weights (T5-XXL 9.5 GB, transformer 3.8 GB, VAE 0.8 GB) plus ≈ 5 GB for
        # decoding 161 frames of 512×704 in one piece; an estimate, not a measurement.
        PresetInfo(
            "ltx-video",
            LTX_REPO,
            "1.9 B",
            19.0,
            "LTX-Video 0.9 licence (RAIL-M based, custom; read it on the repo)",
        ),
        PresetInfo("tiny-ltx", None, "~0.17 M", None, "none (random weights built in code)"),
    )

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes as in diffusers' tests/pipelines/ltx/test_ltx.py, but with the real VAE's
        32× spatial and 8× temporal compression, so that tiny latents stay tiny."""
        from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

        torch.manual_seed(seed)
        transformer = LTXVideoTransformer3DModel(
            in_channels=8,
            out_channels=8,
            num_attention_heads=4,
            attention_head_dim=8,
            cross_attention_dim=32,
            num_layers=2,  # two blocks: a first-block cache skips the second
            caption_channels=32,
        )
        vae = AutoencoderKLLTXVideo(
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
        )
        return assemble(transformer, vae, tiny_t5_encoder(), LTX_MAX_TOKENS)

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """LTX-Video 0.9.0's transformer, VAE and T5-XXL with random weights, on `device`."""
        from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
        from transformers import T5Config, T5EncoderModel

        if preset != "ltx-video":
            raise ModelLoadError(f"{preset!r} is not a full-size LTX-Video preset")
        with building_on(device, dtype):
            # transformer/config.json and vae/config.json of Lightricks/LTX-Video
            # (v0.9.0, as diffusers' scripts/convert_ltx_to_diffusers.py writes them).
            transformer = LTXVideoTransformer3DModel(
                in_channels=128,
                out_channels=128,
                patch_size=1,
                patch_size_t=1,
                num_attention_heads=32,
                attention_head_dim=64,
                cross_attention_dim=2048,
                num_layers=blocks or 28,
                caption_channels=4096,
            )
            vae = AutoencoderKLLTXVideo(
                latent_channels=128,
                block_out_channels=(128, 256, 512, 512),
                decoder_block_out_channels=(128, 256, 512, 512),
                layers_per_block=(4, 3, 3, 3, 4),
                decoder_layers_per_block=(4, 3, 3, 3, 4),
                spatio_temporal_scaling=(True, True, True, False),
                decoder_spatio_temporal_scaling=(True, True, True, False),
                patch_size=4,
                patch_size_t=1,
                timestep_conditioning=False,
            )
            text_encoder = T5EncoderModel(T5Config(**one_layer(T5_XXL_CONFIG, blocks)))
        return assemble(transformer, vae, text_encoder, LTX_MAX_TOKENS)

    def call_arguments(self, rows: Sequence[RenderRow]) -> dict[str, Any]:
        """As `Family.call_arguments`, and the rows' fps, which LTX's positions are scaled by."""
        rates = {row.fps for row in rows}
        if len(rates) != 1:
            raise ValueError(
                f"`rows` have to share one fps for LTX-Video but have {sorted(rates)}."
            )
        return {**super().call_arguments(rows), "frame_rate": rates.pop()}


def assemble(transformer: Any, vae: Any, text_encoder: Any, max_tokens: int) -> Any:
    """An LTXPipeline of these models, in eval mode as `from_pretrained` leaves them (T5's
    dropout would otherwise make every render differ), with the repo's scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline

    # scheduler/scheduler_config.json of Lightricks/LTX-Video
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    return LTXPipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=word_tokenizer(max_tokens),
        transformer=transformer.eval(),
    )
