"""The speed levers as values: their spellings, parsing, and the profiles that choose them.

A lever's value is kept in one canonical spelling (`first-block:0.05`, `regional`), so that
equal choices compare, hash and print alike: pipelines are cached by them, keys hash them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

Speed = Literal["exact", "fast", "fastest"]
SPEEDS: tuple[Speed, ...] = get_args(Speed)

# Our short names for diffusers' attention backends (any of diffusers' own names is
# accepted too). `sdpa` is PyTorch's scaled_dot_product_attention, diffusers' `native`.
ATTENTION_ALIASES = {
    "sdpa": "native",
    "flash": "flash",
    "flash3": "_flash_3_hub",
    "cudnn": "_native_cudnn",
    "sage": "sage",
}
CACHES = ("none", "first-block:THRESHOLD", "taylorseer[:INTERVAL]")
# `off|regional|full`, and what T2V_COMPILE took before: 0, 1 and torch.compile's modes.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILES = ("off", "regional", "full", *COMPILE_MODES[1:])
QUANTIZATIONS = ("none", "fp8", "int8")
# diffusers' TaylorSeerCacheConfig default: a full step, then 4 predicted ones.
TAYLORSEER_INTERVAL = 5


@dataclass(frozen=True)
class Levers:
    """One setting per lever; the defaults are today's exact recipe."""

    attention: str = "sdpa"
    cache: str = "none"
    compile: str = "off"
    quantize: str = "none"

    def settings(self) -> dict[str, str]:
        """The levers that differ from exact, by name."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(Levers, f.name)
        }

    def describe(self) -> str:
        """`cache first-block:0.05, compile regional`, or `exact`."""
        settings = self.settings()
        return ", ".join(f"{name} {value}" for name, value in settings.items()) or "exact"

    def pixel_settings(self) -> dict[str, str]:
        """The levers that change pixels beyond batching's tolerance, for output keys:
        step caches, quantization and approximate attention; not exact kernels or compiling."""
        return {
            name: value
            for name, value in self.settings().items()
            if name in ("cache", "quantize") or (name == "attention" and approximate(value))
        }

    def rows_per_call(self, batch_size: int) -> int:
        """How many rows one pipeline call may take. A first-block cache decides whether to
        skip a step from the whole batch's residual, so a row's video would depend on its
        batch-mates: it renders one row per call."""
        return 1 if self.cache.startswith("first-block") else batch_size


EXACT = Levers()


@dataclass(frozen=True)
class SpeedSupport:
    """What a family's denoiser offers, and what its `fast` and `fastest` profiles choose."""

    step_caches: bool  # a diffusers CacheMixin (enable_cache)
    attention_backends: bool  # attention processors that dispatch on set_attention_backend
    fast: Levers
    fastest: Levers

    def profile(self, speed: Speed) -> Levers:
        return {"exact": EXACT, "fast": self.fast, "fastest": self.fastest}[speed]


def resolve_levers(support: SpeedSupport, speed: Speed, **overrides: str | None) -> Levers:
    """The profile's levers, each lever set on its own (not None) replacing the profile's."""
    return replace(
        support.profile(speed), **{name: value for name, value in overrides.items() if value}
    )


def key_settings(levers: Levers, support: SpeedSupport) -> dict[str, str]:
    """What output keys hash of `levers`: their `pixel_settings`, but for levers the family's
    denoiser cannot take (skipped at load, so they change nothing)."""
    settings = levers.pixel_settings()
    if not support.step_caches:
        settings.pop("cache", None)
    if not support.attention_backends:
        settings.pop("attention", None)
    return settings


def approximate(attention: str) -> bool:
    """Whether an attention backend trades accuracy for speed (SageAttention's int8 QK)."""
    return "sage" in attention


def parse_attention(value: str) -> str:
    """`sdpa|flash|flash3|cudnn|sage` or a diffusers backend name, canonical."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    text = value.strip().lower()
    backends = {backend.value for backend in AttentionBackendName}
    if text == "native":
        return "sdpa"
    if text in ATTENTION_ALIASES or text in backends:
        return text
    raise ValueError(
        f"attention {value!r} is not a backend: use {'|'.join(ATTENTION_ALIASES)} or a name "
        "of diffusers' AttentionBackendName (e.g. _native_flash, sage_hub)"
    )


def parse_cache(value: str) -> str:
    """`none`, `first-block:THRESHOLD` (0 < THRESHOLD ≤ 1) or `taylorseer[:INTERVAL]`
    (INTERVAL ≥ 2), canonical."""
    text = value.strip().lower()
    kind, _, argument = text.partition(":")
    if text == "none":
        return text
    if kind == "first-block" and argument:
        threshold = _number(argument)
        if threshold is not None and 0 < threshold <= 1:
            return f"first-block:{threshold:g}"
    if kind == "taylorseer" and (argument.isdigit() or not argument):
        interval = int(argument or TAYLORSEER_INTERVAL)
        if interval >= 2:
            return f"taylorseer:{interval}"
    raise ValueError(
        f"cache {value!r} is not a step cache: use {'|'.join(CACHES)} "
        "(THRESHOLD in (0, 1], INTERVAL a whole number of at least 2)"
    )


def parse_compile(value: str) -> str:
    """`off|regional|full` or a torch.compile mode; `0` is off and `1` full, as before."""
    text = value.strip().lower()
    canonical = {"": "off", "0": "off", "1": "full", "default": "full"}.get(text, text)
    if canonical in COMPILES:
        return canonical
    raise ValueError(
        f"compile {value!r} is not a compile setting: use {'|'.join(COMPILES)}, 0 or 1"
    )


def parse_quantize(value: str) -> str:
    text = value.strip().lower()
    if text in QUANTIZATIONS:
        return text
    raise ValueError(f"quantize {value!r} is not a quantization: use {'|'.join(QUANTIZATIONS)}")


PARSERS = {
    "attention": parse_attention,
    "cache": parse_cache,
    "compile": parse_compile,
    "quantize": parse_quantize,
}


def parse_levers(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Each lever given (not None) in its canonical spelling; a ValueError names the first
    wrong one and its allowed values."""
    return {name: None if value is None else PARSERS[name](value) for name, value in values.items()}


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
