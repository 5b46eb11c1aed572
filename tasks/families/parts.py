"""What several families build from: T5-XXL's config, tokenizers made in code (no Hub),
and building a full-size model directly on a device in a dtype."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

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

# Qwen/Qwen2.5-VL-7B-Instruct's config.json: the text encoder of Kandinsky 5, HunyuanVideo 1.5.
QWEN25_VL_7B: dict[str, Any] = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128000,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
    },
    "vocab_size": 152064,
    "hidden_size": 3584,
    "tie_word_embeddings": False,
}


# google/umt5-xxl's encoder, the text encoder of Wan and of the models distilled from it.
def one_layer(config: dict[str, Any], blocks: int | None) -> dict[str, Any]:
    """A text encoder's `config`, with one layer for a slice of `blocks` (`build_random`)."""
    return {**config, "num_layers": 1} if blocks else config


UMT5_XXL_CONFIG: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
}
UMT5_MAX_TOKENS = 512  # WanPipeline's `max_sequence_length` default

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


@contextmanager
def building_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Modules constructed inside are made on `device` in `dtype` (no copy in fp32 first);
    the process's default dtype is restored after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


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


def tiny_wan_vae() -> Any:
    """Wan 2.1's causal VAE (8× in space, 4× in time) at 3 channels, as in diffusers' tests."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def tiny_umt5_encoder() -> Any:
    """A two-layer UMT5 encoder of width 32 over `char_tokenizer`'s vocabulary."""
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(char_tokenizer()),
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


def byte_tokenizer(max_tokens: int) -> Any:
    """A real CLIPTokenizer over a byte-level vocabulary with no merges (no download)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=max_tokens)


def byte_vocab() -> dict[str, int]:
    """CLIP's reversible byte-to-unicode table (transformers 5 no longer exports it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in printable]
    chars += [chr(256 + n) for n in range(256 - len(printable))]
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    return {token: index for index, token in enumerate(tokens)}
