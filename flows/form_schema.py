"""How the run parameters read in Prefect's form: an optional value opens on its own input,
and each parameter's bounds are stated in its description (`t2v --help` too), both derived
from the `Field`s."""

from __future__ import annotations

from typing import Any

from pydantic import GetJsonSchemaHandler
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue

# Accepts null like `{"type": "null"}`, but Prefect's form opens a null value on a branch
# typed "null" only; without one it opens on the first branch, the value's own input.
UNSET = {"title": "unset", "enum": [None]}


class OpensOnValue:
    """An optional value's schema whose null branch is `UNSET`: the form shows the value's
    input, empty when unset, typed into without a click on the `type | None` toggle. (The
    schema keeps a null branch: the form submits null for an empty input.)"""

    def __get_pydantic_json_schema__(
        self, core_schema: Any, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        typed = [branch for branch in schema["anyOf"] if branch.get("type") != "null"]
        return {**schema, "anyOf": [*typed, UNSET]}


def with_bounds(field: FieldInfo) -> str:
    """The field's description followed by its numeric bounds, e.g. "… 1 … 64."."""
    low = high = ""
    # Field's constraints (annotated_types' Ge, Gt, Le, Lt), read by their attribute.
    for rule in field.metadata:
        if (value := getattr(rule, "ge", None)) is not None:
            low = _number(value)
        elif (value := getattr(rule, "gt", None)) is not None:
            low = f"above {_number(value)}"
        if (value := getattr(rule, "le", None)) is not None:
            high = _number(value)
        elif (value := getattr(rule, "lt", None)) is not None:
            high = f"below {_number(value)}"
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
