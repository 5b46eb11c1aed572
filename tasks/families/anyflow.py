"""AnyFlow (NVIDIA): Wan 2.1 fine-tuned into a flow map, any-step sampling, 4 steps by
default; the Wan VAE and UMT5 text encoder as they are."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
from tasks.families.base import Family, PresetInfo
from tasks.families.parts import (
    UMT5_MAX_TOKENS,
    UMT5_XXL_CONFIG,
    building_on,
    char_tokenizer,
    tiny_umt5_encoder,
    tiny_wan_vae,
)
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

ANYFLOW_13B_REPO = "nvidia/AnyFlow-Wan2.1-T2V-1.3B-Diffusers"
# diffusers' scripts/convert_anyflow_to_diffusers.py: the base model's transformer config
# with the flow map's timestep gate, and this scheduler.
FLOW_MAP = {"gate_value": 0.25, "deltatime_type": "r"}
FLOW_SHIFT = 5.0


class AnyFlow(Family):
    """AnyFlowPipeline: Wan 2.1's grid (4k + 1 frames, sizes multiples of 16), few steps."""

    name: ClassVar[str] = "AnyFlow"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"AnyFlowPipeline"})
    # diffusers' AnyFlow docs: 81 frames of the pipeline's 480×832, 4 steps, written at
    # 16 fps; guidance 1, because the released checkpoints fuse classifier-free guidance
    # into their weights. Any step count works (a flow map, not a fixed-step consistency
    # model), so none is refused. Bounds as Wan 2.1, whose transformer it is.
    rules: ClassVar[ManifestRules] = ManifestRules(
        family="AnyFlow",
        num_frames=81,
        height=480,
        width=832,
        num_inference_steps=4,
        guidance_scale=1.0,
        fps=16,
        max_frames=121,
        min_size=16,
        max_size=1280,
        size_multiple=16,  # its check_inputs
        frame_step=4,
        max_voxels=81 * 720 * 1280,
    )
    token_limit: ClassVar[int] = UMT5_MAX_TOKENS
    denoiser_name: ClassVar[str] = "transformer"
    # Its attention dispatches on diffusers' backends and it declares repeated blocks; it has
    # no step-cache hooks, and with 4 steps there is little for a cache to skip.
    speed: ClassVar[SpeedSupport] = SpeedSupport(
        step_caches=False,
        attention_backends=True,
        fast=Levers(attention="cudnn", compile="regional"),
        fastest=Levers(attention="cudnn", compile="regional", quantize="fp8"),
    )
    card_fps: ClassVar[int] = 16
    # GPU memory as Wan 2.1 1.3B's: the same transformer size, VAE and UMT5-XXL.
    presets: ClassVar[tuple[PresetInfo, ...]] = (
        PresetInfo("anyflow-wan2.1-1.3b", ANYFLOW_13B_REPO, "1.3 B", 18.0, "Apache-2.0"),
        PresetInfo("tiny-anyflow", None, "~0.06 M", None, "none (random weights built in code)"),
    )

    def component_dtypes(self, dtype: torch.dtype) -> dict[str, torch.dtype]:
        return {"vae": torch.float32}  # Wan's VAE, which bands in half precision

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes of diffusers' tests/pipelines/anyflow/test_anyflow.py, tokenizer made here."""
        from diffusers import AnyFlowTransformer3DModel

        torch.manual_seed(seed)
        vae, text_encoder = tiny_wan_vae(), tiny_umt5_encoder()
        transformer = AnyFlowTransformer3DModel(
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
            rope_max_seq_len=1024,  # as published: its table must cover the largest size allowed
            **FLOW_MAP,
        )
        return assemble(transformer, vae, text_encoder)

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """AnyFlow-Wan2.1-T2V-1.3B's transformer, Wan 2.1's VAE and UMT5-XXL, random weights."""
        if blocks is not None:
            raise ValueError(f"`blocks` slices only the benchmarked families, not {preset}.")
        from diffusers import AnyFlowTransformer3DModel, AutoencoderKLWan
        from transformers import UMT5Config, UMT5EncoderModel

        if preset != "anyflow-wan2.1-1.3b":
            raise ModelLoadError(f"{preset!r} is not a full-size AnyFlow preset")
        with building_on(device, dtype):
            # Wan-AI/Wan2.1-T2V-1.3B-Diffusers' transformer/config.json and the flow map's gate
            transformer = AnyFlowTransformer3DModel(
                patch_size=(1, 2, 2),
                num_attention_heads=12,
                attention_head_dim=128,
                in_channels=16,
                out_channels=16,
                text_dim=4096,
                freq_dim=256,
                ffn_dim=8960,
                num_layers=30,
                cross_attn_norm=True,
                eps=1e-6,
                rope_max_seq_len=1024,
                **FLOW_MAP,
            )
            vae = AutoencoderKLWan()  # its defaults are Wan 2.1's VAE
            text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG))
        return assemble(transformer, vae, text_encoder)


def assemble(transformer: Any, vae: Any, text_encoder: Any) -> Any:
    """An AnyFlowPipeline of these models in eval mode, with the converted repos' scheduler."""
    from diffusers import AnyFlowPipeline, FlowMapEulerDiscreteScheduler

    return AnyFlowPipeline(
        tokenizer=char_tokenizer(),
        text_encoder=text_encoder.eval(),
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=FlowMapEulerDiscreteScheduler(num_train_timesteps=1000, shift=FLOW_SHIFT),
    )
