"""Applying levers to a loaded pipeline through diffusers' and torchao's own switches; a lever
that cannot apply here is skipped with its reason, never raised."""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from tasks.errors import first_line
from tasks.speed.compile_cache import use_compile_cache
from tasks.speed.levers import ATTENTION_ALIASES, EXACT, Levers

if TYPE_CHECKING:
    from tasks.families import Family


# The modules TaylorSeer predicts between full steps: each transformer block's attention
# and feed-forward, as the paper caches them. diffusers' default patterns match modules
# named `attn` only, none of Wan's, LTX-Video's or CogVideoX's (`attn1`, `attn2`, `ff`).
TAYLORSEER_MODULES = r"(transformer_)?blocks\.\d+\.(attn\d?|ffn?)"


@dataclass(frozen=True)
class SpeedReport:
    """The levers applied, with their settings, and those skipped, with why; by lever name."""

    applied: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """One sentence for the run's log and progress."""
        applied = ", ".join(f"{name} {value}" for name, value in self.applied.items())
        skipped = "; ".join(f"{name} skipped: {why}" for name, why in self.skipped.items())
        return "; ".join(part for part in (applied or "exact levers", skipped) if part)


class LeverSkipped(Exception):
    """A lever that cannot apply here; its message says why, in a few words."""


def apply_levers(pipe: Any, family: Family, levers: Levers) -> SpeedReport:
    """Apply `levers` to the denoiser of `pipe`, a loaded pipeline of `family` placed on its
    device, in the order they compose: quantize the weights, choose the attention kernel,
    hook the step cache, then compile what is left."""
    denoiser = family.denoiser(pipe)
    # Under model CPU offload the weights wait on the CPU; they compute where this says.
    device = torch.device(pipe._execution_device)
    report = SpeedReport()
    applied = report.applied
    if _dispatching(denoiser):
        # diffusers makes the last backend set the process's default, which reaches every
        # processor left without one: each pipeline names its own, exact ones too.
        denoiser.set_attention_backend("native")  # type: ignore[operator]
    steps: tuple[tuple[str, Callable[[torch.nn.Module, str], str]], ...] = (
        ("quantize", lambda module, value: _quantize(module, value, device)),
        ("attention", lambda module, value: _attention(module, value, device)),
        ("cache", _cache),
        ("compile", lambda module, value: _compile(module, value, device, "cache" in applied)),
    )
    for name, step in steps:
        value = getattr(levers, name)
        if value == getattr(EXACT, name):
            continue
        try:
            report.applied[name] = step(denoiser, value)
        except LeverSkipped as exc:
            report.skipped[name] = f"{value}: {exc}"
    return report


def reset_step_cache(denoiser: torch.nn.Module) -> None:
    """Forget a step cache's state: a pipeline call clears it when it ends, but not one that
    raised (out of memory) halfway, whose rows are rendered again."""
    from diffusers.hooks.hooks import HookRegistry
    from diffusers.models.cache_utils import CacheMixin

    if isinstance(denoiser, CacheMixin) and denoiser.is_cache_enabled:
        HookRegistry.check_if_exists_or_initialize(denoiser).reset_stateful_hooks()


def _dispatching(denoiser: torch.nn.Module) -> bool:
    """Whether the denoiser's attention goes through diffusers' backend dispatch; processors
    that call PyTorch's SDPA themselves (UNet3D, CogVideoX) ignore set_attention_backend."""
    return any(
        hasattr(getattr(module, "processor", None), "_attention_backend")
        for module in denoiser.modules()
    )


def _attention(denoiser: torch.nn.Module, backend: str, device: torch.device) -> str:
    name = ATTENTION_ALIASES.get(backend, backend)
    if not _dispatching(denoiser):
        raise LeverSkipped(
            f"{type(denoiser).__name__}'s attention does not dispatch on diffusers' backends"
        )
    if device.type != "cuda":
        raise LeverSkipped(f"the {backend} kernel needs CUDA")
    try:
        denoiser.set_attention_backend(name)  # type: ignore[operator]
    except (RuntimeError, ImportError, ValueError) as exc:  # kernel package missing, unusable
        raise LeverSkipped(_sentence(exc)) from exc
    return name if name == backend else f"{backend} ({name})"


def _cache(denoiser: torch.nn.Module, value: str) -> str:
    from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig
    from diffusers.models.cache_utils import CacheMixin

    if not isinstance(denoiser, CacheMixin):
        raise LeverSkipped(f"{type(denoiser).__name__} has no step-cache hooks")
    kind, _, argument = value.partition(":")
    config: FirstBlockCacheConfig | TaylorSeerCacheConfig
    if kind == "first-block":
        config = FirstBlockCacheConfig(threshold=float(argument))
    else:
        if not any(re.fullmatch(TAYLORSEER_MODULES, name) for name, _ in denoiser.named_modules()):
            raise LeverSkipped(f"{type(denoiser).__name__} has no blocks TaylorSeer knows")
        config = TaylorSeerCacheConfig(
            cache_interval=int(argument), cache_identifiers=[TAYLORSEER_MODULES]
        )
    try:
        denoiser.enable_cache(config)
    except ValueError as exc:  # a cache enabled already, a config it does not take
        raise LeverSkipped(_sentence(exc)) from exc
    except IndexError as exc:  # diffusers' first-block cache finds no second block to skip
        raise LeverSkipped("the first-block cache needs at least two transformer blocks") from exc
    return value


def _compile(denoiser: torch.nn.Module, value: str, device: torch.device, cached: bool) -> str:
    if device.type == "cpu" and not any(
        shutil.which(compiler) for compiler in ("c++", "g++", "clang++")
    ):
        raise LeverSkipped("compiling for the CPU needs a C++ compiler, and none is installed")
    use_compile_cache()
    if value == "regional":
        if not getattr(denoiser, "_repeated_blocks", None):
            raise LeverSkipped(
                f"{type(denoiser).__name__} declares no repeated blocks; use compile full"
            )
        # A step cache's hooks around the blocks break the graph: then one graph per block
        # cannot be asked for.
        denoiser.compile_repeated_blocks(fullgraph=not cached)  # type: ignore[operator]
        return "regional" + ("" if cached else " (fullgraph)")
    mode = "default" if value == "full" else value
    # Compilation happens on the first call of each new input shape (each batch size).
    denoiser.compile(mode=mode)
    return f"full ({mode})"


def _quantize(denoiser: torch.nn.Module, value: str, device: torch.device) -> str:
    if value == "fp8" and not (
        device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    ):
        raise LeverSkipped("FP8 needs a CUDA GPU of compute capability 8.9 or newer")
    if importlib.util.find_spec("torchao") is None:
        raise LeverSkipped("torchao is not installed (pip install torchao)")
    try:  # by name: torchao is optional and ships no type hints
        torchao = importlib.import_module("torchao.quantization")
    except Exception as exc:  # one built for another torch fails in its own ways
        raise LeverSkipped(f"torchao cannot be imported ({first_line(exc)})") from exc
    config = (
        torchao.Float8DynamicActivationFloat8WeightConfig()
        if value == "fp8"
        else torchao.Int8DynamicActivationInt8WeightConfig()
    )
    torchao.quantize_(denoiser, config)
    return f"{value} ({type(config).__name__})"


def _sentence(exc: BaseException) -> str:
    return first_line(exc).rstrip(".")
