"""LTX-2's published component configs, by preset, and the tiny pipeline's components."""

from __future__ import annotations

from typing import Any

from tasks.families.parts import TINY_WORDS

# diffusers' scripts/convert_ltx2_to_diffusers.py, as Lightricks/LTX-2 (2.0) and the
# LTX-2.3 Diffusers repos were written: where they differ from the classes' defaults. The
# audio VAE and the vocoders are each class's defaults.
_VIDEO_VAE = {
    "decoder_causal": False,
    "spatial_compression_ratio": 32,
    "temporal_compression_ratio": 8,
}
LTX2_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "ltx-2": {
        "transformer": {"rope_type": "split"},
        "connectors": {"rope_type": "split"},
        "vae": _VIDEO_VAE,
    },
    "ltx-2-distilled": {
        "transformer": {
            "rope_type": "split",
            "gated_attn": True,
            "cross_attn_mod": True,
            "audio_gated_attn": True,
            "audio_cross_attn_mod": True,
            "use_prompt_embeddings": False,
            "perturbed_attn": True,
        },
        "connectors": {
            "rope_type": "split",
            "video_connector_num_attention_heads": 32,
            "video_connector_num_layers": 8,
            "video_gated_attn": True,
            "audio_connector_num_attention_heads": 32,
            "audio_connector_attention_head_dim": 64,
            "audio_connector_num_layers": 8,
            "audio_gated_attn": True,
            "per_modality_projections": True,
            "proj_bias": True,
        },
        "vae": {
            **_VIDEO_VAE,
            "block_out_channels": (256, 512, 1024, 1024),
            "decoder_block_out_channels": (256, 512, 512, 1024),
            "layers_per_block": (4, 6, 4, 2, 2),
            "decoder_layers_per_block": (4, 6, 4, 2, 2),
            "decoder_spatio_temporal_scaling": (True, True, True, True),
            "decoder_inject_noise": (False, False, False, False, False),
            "upsample_type": ("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
            "upsample_residual": (False, False, False, False),
            "upsample_factor": (2, 2, 1, 2),
            "decoder_spatial_padding_mode": "zeros",
        },
    },
}
# google/gemma-3-12b-it's config.json, the text encoder of every LTX-2 checkpoint.
GEMMA3_12B: dict[str, Any] = {
    "text_config": {
        "vocab_size": 262208,
        "hidden_size": 3840,
        "intermediate_size": 15360,
        "num_hidden_layers": 48,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "sliding_window": 1024,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    },
    "vision_config": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 896,
        "patch_size": 14,
        "vision_use_head": False,
    },
    "mm_tokens_per_image": 256,
}


def tiny_ltx2_components() -> dict[str, Any]:
    """Every model of a tiny LTX2Pipeline, built from the current random state. The text
    encoder's hidden states, all its layers stacked, feed the connectors (width × 3 layers);
    the audio VAE's latents are its channels × its mel bins / 4 wide."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    width, vocabulary = 32, len(TINY_WORDS) + 3
    text_encoder = Gemma3ForConditionalGeneration(
        Gemma3Config(
            text_config={
                "hidden_size": width,
                "intermediate_size": width,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "head_dim": 16,
                "vocab_size": vocabulary,
                "sliding_window": 64,
            },
            vision_config={
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": 28,
                "patch_size": 14,
            },
            mm_tokens_per_image=4,
            # Image tokens inside the tiny vocabulary (`<unk>`), which prompts never hold.
            image_token_index=2,
            boi_token_index=2,
            eoi_token_index=2,
        )
    )
    connectors = LTX2TextConnectors(
        caption_channels=width,
        text_proj_in_factor=3,
        video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_double_precision=False,
        rope_type="split",
    )
    transformer = LTX2VideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=8,
        audio_out_channels=8,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,  # two blocks: spatio-temporal guidance perturbs the last
        caption_channels=width,
        rope_double_precision=False,
        rope_type="split",
    )
    vae = AutoencoderKLLTX2Video(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        decoder_causal=False,
        spatial_compression_ratio=32,
        temporal_compression_ratio=8,
    )
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=8, ch_mult=(1, 2, 4), num_res_blocks=1, latent_channels=2, mel_bins=16
    )
    # 6 × 5 × 8 = 240 samples per mel frame: 160 at 16 kHz is 240 at 24 kHz.
    vocoder = LTX2Vocoder(
        in_channels=2 * 16,
        hidden_channels=8,
        upsample_kernel_sizes=[12, 10, 16],
        upsample_factors=[6, 5, 8],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        output_sampling_rate=24000,
    )
    return {
        "text_encoder": text_encoder,
        "connectors": connectors,
        "transformer": transformer,
        "vae": vae,
        "audio_vae": audio_vae,
        "vocoder": vocoder,
    }
