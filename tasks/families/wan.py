"""Wan 2.1 / 2.2 (WanPipeline): a flow-matching DiT, a UMT5 text encoder, a causal 3D VAE."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tasks.families.base import Family, PresetInfo
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

UMT5_MAX_TOKENS = 512
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


class Wan(Family):
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
    # GPU memory: bf16 weights (UMT5-XXL is 11.4 GB of it) and a margin for activations;
    # estimates, not measured.
    presets = (
        PresetInfo("wan2.1-1.3b", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "1.3 B", 18.0, "Apache-2.0"),
        PresetInfo("wan2.1-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "14 B", 48.0, "Apache-2.0"),
        PresetInfo("wan2.2-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "5 B", 28.0, "Apache-2.0"),
        PresetInfo("tiny-wan", None, "~0.06 M", None, "built in code"),
    )

    def component_dtypes(self, dtype: torch.dtype) -> dict[str, torch.dtype]:
        # Wan's causal VAE decodes with visible banding in half precision; the model card
        # loads it in fp32, and it costs little of the GPU's time.
        return {"vae": torch.float32}

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes of diffusers' tests/pipelines/wan/test_wan.py, with a tokenizer made here."""
        from diffusers import (
            AutoencoderKLWan,
            FlowMatchEulerDiscreteScheduler,
            WanPipeline,
            WanTransformer3DModel,
        )
        from transformers import UMT5Config, UMT5EncoderModel

        tokenizer = char_tokenizer()
        torch.manual_seed(seed)
        vae: Any = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=32,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
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
            rope_max_seq_len=32,
        )
        return WanPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder.eval(),
            transformer=transformer.eval(),
            vae=vae.eval(),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        )

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
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with device:
                transformer, vae, text_encoder = wan_components(preset, blocks)
        finally:
            torch.set_default_dtype(previous)
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=RANDOM_SHAPES[preset]["flow_shift"],
        )
        return WanPipeline(
            tokenizer=char_tokenizer(),
            text_encoder=text_encoder.eval(),
            transformer=transformer.eval(),
            vae=vae.eval(),
            scheduler=scheduler,
            expand_timesteps=preset == "wan2.2-5b",
        )


# The published transformer configs; Wan 2.2 5B adds its own VAE (16x, 48 channels).
RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "wan2.1-1.3b": dict(heads=12, ffn=8960, layers=30, channels=16, flow_shift=3.0),
    "wan2.1-14b": dict(heads=40, ffn=13824, layers=40, channels=16, flow_shift=5.0),
    "wan2.2-5b": dict(heads=24, ffn=14336, layers=30, channels=48, flow_shift=5.0),
}


def wan_components(preset: str, blocks: int | None = None) -> tuple[Any, Any, Any]:
    """Transformer, VAE and UMT5-XXL encoder of `preset`, built on the current device; with
    `blocks`, that many transformer blocks and one encoder layer."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    shape = RANDOM_SHAPES[preset]
    transformer = WanTransformer3DModel(
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
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=256384,
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_layers=1 if blocks else 24,
            num_heads=64,
            feed_forward_proj="gated-gelu",
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
        )
    )
    return transformer, vae, text_encoder


def char_tokenizer() -> Any:
    """A fast tokenizer with one token per character of printable ASCII, and `</s>` appended
    as T5's tokenizer does (no download)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate([*specials, *map(chr, range(32, 127))])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=UMT5_MAX_TOKENS,
    )
