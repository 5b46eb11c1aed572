"""Speed levers (step caches, attention kernels, compiling, quantization) and the `exact`,
`fast` and `fastest` profiles that choose them per family. Importable without Prefect:

    levers = resolve_levers(family.speed, "fast", cache="first-block:0.08")
    report = apply_levers(pipe, family, levers)  # what was applied, and what skipped and why
"""

from tasks.speed.apply import SpeedReport, apply_levers, reset_step_cache
from tasks.speed.levers import (
    EXACT,
    SPEEDS,
    Levers,
    Speed,
    SpeedSupport,
    key_settings,
    parse_levers,
    resolve_levers,
)

__all__ = [
    "EXACT",
    "SPEEDS",
    "Levers",
    "Speed",
    "SpeedReport",
    "SpeedSupport",
    "apply_levers",
    "key_settings",
    "parse_levers",
    "reset_step_cache",
    "resolve_levers",
]
