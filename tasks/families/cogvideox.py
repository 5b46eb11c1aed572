"""CogVideoX 1.0 (THUDM): a DiT over a VAE that compresses 8× in space and 4× in time,
prompted through T5-XXL; trained on 49 frames of 480×720 at 8 fps."""

from __future__ import annotations

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
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

# CogVideoXPipeline's `max_sequence_length` default; the transformer's positional
# embeddings are laid out for exactly this many text tokens.
COGVIDEOX_MAX_TOKENS = 226

# transformer/config.json of THUDM/CogVideoX-2b and -5b (diffusers'
# scripts/convert_cogvideox_to_diffusers.py: 30 layers and heads for 2b, 42 layers, 48
# heads and rotary positions for 5b), and their vae/config.json scaling factors.
TRANSFORMER_CONFIGS: dict[str, dict[str, Any]] = {
    "cogvideox-2b": {
        "num_attention_heads": 30,
        "num_layers": 30,
        "use_rotary_positional_embeddings": False,
    },
    "cogvideox-5b": {
        "num_attention_heads": 48,
        "num_layers": 42,
        "use_rotary_positional_embeddings": True,
    },
}
VAE_SCALING_FACTORS = {"cogvideox-2b": 1.15258426, "cogvideox-5b": 0.7}


class CogVideoX(Family):
    """THUDM's CogVideoXPipeline: frame counts 4k + 1, sizes multiples of 16, 8 fps."""

    name: ClassVar[str] = "CogVideoX"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"CogVideoXPipeline"})
    # The model cards: 720×480, 49 frames (6 s at 8 fps), guidance 6, 50 steps, and "no
    # support for other resolutions". The pipeline still renders other sizes (it recomputes
    # the positional embeddings), so smaller ones are let through for drafts; more frames
    # or pixels than it was trained on are not. Sizes are multiples of 16: the VAE's 8×
    # times the transformer's 2×2 patches.
    rules: ClassVar[ManifestRules] = ManifestRules(
        family="CogVideoX",
        num_frames=49,
        height=480,
        width=720,
        num_inference_steps=50,
        guidance_scale=6.0,
        fps=8,
        max_frames=49,
        max_size=720,
        size_multiple=16,
        frame_step=4,
        max_voxels=49 * 480 * 720,
    )
    token_limit: ClassVar[int] = COGVIDEOX_MAX_TOKENS
    denoiser_name: ClassVar[str] = "transformer"
    # Step caches as for Wan (diffusers PR #11180's thresholds). Its attention calls PyTorch's
    # SDPA itself and it declares no repeated blocks: the whole transformer compiles, as in
    # the diffusers-torchao benchmarks (CogVideoX-5B on an H100: 112 s -> 87.5 s compiled, 75.3 s
    # with FP8).
    speed: ClassVar[SpeedSupport] = SpeedSupport(
        step_caches=True,
        attention_backends=False,
        fast=Levers(cache="first-block:0.05", compile="full"),
        fastest=Levers(cache="first-block:0.1", compile="full", quantize="fp8"),
    )
    # Both repos hold their weights in the dtype they were trained in (2b fp16, 5b bf16),
    # with no dtype variant. GPU memory: bf16 weights (T5-XXL 9.5 GB, transformer 3.4 or
    # 11.1 GB, VAE 0.4 GB) plus ≈ 5 GB for decoding 49 frames of 480×720; estimates, which
    # agree with the model cards' 18 GB and 26 GB without diffusers' offloading.
    card_fps: ClassVar[int] = 8
    presets: ClassVar[tuple[PresetInfo, ...]] = (
        PresetInfo(
            "cogvideox-2b",
            "THUDM/CogVideoX-2b",
            "1.7 B",
            18.0,
            "Apache-2.0",
            card_dtype=torch.float16,  # trained in fp16, and its card loads it so
        ),
        PresetInfo(
            "cogvideox-5b",
            "THUDM/CogVideoX-5b",
            "5.6 B",
            26.0,
            "CogVideoX licence (custom; commercial use needs registration)",
        ),
        PresetInfo("tiny-cogvideox", None, "~0.11 M", None, "none (random weights built in code)"),
    )

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes as in diffusers' tests/pipelines/cogvideo/test_cogvideox.py, with the
        real VAE's 8× spatial and 4× temporal compression and its 226 text positions."""
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

        torch.manual_seed(seed)
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=4,
            attention_head_dim=8,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=32,
            num_layers=2,  # two blocks: a first-block cache skips the second
            sample_width=4,
            sample_height=4,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=COGVIDEOX_MAX_TOKENS,
        )
        vae = AutoencoderKLCogVideoX(
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        )
        return assemble(transformer, vae, tiny_t5_encoder())

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """CogVideoX-2b's or -5b's transformer, VAE and T5-XXL, random weights, on `device`."""
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
        from transformers import T5Config, T5EncoderModel

        if preset not in TRANSFORMER_CONFIGS:
            raise ModelLoadError(f"{preset!r} is not a full-size CogVideoX preset")
        with building_on(device, dtype):
            # The other arguments' defaults are the 1.0 models' values (480×720, 49
            # frames, 16 latent channels, 226 text tokens).
            config = TRANSFORMER_CONFIGS[preset]
            transformer = CogVideoXTransformer3DModel(
                **{**config, "num_layers": blocks or config["num_layers"]}
            )
            vae = AutoencoderKLCogVideoX(scaling_factor=VAE_SCALING_FACTORS[preset])
            text_encoder = T5EncoderModel(T5Config(**one_layer(T5_XXL_CONFIG, blocks)))
        return assemble(transformer, vae, text_encoder)


def assemble(transformer: Any, vae: Any, text_encoder: Any) -> Any:
    """A CogVideoXPipeline of these models, in eval mode as `from_pretrained` leaves them,
    with the scheduler of the 1.0 repos."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline

    # scheduler/scheduler_config.json, as diffusers' convert script writes it
    scheduler = CogVideoXDDIMScheduler(
        snr_shift_scale=3.0,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )
    return CogVideoXPipeline(
        tokenizer=word_tokenizer(COGVIDEOX_MAX_TOKENS),
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=scheduler,
    )
