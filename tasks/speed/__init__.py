"""Speed levers (step caches, attention kernels, compiling, quantization) and the `exact`,
`fast` and `fastest` profiles that choose them per family. Importable without Prefect:

    levers = resolve_levers(family.speed, "fast", cache="first-block:0.08")
    report = apply_levers(pipe, family, levers)  # tasks.speed.apply: applied, skipped and why

The levers as values import no torch (results and keys use them where torch is absent);
applying them, in `tasks.speed.apply`, does.
"""

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
    "SpeedSupport",
    "key_settings",
    "parse_levers",
    "resolve_levers",
]
