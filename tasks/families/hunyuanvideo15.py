"""HunyuanVideo 1.5 (Tencent): an 8.3 B DiT over a 16× VAE, prompted through Qwen2.5-VL 7B,
and through a glyph ByT5 for the words a prompt quotes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
from tasks.families.base import Decoded, Family, PresetInfo
from tasks.families.parts import QWEN25_VL_7B, building_on, word_tokenizer
from tasks.manifest import RenderRow
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

HUNYUAN_480P_REPO = "hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v"
HUNYUAN_720P_REPO = "hunyuanvideo-community/HunyuanVideo-1.5-720p_t2v"
# Its licence does not grant use in the EU, the UK or South Korea.
HUNYUAN_LICENCE = "Tencent Hunyuan Community (not EU, UK, KR)"
QWEN_MAX_TOKENS = 1000  # HunyuanVideo15Pipeline's `tokenizer_max_length`
# The tokens of Qwen2.5's chat template before the user's words (its system turn), which the
# pipeline crops off the encoded prompt: its `prompt_template_encode_start_idx`.
TEMPLATE_TOKENS = 108
# diffusers' scripts/convert_hunyuan_video1_5_to_diffusers.py: the 480p and 720p t2v
# transformers differ only in `target_size` (the pixel size their default video is made
# for); their schedulers' shift is 5 and 9, their guiders' scale 6.
TRANSFORMER_8B: dict[str, Any] = {
    "in_channels": 65,  # 32 latent channels, 32 of a start image's, and its mask
    "out_channels": 32,
    "num_attention_heads": 16,
    "attention_head_dim": 128,
    "num_layers": 54,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "patch_size": 1,
    "patch_size_t": 1,
    "qk_norm": "rms_norm",
    "text_embed_dim": 3584,
    "text_embed_2_dim": 1472,
    "image_embed_dim": 1152,
    "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56),
    "use_meanflow": False,
    "task_type": "t2v",
}
CHECKPOINTS: dict[str, dict[str, float]] = {
    "hunyuanvideo-1.5": {"target_size": 640, "shift": 5.0},
    "hunyuanvideo-1.5-720p": {"target_size": 960, "shift": 9.0},
}
# google/byt5-small's encoder, its vocabulary grown by Glyph-SDXL-v2's colour and font tokens
# to 1510, as text_encoder_2/config.json of the Diffusers repos has it.
GLYPH_BYT5: dict[str, Any] = {
    "vocab_size": 1510,
    "d_model": 1472,
    "d_ff": 3584,
    "d_kv": 64,
    "num_heads": 6,
    "num_layers": 12,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "tie_word_embeddings": False,
}
# Tencent's defaults: 121 frames (5 s at 24 fps) of 480×848 (the 16:9 size of its
# 640-pixel target), 50 steps, guidance 6. Sizes are multiples of the VAE's 16× times the
# transformer's 1×1 patch: the pipeline rounds any other size down without an error. A 5 s
# model: no more frames or pixels than its default video.
RULES_480P = ManifestRules(
    family="HunyuanVideo 1.5",
    num_frames=121,
    height=480,
    width=848,
    num_inference_steps=50,
    guidance_scale=6.0,
    fps=24,
    max_frames=121,
    min_size=16,
    max_size=848,
    size_multiple=16,
    frame_step=4,
    max_voxels=121 * 480 * 848,
    max_voxels_shape=(121, 480, 848),
)
RULES_720P = replace(
    RULES_480P,
    height=720,
    width=1280,
    max_size=1280,
    max_voxels=121 * 720 * 1280,
    max_voxels_shape=(121, 720, 1280),
)


class HunyuanVideo15(Family):
    """HunyuanVideo15Pipeline: 4k + 1 frames, sizes multiples of 16, its guider's scale."""

    name: ClassVar[str] = "HunyuanVideo 1.5"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"HunyuanVideo15Pipeline"})
    rules: ClassVar[ManifestRules] = RULES_480P
    token_limit: ClassVar[int] = QWEN_MAX_TOKENS
    denoiser_name: ClassVar[str] = "transformer"
    # Its attention dispatches on diffusers' backends and it declares repeated blocks. It is
    # a CacheMixin, but diffusers' first-block cache does not know its block class (enable_cache
    # raises "not registered"): no profile chooses a cache. Attention stays SDPA: every call
    # carries a dense mask (1,985 text tokens, padded), for which diffusers recommends flash
    # varlen kernels that PyTorch does not ship; cuDNN's with it is unmeasured.
    speed: ClassVar[SpeedSupport] = SpeedSupport(
        step_caches=True,
        attention_backends=True,
        fast=Levers(compile="regional"),
        fastest=Levers(compile="regional", quantize="fp8"),
    )
    card_fps: ClassVar[int] = 15  # diffusers' HunyuanVideo-1.5 example
    # GPU memory: bf16 weights (transformer 16.7 GB, Qwen2.5-VL 7B's text model 14.1 GB, VAE
    # 2.5 GB, ByT5 0.4 GB) and the attention's dense (tokens × tokens) mask: 51 k tokens at
    # 480p (≈ 10 GB as bool and bf16), 114 k at 720p (≈ 50 GB). Estimates, not measured.
    presets: ClassVar[tuple[PresetInfo, ...]] = (
        PresetInfo("hunyuanvideo-1.5", HUNYUAN_480P_REPO, "8.3 B", 50.0, HUNYUAN_LICENCE),
        PresetInfo("hunyuanvideo-1.5-720p", HUNYUAN_720P_REPO, "8.3 B", 96.0, HUNYUAN_LICENCE),
        PresetInfo(
            "tiny-hunyuanvideo-1.5", None, "~4.5 M", None, "none (random weights built in code)"
        ),
    )

    def rules_for(self, configs: Mapping[str, Mapping[str, Any]]) -> ManifestRules:
        """Frames and sizes from the VAE's compression and the transformer's patch; the 720p
        video where the transformer's target size is 720p's."""
        vae, transformer = configs.get("vae", {}), configs.get("transformer", {})
        multiple = int(vae.get("spatial_compression_ratio", 16)) * int(
            transformer.get("patch_size", 1)
        )
        frame_step = int(vae.get("temporal_compression_ratio", 4))
        rules = RULES_720P if int(transformer.get("target_size", 640)) >= 960 else RULES_480P
        if (multiple, frame_step) == (rules.size_multiple, rules.frame_step):
            return rules
        return replace(rules, size_multiple=multiple, min_size=multiple, frame_step=frame_step)

    def preset_configs(self, preset: str) -> dict[str, dict[str, Any]]:
        if preset not in CHECKPOINTS:  # the tiny preset: the family's rules
            return {}
        return {"transformer": {"target_size": CHECKPOINTS[preset]["target_size"]}}

    def prepare(self, pipe: Any, device: torch.device) -> None:
        # Its VAE's causal attention mask does not broadcast over a batch (diffusers 0.42
        # fails to decode two videos at once): one video at a time.
        pipe.vae.enable_slicing()
        self.follow_card(pipe)

    def follow_card(self, pipe: Any) -> None:
        # The card decodes in tiles: whole, the VAE's mid-block attends over every latent of
        # the video at once, a (31·30·53)² mask at 480p.
        pipe.vae.enable_tiling()

    def call_arguments(self, rows: Sequence[RenderRow]) -> dict[str, Any]:
        """As `Family.call_arguments` but the guidance scale, which its pipeline takes from
        its guider (`generate` sets it)."""
        call = super().call_arguments(rows)
        del call["guidance_scale"]
        return call

    def generate(
        self, pipe: Any, rows: Sequence[RenderRow], generators: list[torch.Generator]
    ) -> Decoded:
        """As `Family.generate`, with the pipeline's guider at the rows' guidance scale."""
        pipe.guider = pipe.guider.new(guidance_scale=rows[0].guidance_scale)
        return super().generate(pipe, rows, generators)

    def build_tiny(self, seed: int = 0) -> Any:
        """Shapes of diffusers' tests/pipelines/hunyuan_video1_5/test_hunyuan_1_5.py, with the
        real VAE's 16× spatial and 4× temporal compression and tokenizers made here."""
        from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Transformer3DModel
        from transformers import T5Config, T5EncoderModel

        tokenizer = chat_tokenizer()
        torch.manual_seed(seed)
        vae = AutoencoderKLHunyuanVideo15(
            latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1
        )
        text_encoder = tiny_qwen_text_model(len(tokenizer))
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=GLYPH_BYT5["vocab_size"],
                d_model=32,
                d_ff=37,
                d_kv=8,
                num_heads=4,
                num_layers=1,
                relative_attention_num_buckets=8,
                feed_forward_proj="gated-gelu",
            )
        )
        transformer = HunyuanVideo15Transformer3DModel(
            in_channels=9,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,
            num_refiner_layers=1,
            mlp_ratio=2.0,
            text_embed_dim=text_encoder.config.hidden_size,
            text_embed_2_dim=32,
            image_embed_dim=12,
            rope_axes_dim=(2, 2, 4),
            target_size=640,
            task_type="t2v",
        )
        return assemble(transformer, vae, text_encoder, text_encoder_2, tokenizer, shift=5.0)

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """HunyuanVideo 1.5's t2v transformer and VAE, Qwen2.5-VL 7B's text model and the
        glyph ByT5, random weights, on `device`."""
        if blocks is not None:
            raise ValueError(f"`blocks` slices only the benchmarked families, not {preset}.")
        from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Transformer3DModel
        from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

        if preset not in CHECKPOINTS:
            raise ModelLoadError(f"{preset!r} is not a full-size HunyuanVideo 1.5 preset")
        checkpoint = CHECKPOINTS[preset]
        with building_on(device, dtype):
            transformer = HunyuanVideo15Transformer3DModel(
                **TRANSFORMER_8B, target_size=int(checkpoint["target_size"])
            )
            vae = AutoencoderKLHunyuanVideo15()  # its defaults are the released VAE's
            text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(**QWEN25_VL_7B["text_config"]))
            text_encoder_2 = T5EncoderModel(T5Config(**GLYPH_BYT5))
        return assemble(
            transformer, vae, text_encoder, text_encoder_2, chat_tokenizer(), checkpoint["shift"]
        )


def chat_tokenizer() -> Any:
    """`word_tokenizer` with a chat template, which the pipeline encodes prompts through,
    putting `TEMPLATE_TOKENS` tokens before the user's words: the crop keeps the prompt."""
    tokenizer = word_tokenizer(QWEN_MAX_TOKENS)
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.chat_template = (
        f"{{{{ '<|im_start|>' * {TEMPLATE_TOKENS} }}}}"
        "{% for message in messages if message.role == 'user' %}{{ message.content }}{% endfor %}"
        "<|im_end|>"
    )
    return tokenizer


def tiny_qwen_text_model(vocab_size: int) -> Any:
    """Qwen2.5-VL's text model, two layers of width 16, as in diffusers' tests."""
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    return Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2]},
            pad_token_id=0,
            bos_token_id=None,
            eos_token_id=1,
        )
    )


def assemble(
    transformer: Any,
    vae: Any,
    text_encoder: Any,
    text_encoder_2: Any,
    tokenizer: Any,
    shift: float,
) -> Any:
    """A HunyuanVideo15Pipeline of these models in eval mode, with a flow-matching scheduler
    of `shift` and a classifier-free guider at the card's scale."""
    from diffusers import (
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
    )
    from transformers import ByT5Tokenizer

    return HunyuanVideo15Pipeline(
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=ByT5Tokenizer(),  # bytes: it needs no vocabulary file
        guider=ClassifierFreeGuidance(guidance_scale=RULES_480P.guidance_scale),
    )
