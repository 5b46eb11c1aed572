"""What `--model` names: a preset, a folder saved with `save_pretrained`, or a Hub repo id;
each resolved into a `ModelRef` whose identity output keys hash."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import torch

from tasks.contenthash import folder_digest
from tasks.errors import ModelLoadError
from tasks.families import FAMILIES, Family, family_named
from tasks.families.base import PresetInfo
from tasks.hub import hub_snapshot, index_family, pull
from tasks.loading import folder_configs, folder_family, folder_variant
from tasks.rules import ManifestRules
from tasks.scoring import SCORER_REPOS, pull_scorer

# The revision presets take from the Hub. Output keys hash the commit it resolves to in
# the cache, so other weights never reuse an old video's key.
HUB_REVISION = "main"
RANDOM_SUFFIX = "-random"
HUB_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class Preset:
    """A name `--model` takes: a family's preset, or its architecture with random weights."""

    info: PresetInfo
    family: Family
    random: bool = False  # `<name>-random`: the full-size architecture, built in memory

    @property
    def name(self) -> str:
        return self.info.name + (RANDOM_SUFFIX if self.random else "")

    @property
    def parameters(self) -> str:
        return self.info.parameters

    @property
    def description(self) -> str:
        if self.random:
            return f"the {self.info.name} architecture with random weights, for GPU benchmarks"
        if self.info.repo is None:
            return f"a tiny {self.family.name} pipeline from real diffusers classes, seeded"
        variant = f", {self.info.variant} variant" if self.info.variant else ""
        return f"{self.info.repo} ({self.family.name}){variant}, {self.info.licence}"

    @property
    def weights(self) -> str:
        if self.random or self.info.repo is None:
            return "built in memory; no download"
        return (
            f"the Hugging Face cache ({self.info.repo}), fetched on first use "
            "unless HF_HUB_OFFLINE is set"
        )


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for family in FAMILIES
    for info in family.presets
    for preset in (
        (Preset(info, family), Preset(info, family, random=True))
        if info.repo
        else (Preset(info, family),)
    )
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved `--model`: its name, its family, and where its weights come from."""

    name: str
    family_name: str
    path: Path | None = None  # a saved pipeline; None for presets built in memory
    revision: str = ""  # the Hub commit of a snapshot in the Hugging Face cache
    content: str = ""  # a folder's digest (tasks.contenthash), computed once when resolved
    variant: str | None = None  # the dtype variant of the folder's weights, e.g. "fp16"

    @property
    def family(self) -> Family:
        return family_named(self.family_name)

    @property
    def rules(self) -> ManifestRules:
        """The manifest rules of these weights: from the saved folder's configs, else from
        the preset's published ones."""
        if self.path is not None:
            return self.family.rules_for(folder_configs(self.path))
        return preset_rules(PRESETS[self.name])

    @property
    def identity(self) -> str:
        """Stable text that output keys hash: preset (or repo) and commit, or the folder's
        content; never a folder's path, which new weights can be saved into."""
        if self.revision:
            return f"{self.name}@{self.revision}"
        if self.content:
            return f"content:{self.content}"
        return self.name


def resolve_model(model: str) -> ModelRef:
    """Turn `--model NAME|PATH|ORG/REPO` into a `ModelRef`, refusing names that are none."""
    preset = PRESETS.get(model)
    if preset is not None:
        if preset.random or preset.info.repo is None:
            return ModelRef(model, preset.family.name)
        return _hub_ref(model, preset.info.repo, preset.info.variant)
    path = Path(model).expanduser()
    if path.is_dir():
        family = folder_family(path)
        return ModelRef(
            str(path),
            family.name,
            path=path.resolve(),
            content=folder_digest(path),
            variant=folder_variant(path),
        )
    if HUB_REPO_ID.fullmatch(model):
        return _hub_ref(model, model, None)
    return _unknown(model)


def _hub_ref(name: str, repo: str, variant: str | None) -> ModelRef:
    snapshot = hub_snapshot(repo, HUB_REVISION, variant, name)
    family = folder_family(snapshot)
    return ModelRef(name, family.name, path=snapshot, revision=snapshot.name, variant=variant)


def model_family(model: str) -> Family:
    """The family `--model` names, for validating a manifest, without loading or fetching
    weights: a preset's own, a folder's model_index.json, a Hub repo's cached or fetched
    model_index.json."""
    preset = PRESETS.get(model)
    if preset is not None:
        return preset.family
    path = Path(model).expanduser()
    if path.is_dir():
        return folder_family(path)
    if HUB_REPO_ID.fullmatch(model):
        return index_family(model, HUB_REVISION)
    return _unknown(model)


def model_rules(model: str) -> ManifestRules:
    """The manifest rules `--model` renders by, fetching no weights: a preset's or a folder's
    from their configs; a Hub repo's from the preset of that repo, else its family's."""
    preset = PRESETS.get(model) or next(
        (preset for preset in PRESETS.values() if preset.info.repo == model), None
    )
    if preset is not None:
        return preset_rules(preset)
    path = Path(model).expanduser()
    if path.is_dir():
        return folder_family(path).rules_for(folder_configs(path))
    return model_family(model).rules


def preset_rules(preset: Preset) -> ManifestRules:
    """A preset's rules, from the configs its weights are published with."""
    return preset.family.rules_for(preset.family.preset_configs(preset.info.name))


@cache  # asked once per invalid row, of a manifest that may hold thousands
def presets_rendering(images: frozenset[str], family_name: str | None = None) -> tuple[str, ...]:
    """The presets that render a row filling these image columns (`image`, `last_image`):
    of every family, or of `family_name` and the family rendering its rows without images."""
    related = None
    if family_name is not None:
        related = {family_name, family_named(family_name).text_family}
    return tuple(
        name
        for name, preset in PRESETS.items()
        if not preset.random
        and (related is None or preset.family.name in related)
        and set(preset_rules(preset).required_images) <= images
        and images <= set(preset_rules(preset).image_columns)
    )


def _unknown(model: str) -> NoReturn:
    raise ModelLoadError(
        f"unknown model {model!r}: use one of {', '.join(PRESETS)}, "
        "a folder saved with `save_pretrained` or a Hub repo id ORG/NAME"
    )


def pull_model(model: str) -> Path:
    """`t2v models pull NAME|ORG/REPO`: fetch the files it needs into the Hugging Face cache;
    a scorer's (`clip`) too."""
    if model in SCORER_REPOS:
        return pull_scorer(model)
    preset = PRESETS.get(model)
    if preset is not None and preset.info.repo and not preset.random:
        return pull(preset.info.repo, HUB_REVISION, preset.info.variant, model)
    if preset is None and HUB_REPO_ID.fullmatch(model):
        return pull(model, HUB_REVISION, None, model)
    hub = [name for name, preset in PRESETS.items() if preset.info.repo and not preset.random]
    hub += list(SCORER_REPOS)
    raise ModelLoadError(
        f"{model!r} has nothing to pull: use one of {', '.join(hub)} or a Hub repo id ORG/NAME"
    )


def build_in_memory(model: ModelRef, device: torch.device, dtype: torch.dtype) -> Any:
    """A preset built in memory, tiny or `<name>-random`, on `device` in `dtype`."""
    preset = PRESETS[model.name]
    if preset.random:
        return preset.family.build_random(preset.info.name, device, dtype)
    return preset.family.build_tiny_preset(preset.info.name)
