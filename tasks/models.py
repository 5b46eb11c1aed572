"""Model presets, device and dtype choice, and the per-process pipeline cache."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tasks.contenthash import folder_digest
from tasks.errors import ModelLoadError, first_line

MS_17B_REPO = "ali-vilab/text-to-video-ms-1.7b"
# The revision the `ms-1.7b` preset takes from the Hugging Face cache. Output keys hash
# the commit it resolves to there, so other weights never reuse an old video's key.
MS_17B_REVISION = "main"
CLIP_MAX_TOKENS = 77
# Off by default: compiling costs minutes on the first render of each batch size.
COMPILE_ENV = "T2V_COMPILE"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# A model folder may name components of these libraries only (model_index.json), and
# holds weights as safetensors: pickles run code when they load.
COMPONENT_LIBRARIES = frozenset({"diffusers", "transformers", None})
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    parameters: str
    weights: str


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "ms-1.7b",
            f"{MS_17B_REPO} (TextToVideoSDPipeline), fp16 variant",
            "1.7 B",
            f"the Hugging Face cache ({MS_17B_REPO}, fp16 safetensors); "
            "never downloaded implicitly",
        ),
        Preset(
            "ms-1.7b-random",
            "the ms-1.7b architecture with random weights, for GPU throughput benchmarks",
            "1.7 B",
            "built in memory; no download",
        ),
        Preset(
            "tiny-random",
            "a tiny TextToVideoSDPipeline from real diffusers/transformers classes, seeded",
            "~0.3 M",
            "built in memory; the offline default for the demo and the tests",
        ),
    )
}


@dataclass(frozen=True)
class ModelRef:
    """What `--model` names: a preset, or a folder saved with `save_pretrained`."""

    name: str
    path: Path | None = None
    revision: str = ""  # the Hub commit of a preset loaded from the cache
    content: str = ""  # a folder's digest (tasks.contenthash), computed once when resolved

    @property
    def identity(self) -> str:
        """Stable text that output keys hash: preset and commit, or the folder's content;
        never a folder's path, which new weights can be saved into."""
        if self.revision:
            return f"{self.name}@{self.revision}"
        if self.content:
            return f"content:{self.content}"
        return self.name


def resolve_model(model: str) -> ModelRef:
    """Turn `--model NAME|PATH` into a `ModelRef`, refusing names that are neither."""
    if model == "ms-1.7b":
        snapshot = cached_snapshot(MS_17B_REPO, MS_17B_REVISION)
        return ModelRef(model, path=snapshot, revision=snapshot.name)
    if model in PRESETS:
        return ModelRef(model)
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelRef(str(path), path=path.resolve(), content=folder_digest(path))
    raise ModelLoadError(
        f"unknown model {model!r}: use one of {', '.join(PRESETS)} "
        "or a folder saved with `save_pretrained`"
    )


def cached_snapshot(repo: str, revision: str) -> Path:
    """The folder of `repo` at `revision` in the Hugging Face cache; never downloads."""
    from huggingface_hub import snapshot_download

    cache = hub_cache()
    try:
        return Path(
            snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True)
        )
    except Exception as exc:  # huggingface_hub raises several types for "not in the cache"
        raise ModelLoadError(
            f"weights of {repo} ({revision}) are not in the Hugging Face cache at {cache}; "
            f"fetch them once with `hf download {repo}` "
            "or pass --model PATH to a folder saved with save_pretrained"
        ) from exc


def hub_cache() -> Path:
    """Where huggingface_hub keeps models, read from the environment as it reads it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA device must exist."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ModelLoadError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} requested but CUDA is not available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return resolved


def dtype_for(device: torch.device) -> torch.dtype:
    """Half precision on GPUs (bf16 where supported), fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


_cache: dict[tuple[str, str], Any] = {}
_cache_lock = threading.Lock()
_device_locks: dict[str, threading.Lock] = {}
_device_failures: dict[str, str] = {}
load_count = 0  # pipelines built or loaded by this process; tests read it


def load_model(model: ModelRef, device: str) -> str:
    """Load the pipeline for `model` on `device` into this process's cache; return the device."""
    resolved = resolve_device(device)
    get_pipeline(model, resolved)
    return str(resolved)


def get_pipeline(model: ModelRef, device: torch.device) -> Any:
    """The process's one pipeline for (model, device), loaded on first use."""
    global load_count
    key = (model.identity, str(device))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _load(model, device)
            load_count += 1
        return _cache[key]


def device_lock(device: torch.device) -> threading.Lock:
    """One lock per device, so only one render at a time holds a GPU in this process."""
    with _cache_lock:
        return _device_locks.setdefault(str(device), threading.Lock())


def device_failure(device: torch.device) -> str | None:
    """Why `device` cannot be used again by this process, if it cannot."""
    with _cache_lock:
        return _device_failures.get(str(device))


def mark_device_failed(device: torch.device, reason: str) -> None:
    """After a fatal CUDA error or a hung render: nothing else in this process may use it."""
    with _cache_lock:
        _device_failures.setdefault(str(device), reason)


def _load(model: ModelRef, device: torch.device) -> Any:
    dtype = dtype_for(device)
    mode = compile_mode()  # a bad T2V_COMPILE fails before minutes of loading
    with quiet_diffusers():
        if model.path is not None:
            # The Hub repo of ms-1.7b publishes its half-precision weights as the fp16 variant.
            variant = "fp16" if model.revision else None
            pipe = load_pretrained(model.path, dtype, variant).to(device=device, dtype=dtype)
        else:
            pipe = build_random(model.name, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":
        # Only for GPU: PyTorch's fused SDPA kernels for every attention layer.
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipe.unet.set_attn_processor(AttnProcessor2_0())
    if mode is not None:
        compile_unet(pipe, mode)
    return pipe


def compile_mode() -> str | None:
    """The `torch.compile` mode that `T2V_COMPILE` asks for: unset or 0 is off, 1 the default."""
    value = os.environ.get(COMPILE_ENV, "").strip()
    if value in ("", "0"):
        return None
    if value == "1":
        return "default"
    if value not in COMPILE_MODES:
        raise ModelLoadError(
            f"{COMPILE_ENV}={value!r} is not a torch.compile mode: "
            f"use 0, 1 or one of {', '.join(COMPILE_MODES)}"
        )
    return value


def compile_unet(pipe: Any, mode: str) -> None:
    """Compile the UNet in place; it runs every step, the text encoder and VAE once a video."""
    # Compilation happens on the first call of each new input shape (each batch size),
    # so a compiled pipeline pays it once per batch size and process.
    pipe.unet.compile(mode=mode)


def build_random(name: str, device: torch.device, dtype: torch.dtype) -> Any:
    """A preset built in memory (`ms-1.7b-random` or `tiny-random`) on `device` in `dtype`."""
    if name == "ms-1.7b-random":
        pipe = build_ms17b_random(device, dtype)
    elif name == "tiny-random":
        pipe = build_tiny_random()
    else:
        raise ModelLoadError(f"{name!r} is not a preset built in memory")
    return pipe.to(device=device, dtype=dtype)


def load_pretrained(folder: Path, dtype: torch.dtype, variant: str | None = None) -> Any:
    """Load a saved pipeline from a folder: safetensors only, never code from the folder."""
    from diffusers import DiffusionPipeline

    check_pipeline_folder(folder)
    try:
        return DiffusionPipeline.from_pretrained(
            str(folder),
            variant=variant,
            torch_dtype=dtype,
            use_safetensors=True,
            local_files_only=True,
            trust_remote_code=False,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a pipeline from {folder}: {first_line(exc)}") from exc


def check_pipeline_folder(folder: Path) -> None:
    """Refuse, before loading anything, what loading would have to trust: Python code,
    pickle weights, or components from libraries other than diffusers and transformers."""
    code = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.py"))
    if code:
        raise ModelLoadError(
            f"{folder} holds Python code ({', '.join(code[:3])}): t2v-batch never runs code "
            "from a model folder; use a folder saved with save_pretrained by diffusers itself"
        )
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{folder} has no model_index.json that can be read ({first_line(exc)}): "
            "pass a folder saved with save_pretrained"
        ) from exc
    for name, entry in sorted(index.items()):
        if isinstance(entry, list) and entry and entry[0] not in COMPONENT_LIBRARIES:
            raise ModelLoadError(
                f"{folder}/model_index.json takes `{name}` from {entry[0]!r}: t2v-batch loads "
                "components from diffusers and transformers only"
            )
    for component in sorted(path for path in folder.iterdir() if path.is_dir()):
        files = sorted(path.name for path in component.iterdir() if path.is_file())
        pickles = [file for file in files if file.endswith(PICKLE_SUFFIXES)]
        if pickles and not any(file.endswith(".safetensors") for file in files):
            raise ModelLoadError(
                f"{component} holds only pickle weights ({', '.join(pickles)}): t2v-batch "
                "loads safetensors only; re-save the pipeline with "
                "save_pretrained(safe_serialization=True)"
            )


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Keep diffusers' deprecation notice for TextToVideoSDPipeline and its info logs quiet."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        diffusers_logging.set_verbosity(level)


# Tiny and random pipelines, built from real diffusers/transformers classes.


def build_tiny_random(seed: int = 0) -> Any:
    """A few-MB TextToVideoSDPipeline whose VAE downsamples 8x, like the real model's."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(_byte_vocab()),
            max_position_embeddings=CLIP_MAX_TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            projection_dim=32,
        )
    )
    return _assemble(unet, vae, text_encoder, _ddim_scheduler(DDIMScheduler))


def build_ms17b_random(device: torch.device, dtype: torch.dtype) -> Any:
    """The exact ms-1.7b architecture with random weights, built directly on `device`."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            unet, vae, text_encoder = ms17b_components(
                UNet3DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTextConfig
            )
    finally:
        torch.set_default_dtype(previous)
    return _assemble(unet, vae, text_encoder, _ddim_scheduler(DDIMScheduler))


def ms17b_components(
    unet_cls: Any, vae_cls: Any, text_cls: Any, text_config_cls: Any
) -> tuple[Any, Any, Any]:
    """UNet3D, VAE and CLIP text model with the configs published for ms-1.7b."""
    unet = unet_cls(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=1024,
        attention_head_dim=64,
        norm_num_groups=32,
    )
    vae = vae_cls(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
    )
    text_encoder = text_cls(
        text_config_cls(
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=23,
            projection_dim=512,
            vocab_size=49408,
            max_position_embeddings=CLIP_MAX_TOKENS,
            hidden_act="gelu",
        )
    )
    return unet, vae, text_encoder


def _ddim_scheduler(scheduler_cls: Any) -> Any:
    return scheduler_cls(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _assemble(unet: Any, vae: Any, text_encoder: Any, scheduler: Any) -> Any:
    from diffusers import TextToVideoSDPipeline

    return TextToVideoSDPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=byte_tokenizer(),
        unet=unet.eval(),
        scheduler=scheduler,
    )


def byte_tokenizer() -> Any:
    """A real CLIPTokenizer over a byte-level vocabulary with no merges (no download)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_byte_vocab(), merges=[], model_max_length=CLIP_MAX_TOKENS)


def _byte_vocab() -> dict[str, int]:
    # CLIP's reversible byte-to-unicode table (transformers 5 no longer exports it).
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in printable]
    chars += [chr(256 + n) for n in range(256 - len(printable))]
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    return {token: index for index, token in enumerate(tokens)}
