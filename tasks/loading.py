"""Loading a pipeline safely: safetensors only, never code from a model folder, and from the
Hub only the files a pipeline needs; then placing it on its device as memory allows.

Over 250 lines because every way weights arrive (a folder, the Hub cache, a download) and
every check on them before anything is trusted belong to one concern.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from tasks.errors import ModelLoadError, first_line
from tasks.families import Family, family_for_class

# A model folder may name components of these libraries only (model_index.json), and
# holds weights as safetensors: pickles run code when they load.
COMPONENT_LIBRARIES = frozenset({"diffusers", "transformers", None})
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# What from_pretrained reads besides weights: configs, tokenizer vocabularies.
HUB_CONFIG_PATTERNS = ["*.json", "*.txt", "*.model"]
HALF_VARIANTS = ("fp16", "bf16")


def folder_family(folder: Path) -> Family:
    """The family of a saved pipeline, from model_index.json alone, after checking that
    loading it would trust nothing it should not."""
    index = check_pipeline_folder(folder)
    return family_for_class(str(index.get("_class_name")), f"{folder}/model_index.json")


def index_family(repo: str, revision: str) -> Family:
    """The family of a Hub repo, from its model_index.json alone (cached, else fetched)."""
    from huggingface_hub import hf_hub_download

    try:
        index = Path(
            hf_hub_download(repo, "model_index.json", revision=revision, cache_dir=hub_cache())
        )
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except Exception as exc:  # offline, not cached, no such repo, not a pipeline
        raise ModelLoadError(
            f"cannot read {repo}'s model_index.json ({first_line(exc)}): fetch the model once "
            f"with `t2v models pull {repo}`"
        ) from exc
    return family_for_class(str(class_name), f"{repo}/model_index.json")


def check_pipeline_folder(folder: Path) -> dict[str, Any]:
    """Refuse, before loading anything, what loading would have to trust: Python code,
    pickle weights, or components from libraries other than diffusers and transformers.
    Returns the folder's model_index.json."""
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
    return dict(index)


def folder_variant(folder: Path) -> str | None:
    """The dtype variant every weight file of a saved pipeline carries in its name
    (`model.fp16.safetensors`), as many Hub repos ship them; None for plain names."""
    variants = {_variant_of(path.name) for path in folder.glob("*/*.safetensors")}
    return variants.pop() if len(variants) == 1 else None


def _variant_of(name: str) -> str | None:
    """`fp16` of `model.fp16.safetensors` or `model.fp16-00001-of-00002.safetensors`."""
    parts = name.removesuffix(".safetensors").split(".")
    return parts[-1].split("-")[0] if len(parts) > 1 else None


def load_pretrained(folder: Path, family: Family, dtype: torch.dtype, variant: str | None) -> Any:
    """Load a saved pipeline from a folder: safetensors only, never code from the folder,
    each component in the dtype its family asks for."""
    from diffusers import DiffusionPipeline

    check_pipeline_folder(folder)
    try:
        return DiffusionPipeline.from_pretrained(
            str(folder),
            variant=variant,
            dtype={"default": dtype, **family.component_dtypes(dtype)},
            use_safetensors=True,
            local_files_only=True,
            trust_remote_code=False,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a pipeline from {folder}: {first_line(exc)}") from exc


RESIDENT, TILED, OFFLOAD = "resident", "resident, VAE decoding in tiles", "model CPU offload"
# What rendering needs on top of the weights, as a share of them: activations, attention,
# the VAE's decode. Generous on purpose: a wrong `resident` costs out-of-memory splits.
WORKING_SHARE, TILED_WORKING_SHARE = 0.5, 0.15


def memory_plan(weights_bytes: int, free_bytes: int) -> str:
    """How a pipeline lives on a GPU with `free_bytes` free: whole and resident when its
    weights and their working memory fit (fastest); resident with the VAE decoding in tiles
    when only a little working memory fits; else with model CPU offload, each component
    on the GPU only while it runs (slowest, but it fits)."""
    if weights_bytes * (1 + WORKING_SHARE) <= free_bytes:
        return RESIDENT
    if weights_bytes * (1 + TILED_WORKING_SHARE) <= free_bytes:
        return TILED
    return OFFLOAD


def place(pipe: Any, family: Family, device: torch.device, dtype: torch.dtype) -> str:
    """Put `pipe` on `device`, each component in its family's dtype, ready to render; on
    CUDA, as `memory_plan` decides from the free memory. Returns how it was placed."""
    pipe.to(dtype=dtype)
    for name, component_dtype in family.component_dtypes(dtype).items():
        getattr(pipe, name).to(dtype=component_dtype)
    pipe.set_progress_bar_config(disable=True)
    placement = RESIDENT
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        placement = memory_plan(_bytes_off_gpu(pipe), free)
    if placement == OFFLOAD:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device=device)
        if placement == TILED:
            pipe.vae.enable_tiling()
    family.prepare(pipe, device)
    return placement


def _bytes_off_gpu(pipe: Any) -> int:
    """The bytes of the weights still to move to the GPU (none for a pipeline built there)."""
    modules = (getattr(pipe, name) for name in pipe.components)
    return sum(
        parameter.numel() * parameter.element_size()
        for module in modules
        if isinstance(module, torch.nn.Module)
        for parameter in module.parameters()
        if parameter.device.type != "cuda"
    )


def hub_snapshot(repo: str, revision: str, variant: str | None, name: str) -> Path:
    """The folder of `repo` at `revision` in the Hugging Face cache; the files a pipeline
    needs are downloaded first if missing, unless HF_HUB_OFFLINE is set. `name` is what
    the user called the model, for `t2v models pull`."""
    from huggingface_hub import snapshot_download

    cache = hub_cache()
    try:
        return Path(
            snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True)
        )
    except Exception as exc:  # huggingface_hub raises several types for "not in the cache"
        missing = f"weights of {repo} ({revision}) are not in the Hugging Face cache at {cache}"
        fetch = (
            f"fetch them once with `t2v models pull {name}` (only the files it needs), "
            "or try `--model tiny-random` offline"
        )
        if hub_offline():
            raise ModelLoadError(f"{missing} and HF_HUB_OFFLINE is set: {fetch}") from exc
    try:
        return pull(repo, revision, variant)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{missing} and {exc}: {fetch}") from exc


def pull(repo: str, revision: str, variant: str | None) -> Path:
    """Download the files of `repo` that a pipeline of `variant` needs into the Hugging Face
    cache: configs, tokenizers and safetensors of that variant; never pickles."""
    from huggingface_hub import snapshot_download

    if hub_offline():
        raise ModelLoadError(f"cannot download {repo}: HF_HUB_OFFLINE is set")
    if variant:
        weights, ignored = [f"*.{variant}.safetensors", f"*.{variant}-*.safetensors"], []
    else:
        weights = ["*.safetensors"]
        ignored = [f"*.{half}{end}" for half in HALF_VARIANTS for end in (".*", "-*")]
    try:
        return Path(
            snapshot_download(
                repo,
                revision=revision,
                cache_dir=hub_cache(),
                allow_patterns=[*HUB_CONFIG_PATTERNS, *weights],
                ignore_patterns=ignored,
            )
        )
    except Exception as exc:  # network, authentication, a repo that does not exist...
        raise ModelLoadError(f"cannot download {repo} ({revision}): {first_line(exc)}") from exc


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads, read as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache() -> Path:
    """Where huggingface_hub keeps models, read from the environment as it reads it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' notices (ModelScope's pipeline is deprecated) and
    info logs out of users' output. Their loggers' levels, set once for the process: a
    context around every render would race with the threads publishing beside it."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
