"""LTX-2 (Lightricks): one DiT that denoises a video and its sound track together, over a
video VAE (32× in space, 8× in time), an audio VAE and a vocoder, prompted through Gemma 3."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
from tasks.families.base import Decoded, Family, PresetInfo, nonfinite, to_uint8
from tasks.families.ltx2_configs import GEMMA3_12B, LTX2_CONFIGS, tiny_ltx2_components
from tasks.families.parts import building_on, word_tokenizer
from tasks.manifest import RenderRow
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

LTX2_REPO = "Lightricks/LTX-2"
LTX2_DISTILLED_REPO = "diffusers/LTX-2.3-Distilled-Diffusers"
LTX2_MAX_TOKENS = 1024  # LTX2Pipeline's `max_sequence_length` default
# diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES: the schedule the distilled
# checkpoints were trained on, one sigma per step.
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
# LTX2Pipeline's docstring: 121 frames of 512×768 at 24 fps, 30 steps, guidance 3. Its
# check_inputs wants sizes divisible by 32; frames are 8k + 1 (the VAE's time grid), up to
# the pipeline's longest duration (`max_seconds` 20: 481 frames at 24 fps). Frames × pixels
# are capped as LTX-Video's card caps them (257 × 720 × 1280). At 32 pixels the latent is
# 1×1, which LTX-2.0's VAE decoder cannot reflect-pad: 64 at least.
LTX2_RULES = ManifestRules(
    family="LTX-2",
    num_frames=121,
    height=512,
    width=768,
    num_inference_steps=30,
    min_inference_steps=2,  # its scheduler's terminal shift divides by zero at 1 step
    guidance_scale=3.0,
    fps=24,
    max_frames=481,
    max_size=1280,
    size_multiple=32,
    frame_step=8,
    max_voxels=257 * 720 * 1280,
    max_voxels_shape=(257, 720, 1280),
)
# The distilled checkpoints' card: 8 steps without guidance (CFG 1). The schedule takes any
# other step count, so none is refused.
DISTILLED_CARD = {"num_inference_steps": len(DISTILLED_SIGMAS), "guidance_scale": 1.0}


class LTX2(Family):
    """LTX2Pipeline: a video with its sound (a waveform at the vocoder's sample rate)."""

    name: ClassVar[str] = "LTX-2"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"LTX2Pipeline"})
    rules: ClassVar[ManifestRules] = LTX2_RULES
    token_limit: ClassVar[int] = LTX2_MAX_TOKENS
    denoiser_name: ClassVar[str] = "transformer"
    has_sound: ClassVar[bool] = True
    # Its attention dispatches on diffusers' backends and it declares repeated blocks. Its
    # joint video–audio blocks are missing from the registry of block outputs that diffusers'
    # step caches read (diffusers/hooks/_helpers.py): no profile chooses a cache.
    speed: ClassVar[SpeedSupport] = SpeedSupport(
        step_caches=True,
        attention_backends=True,
        fast=Levers(attention="cudnn", compile="regional"),
        fastest=Levers(attention="cudnn", compile="regional", quantize="fp8"),
    )
    card_fps: ClassVar[int] = 24
    # GPU memory: bf16 weights (transformer and connectors 40.6 GB or 44.3 GB, Gemma 3 12B
    # 24.4 GB, VAEs and vocoder under 3 GB) and a margin for 121 frames of 512×768; estimates.
    presets: ClassVar[tuple[PresetInfo, ...]] = (
        PresetInfo(
            "ltx-2", LTX2_REPO, "19 B", 76.0, "LTX-2 Community License (read it on the repo)"
        ),
        PresetInfo(
            "ltx-2-distilled",
            LTX2_DISTILLED_REPO,
            "22 B",
            80.0,
            "LTX-2 Community License (read it on the repo)",
        ),
        PresetInfo("tiny-ltx2", None, "~0.5 M", None, "none (random weights built in code)"),
    )

    def rules_for(self, configs: Mapping[str, Mapping[str, Any]]) -> ManifestRules:
        """The family's rules, with a distilled card's step count and guidance."""
        card = configs.get("card", {})
        return replace(LTX2_RULES, **card) if card else LTX2_RULES

    def preset_configs(self, preset: str) -> dict[str, dict[str, Any]]:
        # A distilled checkpoint's configs are those of its base model: its recipe is the
        # card's, which the preset carries.
        return {"card": DISTILLED_CARD} if preset == "ltx-2-distilled" else {}

    def build_tiny(self, seed: int = 0) -> Any:
        """LTX-2.0's shapes at width 8–32, with the real VAE's 32× spatial and 8× temporal
        compression, and a vocoder whose output spans the video (24 kHz, as LTX-2.0's)."""
        torch.manual_seed(seed)
        return assemble(**tiny_ltx2_components(), tokenizer=word_tokenizer(LTX2_MAX_TOKENS))

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """LTX-2.0's (`ltx-2`) or LTX-2.3's (`ltx-2-distilled`) components and Gemma 3 12B,
        random weights, on `device`."""
        if blocks is not None:
            raise ValueError(f"`blocks` slices only the benchmarked families, not {preset}.")
        from diffusers import (
            AutoencoderKLLTX2Audio,
            AutoencoderKLLTX2Video,
            LTX2VideoTransformer3DModel,
        )
        from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
        from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration

        if preset not in LTX2_CONFIGS:
            raise ModelLoadError(f"{preset!r} is not a full-size LTX-2 preset")
        configs = LTX2_CONFIGS[preset]
        vocoder = LTX2VocoderWithBWE if preset == "ltx-2-distilled" else LTX2Vocoder
        with building_on(device, dtype):
            components = {
                "transformer": LTX2VideoTransformer3DModel(**configs["transformer"]),
                "connectors": LTX2TextConnectors(**configs["connectors"]),
                "vae": AutoencoderKLLTX2Video(**configs["vae"]),
                "audio_vae": AutoencoderKLLTX2Audio(),  # its defaults are LTX-2's
                "vocoder": vocoder(),  # each class's defaults are its checkpoint's
                "text_encoder": Gemma3ForConditionalGeneration(Gemma3Config(**GEMMA3_12B)),
            }
        return assemble(**components, tokenizer=word_tokenizer(LTX2_MAX_TOKENS))

    def call_arguments(self, rows: Sequence[RenderRow]) -> dict[str, Any]:
        """As `Family.call_arguments`, with the rows' fps (LTX-2's positions and the sound's
        length follow it) and the guidance its card pairs with the rows' guidance scale."""
        rates = {row.fps for row in rows}
        if len(rates) != 1:
            raise ValueError(f"`rows` have to share one fps for LTX-2 but have {sorted(rates)}.")
        call = {**super().call_arguments(rows), "frame_rate": float(rates.pop())}
        if rows[0].guidance_scale > 1.0:
            return call
        # Guidance 1 is the distilled recipe: no guidance of any kind (the pipeline's audio,
        # spatio-temporal and modality guidance are on by default), and at its step count
        # the sigmas it was distilled on.
        unguided: dict[str, Any] = {
            "stg_scale": 0.0,
            "modality_scale": 1.0,
            "guidance_rescale": 0.0,
            "audio_guidance_scale": 1.0,
            "audio_stg_scale": 0.0,
            "audio_modality_scale": 1.0,
            "audio_guidance_rescale": 0.0,
        }
        if rows[0].num_inference_steps == len(DISTILLED_SIGMAS):
            unguided["sigmas"] = list(DISTILLED_SIGMAS)
        return {**call, **unguided}

    def generate(
        self, pipe: Any, rows: Sequence[RenderRow], generators: list[torch.Generator]
    ) -> Decoded:
        """One call: the frames, and each video's sound at the vocoder's sample rate; a
        non-finite sound marks its video as a non-finite render."""
        call = {**self.call_arguments(rows), **version_arguments(pipe)}
        output = pipe(**call, generator=generators, output_type="pt")
        decoded = to_uint8(output.frames)
        audio = output.audio.float().clamp(-1, 1)
        return replace(
            decoded,
            nonfinite=decoded.nonfinite | nonfinite(output.audio),
            sound=audio,
            sample_rate=int(pipe.vocoder.config.output_sampling_rate),
        )


def version_arguments(pipe: Any) -> dict[str, Any]:
    """What LTX2Pipeline's docstring gives LTX-2.0 checkpoints (no gated attention) where
    its defaults are LTX-2.3's: spatio-temporal guidance at block 29 of 48, and the legacy
    cross-modality timestep."""
    config = pipe.transformer.config
    if config.gated_attn:
        return {}
    return {
        "spatio_temporal_guidance_blocks": [min(29, config.num_layers - 1)],
        "use_cross_timestep": False,
    }


def assemble(tokenizer: Any, **components: Any) -> Any:
    """An LTX2Pipeline of these models in eval mode, with the repos' scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2Pipeline

    # scheduler/scheduler_config.json of Lightricks/LTX-2
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    models = {name: module.eval() for name, module in components.items()}
    return LTX2Pipeline(scheduler=scheduler, tokenizer=tokenizer, **models)
