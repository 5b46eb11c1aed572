"""The model families t2v-batch renders, and how a pipeline or a saved folder finds its own."""

from __future__ import annotations

from tasks.errors import ModelLoadError
from tasks.families.anyflow import AnyFlow
from tasks.families.base import Family
from tasks.families.cogvideox import CogVideoX
from tasks.families.cogvideox_i2v import CogVideoXI2V
from tasks.families.hunyuanvideo15 import HunyuanVideo15
from tasks.families.kandinsky5 import Kandinsky5
from tasks.families.ltx import LTXVideo
from tasks.families.ltx2 import LTX2
from tasks.families.modelscope import ModelScope
from tasks.families.sana_video import SanaVideo
from tasks.families.wan import Wan
from tasks.families.wan_i2v import WanI2V

__all__ = [
    "FAMILIES",
    "Family",
    "family_for_class",
    "family_named",
    "family_of",
]

FAMILIES: tuple[Family, ...] = (
    ModelScope(),
    Wan(),
    WanI2V(),
    AnyFlow(),
    LTXVideo(),
    CogVideoX(),
    CogVideoXI2V(),
    SanaVideo(),
    Kandinsky5(),
    HunyuanVideo15(),
    LTX2(),
)


def family_for_class(class_name: str, source: str) -> Family:
    """The family whose pipeline is `class_name` (a `_class_name` of model_index.json);
    `source` names where the class was read in the error."""
    for family in FAMILIES:
        if class_name in family.pipeline_classes:
            return family
    supported = sorted(name for family in FAMILIES for name in family.pipeline_classes)
    raise ModelLoadError(
        f"{source} is a {class_name!r}, which t2v-batch does not render: "
        f"it renders {', '.join(supported)}"
    )


def family_of(pipe: object) -> Family:
    """The family of a loaded or built pipeline."""
    return family_for_class(type(pipe).__name__, "the pipeline")


def family_named(name: str) -> Family:
    """The family called `name` (`Family.name`), as a `ModelRef` records it."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ModelLoadError(f"no model family is called {name!r}")
