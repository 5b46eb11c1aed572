"""Loading a saved pipeline safely: safetensors only, never code from a model folder; then
placing it on its device as memory allows. Fetching from the Hub is tasks/hub.py."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import torch

from tasks.errors import ModelLoadError, first_line
from tasks.families import Family, family_for_class

# A model folder may name components of these libraries only (model_index.json), and
# holds weights as safetensors: pickles run code when they load.
LIBRARIES = ("diffusers", "transformers")
PACKAGE_NAME = re.compile(r"[a-z][a-z0-9_]*")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def folder_family(folder: Path) -> Family:
    """The family of a saved pipeline, from model_index.json alone, after checking that
    loading it would trust nothing it should not."""
    index = check_pipeline_folder(folder)
    family = family_for_class(str(index.get("_class_name")), f"{folder}/model_index.json")
    for name, entry in sorted(index.items()):
        _check_component_class(folder, name, entry)
    return family


def folder_configs(folder: Path) -> dict[str, dict[str, Any]]:
    """Each component's config.json in a saved pipeline, by component, read without
    loading weights; a component without one (a tokenizer, a scheduler's) is left out."""
    configs: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*/config.json")):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path} cannot be read as JSON ({first_line(exc)})") from exc
        if isinstance(config, dict):
            configs[path.parent.name] = config
    return configs


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
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise ModelLoadError(
            f"{folder}/model_index.json is not a pipeline's index (a JSON object with a "
            "`_class_name`): pass a folder saved with save_pretrained"
        )
    for name, entry in sorted(index.items()):
        if isinstance(entry, list) and entry and entry[0] and component_module(entry[0]) is None:
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


def _check_component_class(folder: Path, name: str, entry: object) -> None:
    """A component's class must be one its library has: found out here, in a second, not
    after the other components have loaded."""
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0]):
        return  # a pipeline setting, or a component saved as absent ([null, null])
    library, class_name = component_module(entry[0]), entry[1]
    if library is None:
        return
    module = importlib.import_module(library)
    version = importlib.import_module(library.partition(".")[0]).__version__
    # Both libraries import lazily: dir() lists every class without importing its module.
    if class_name not in dir(module):
        raise ModelLoadError(
            f"{folder}/model_index.json takes `{name}` as {class_name!r} from {library} "
            f"{version}, which has no such class: re-save the pipeline with it"
        )


def component_module(library: object) -> str | None:
    """The module a model_index.json entry loads its component from: diffusers,
    transformers, or a pipeline package of diffusers' own, which save_pretrained names by
    the package (`["ltx2", "LTX2Vocoder"]`, as diffusers loads it); None for anything else."""
    if library in LIBRARIES:
        return str(library)
    if not (isinstance(library, str) and PACKAGE_NAME.fullmatch(library)):
        return None
    package = f"diffusers.pipelines.{library}"
    return package if importlib.util.find_spec(package) is not None else None


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
        if getattr(pipe, name, None) is not None:  # a checkpoint may leave one out
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


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' notices (ModelScope's pipeline is deprecated), info
    logs and progress bars out of users' output. Set once for the process: a context around
    every render would race with the threads publishing beside it."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    # "Loading pipeline components…" and "Loading weights" bars, on every load.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def import_pipeline_code(family: Family) -> None:
    """Import diffusers and the family's pipeline classes: seconds of a cold start that a
    caller can spend while it waits for something else (a Prefect server booting)."""
    import diffusers

    for name in sorted(family.pipeline_classes):
        getattr(diffusers, name, None)
