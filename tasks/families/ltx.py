"""LTX-Video (Lightricks): a 2 B DiT over a VAE that compresses 32× in space and 8× in
time, prompted through T5-XXL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from tasks.errors import ModelLoadError
from tasks.families.base import Family, PresetInfo
from tasks.manifest import RenderRow
from tasks.rules import ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

LTX_REPO = "Lightricks/LTX-Video"
# LTXPipeline's `max_sequence_length` default, and the tokenizer's model_max_length.
LTX_MAX_TOKENS = 128

# google/t5-v1_1-xxl config.json, the text encoder of LTX-Video and CogVideoX.
T5_XXL_CONFIG: dict[str, Any] = {
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.1,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}


def t5_xxl_config(blocks: int | None) -> dict[str, Any]:
    """T5-XXL's config, with one layer for a slice of `blocks` (`Family.build_random`)."""
    return {**T5_XXL_CONFIG, "num_layers": 1} if blocks else T5_XXL_CONFIG


# Words the tiny tokenizers know; any other word becomes <unk>.
_WORD_TEXT = """
a an the of in on at to with and or under over near by from into through above below
small large tiny huge old young red green blue yellow white black gray golden silver
bright dark slow fast quiet loud warm cold wet dry soft hard calm wild happy sad
cat dog bird fish horse cow fox bear wolf deer rabbit mouse owl duck frog bee
man woman child boy girl people person crowd dancer runner pilot chef robot
tree forest flower grass field river lake sea ocean wave beach mountain hill valley
sky cloud sun moon star rain snow wind storm fog fire smoke light shadow night day
city street road bridge house room window door car train boat ship plane bicycle
runs walks flies swims jumps dances sings falls rises turns spins glows shines
moving looking standing sitting flowing burning floating drifting rolling climbing
camera pans zooms tracks close up wide shot view scene frame video clip slow motion
test number scene word one two three four five six seven eight nine ten
is are was it its this that there here his her their very some many few
blurry distorted jittery worst quality low high detailed realistic cinematic
"""
TINY_WORDS = tuple(dict.fromkeys(_WORD_TEXT.split()))


class LTXVideo(Family):
    """Lightricks' LTXPipeline: frame counts 8k + 1, sizes multiples of 32, 25 fps."""

    name: ClassVar[str] = "LTX-Video"
    pipeline_classes: ClassVar[frozenset[str]] = frozenset({"LTXPipeline"})
    # LTXPipeline.__call__'s defaults. The model card: sizes divisible by 32, 8k + 1
    # frames, best under 720×1280 and 257 frames, which bound the rest.
    rules: ClassVar[ManifestRules] = ManifestRules(
        family="LTX-Video",
        num_frames=161,
        height=512,
        width=704,
        num_inference_steps=50,
        guidance_scale=3.0,
        fps=25,
        max_frames=257,
        max_size=1280,
        size_multiple=32,
        frame_step=8,
        max_voxels=257 * 512 * 704,
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
        """LTX-Video 0.9.0's transformer, VAE and T5-XXL with random weights, on `device`;
        `blocks` as in `Family.build_random`."""
        from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
        from transformers import T5Config, T5EncoderModel

        if preset != "ltx-video":
            raise ModelLoadError(f"{preset!r} is not a full-size LTX-Video preset")
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with device:
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
                text_encoder = T5EncoderModel(T5Config(**t5_xxl_config(blocks)))
        finally:
            torch.set_default_dtype(previous)
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


def tiny_t5_encoder() -> Any:
    """A two-layer T5 encoder of width 32 over the tiny tokenizer's vocabulary."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        vocab_size=len(TINY_WORDS) + 3,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def word_tokenizer(max_tokens: int) -> Any:
    """A T5-like tokenizer made in code (no Hub): whole lower-case words, `</s>` appended,
    `<pad>` id 0 and `</s>` id 1 as in T5's vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(["<pad>", "</s>", "<unk>", *TINY_WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_tokens,
    )
