"""SANA-Video (NVIDIA): a 2 B linear-attention DiT over Wan 2.1's VAE, prompted through
Gemma 2 2B."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
from tasks.families.base import Family, PresetInfo
from tasks.families.parts import TINY_WORDS, building_on, tiny_wan_vae, word_tokenizer
from tasks.manifest import RenderRow
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

SANA_VIDEO_2B_REPO = "Efficient-Large-Model/SANA-Video_2B_480p_diffusers"
SANA_MAX_TOKENS = 300  # SanaVideoPipeline's `max_sequence_length` default
# diffusers' scripts/convert_sana_video_to_diffusers.py: the 2B transformer over Wan's VAE
# (sample size 30: 8x VAE times 2x2 patches, the 480p aspect-ratio bins).
TRANSFORMER_2B: dict[str, Any] = {
    "in_channels": 16,
    "out_channels": 16,
    "num_attention_heads": 20,
    "attention_head_dim": 112,
    "num_layers": 20,
    "num_cross_attention_heads": 20,
    "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240,
    "caption_channels": 2304,
    "mlp_ratio": 3.0,
    "attention_bias": False,
    "sample_size": 30,
    "patch_size": (1, 2, 2),
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
}
# Efficient-Large-Model/gemma-2-2b-it's config.json (Gemma 2 2B), whose decoder it keeps.
GEMMA2_2B: dict[str, Any] = {
    "vocab_size": 256000,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "max_position_embeddings": 8192,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0,
}


class SanaVideo(Family):
    """SanaVideoPipeline: 4k + 1 frames (Wan's VAE), sizes multiples of 32, 16 fps."""

    name: ClassVar[str] = "SANA-Video"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"SanaVideoPipeline"})
    # diffusers' SANA-Video docs: 81 frames of 480×832, guidance 6, 50 steps, written at
    # 16 fps. check_inputs wants sizes divisible by 32. A 480p model trained on 81 frames:
    # no more frames or pixels than that.
    rules: ClassVar[ManifestRules] = ManifestRules(
        family="SANA-Video",
        num_frames=81,
        height=480,
        width=832,
        num_inference_steps=50,
        guidance_scale=6.0,
        fps=16,
        max_frames=81,
        min_size=32,
        max_size=832,
        size_multiple=32,
        frame_step=4,
        max_voxels=81 * 480 * 832,
        max_voxels_shape=(81, 480, 832),
    )
    token_limit: ClassVar[int] = SANA_MAX_TOKENS
    denoiser_name: ClassVar[str] = "transformer"
    # Its self-attention is linear and computes itself; only its cross-attention dispatches
    # on diffusers' backends. No step-cache hooks and no repeated blocks declared: the whole
    # transformer compiles.
    speed: ClassVar[SpeedSupport] = SpeedSupport(
        step_caches=False,
        attention_backends=True,
        fast=Levers(attention="cudnn", compile="full"),
        fastest=Levers(attention="cudnn", compile="full", quantize="fp8"),
    )
    card_fps: ClassVar[int] = 16
    # GPU memory: bf16 transformer (≈ 4 GB) and Gemma 2 2B (≈ 5.2 GB), the VAE in fp32,
    # and a margin for decoding 81 frames of 480×832; an estimate, not measured.
    presets: ClassVar[tuple[PresetInfo, ...]] = (
        PresetInfo("sana-video-2b", SANA_VIDEO_2B_REPO, "2 B", 16.0, "Apache-2.0"),
        PresetInfo("tiny-sana-video", None, "~0.06 M", None, "none (random weights built in code)"),
    )

    def component_dtypes(self, dtype: torch.dtype) -> dict[str, torch.dtype]:
        # The docs: the VAE in fp32, and the text encoder in bf16 or fp32, never fp16.
        text = {"text_encoder": torch.float32} if dtype == torch.float16 else {}
        return {"vae": torch.float32, **text}

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes of diffusers' tests/pipelines/sana_video/test_sana_video.py, with a
        tokenizer made here."""
        from diffusers import SanaVideoTransformer3DModel
        from transformers import Gemma2Config, Gemma2Model

        torch.manual_seed(seed)
        vae = tiny_wan_vae()
        text_encoder = Gemma2Model(
            Gemma2Config(
                head_dim=16,
                hidden_size=8,
                intermediate_size=64,
                num_attention_heads=2,
                num_hidden_layers=1,
                num_key_value_heads=2,
                vocab_size=len(TINY_WORDS) + 3,
                pad_token_id=0,
            )
        )
        transformer = SanaVideoTransformer3DModel(
            in_channels=16,
            out_channels=16,
            num_attention_heads=2,
            attention_head_dim=12,
            num_layers=2,
            num_cross_attention_heads=2,
            cross_attention_head_dim=12,
            cross_attention_dim=24,
            caption_channels=8,
            mlp_ratio=2.5,
            attention_bias=False,
            sample_size=30,
            patch_size=(1, 2, 2),
            norm_elementwise_affine=False,
            norm_eps=1e-6,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,  # as published: its table must cover the largest size allowed
        )
        return assemble(transformer, vae, text_encoder)

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """SANA-Video 2B's transformer, Wan 2.1's VAE and Gemma 2 2B, random weights."""
        if blocks is not None:
            raise ValueError(f"`blocks` slices only the benchmarked families, not {preset}.")
        from diffusers import AutoencoderKLWan, SanaVideoTransformer3DModel
        from transformers import Gemma2Config, Gemma2Model

        if preset != "sana-video-2b":
            raise ModelLoadError(f"{preset!r} is not a full-size SANA-Video preset")
        with building_on(device, dtype):
            transformer = SanaVideoTransformer3DModel(**TRANSFORMER_2B)
            vae = AutoencoderKLWan()  # its defaults are Wan 2.1's VAE
            text_encoder = Gemma2Model(Gemma2Config(**GEMMA2_2B))
        return assemble(transformer, vae, text_encoder)

    def call_arguments(self, rows: Sequence[RenderRow]) -> dict[str, Any]:
        """Its pipeline calls the frame count `frames`; resolution binning is off, because it
        renders a binned size and resizes it to the row's, which the row did not ask for."""
        call = super().call_arguments(rows)
        call["frames"] = call.pop("num_frames")
        return {**call, "use_resolution_binning": False}


def assemble(transformer: Any, vae: Any, text_encoder: Any) -> Any:
    """A SanaVideoPipeline of these models in eval mode, with the 480p repo's scheduler."""
    from diffusers import DPMSolverMultistepScheduler, SanaVideoPipeline

    scheduler = DPMSolverMultistepScheduler(
        flow_shift=8.0, use_flow_sigmas=True, prediction_type="flow_prediction"
    )
    return SanaVideoPipeline(
        tokenizer=word_tokenizer(SANA_MAX_TOKENS),
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=scheduler,
    )
