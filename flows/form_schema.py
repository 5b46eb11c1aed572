"""Each run parameter's bounds stated in its description (Prefect's form, `t2v --help`),
derived from its `Field` constraints."""

from __future__ import annotations

from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo


def with_bounds(field: FieldInfo) -> str:
    """The field's description followed by its numeric bounds, e.g. "… 1 … 64."."""
    low = high = ""
    for rule in field.metadata:
        if isinstance(rule, Ge):
            low = _number(rule.ge)
        elif isinstance(rule, Gt):
            low = f"above {_number(rule.gt)}"
        elif isinstance(rule, Le):
            high = _number(rule.le)
        elif isinstance(rule, Lt):
            high = f"below {_number(rule.lt)}"
    description = field.description or ""
    if low and high and not low.startswith("above") and not high.startswith("below"):
        return f"{description} {low} … {high}."
    if low and high:
        return f"{description} {_sentence(low, 'at least')}, {_clause(high, 'at most')}."
    if low or high:
        return f"{description} {_sentence(low or high, 'at least' if low else 'at most')}."
    return description


def _number(value: Any) -> str:
    return f"{value:,}"


def _clause(bound: str, word: str) -> str:
    return bound if bound.startswith(("above", "below")) else f"{word} {bound}"


def _sentence(bound: str, word: str) -> str:
    clause = _clause(bound, word)
    return clause[0].upper() + clause[1:]
