"""Read and validate a prompt CSV into typed rows and row errors; `tasks.manifest_row`
checks each row."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from tasks.celltext import printable
from tasks.columns import KNOWN_COLUMNS, column_names
from tasks.csvstream import open_manifest, read_records
from tasks.errors import ManifestError
from tasks.images import ImageSources
from tasks.manifest_row import InvalidRow, RenderRow, RowErrors, check_text, parse_row, row_cells
from tasks.rules import DOCUMENTED_RULES, ManifestRules, number_columns

__all__ = [
    "MAX_ROWS",
    "InvalidRow",
    "Manifest",
    "RenderRow",
    "parse_manifest",
    "read_header",
    "read_manifest",
]

# Validation reads at most this many rows; how many a run may render is its budget.
MAX_ROWS = 100_000


@dataclass(frozen=True)
class Manifest:
    """Every data row of a manifest, in input order, split into valid and invalid ones."""

    rows: list[RenderRow]
    invalid: list[InvalidRow]
    extra_columns: list[str]  # unknown columns, in manifest order, with their original names


def read_manifest(
    uri: str,
    limit: int | None = None,
    rules: ManifestRules = DOCUMENTED_RULES,
    image_root: str | None = None,
) -> Manifest:
    """Read a manifest from a local path (or any storage location) and validate it against
    a model family's `rules`. It is read as a stream, of at most `MAX_MANIFEST_BYTES`.
    Its images are read and checked too (see `ImageSources` for where they may be)."""
    images = ImageSources.for_manifest(uri, image_root)
    with open_manifest(uri) as stream:
        return _parse(stream, uri, limit, rules, images)


def read_header(uri: str) -> list[str]:
    """A manifest's column names, after every check `read_manifest` makes of its header,
    reading no further: a bad manifest is refused before a run starts."""
    with open_manifest(uri) as stream:
        columns, _ = _open(stream, uri)
    return columns


def parse_manifest(
    data: bytes, source: str, limit: int | None = None, rules: ManifestRules = DOCUMENTED_RULES
) -> Manifest:
    """Validate a manifest held in memory, as `read_manifest` does of one stored at `source`."""
    images = ImageSources.for_manifest(source)
    return _parse(io.BytesIO(data), source, limit, rules, images)


def _parse(
    stream: BinaryIO, source: str, limit: int | None, rules: ManifestRules, images: ImageSources
) -> Manifest:
    """Validate every row (the first `limit` ones when given); `source` names it in errors.

    Only a manifest unusable as a whole raises `ManifestError`; a bad row becomes an
    `InvalidRow` whose error has a sentence for each broken column, in column order.
    """
    # 1. Check the header; the records after it are decoded as they are read
    columns, records = _open(stream, source)
    extra_columns = [name for name in columns if name.lower() not in KNOWN_COLUMNS]
    numbers = number_columns(rules)
    # 2. Validate each data row on its own; an id's first row is the one that keeps it
    rows: list[RenderRow] = []
    invalid: list[InvalidRow] = []
    first_line_of: dict[str, int] = {}
    line = 0
    for record in records:
        line += 1
        if limit is not None and line > limit:
            break
        if line > MAX_ROWS:
            raise ManifestError(
                f"{source} has more than {MAX_ROWS:,} data rows: split it into smaller runs."
            )
        cells = row_cells(columns, record)
        row_id = cells.get("id", "").strip() or f"row-{line}"
        first_line = first_line_of.setdefault(row_id, line)
        errors = RowErrors()
        if len(record) > len(columns):
            # A short row is fine (its missing cells are empty); a long one has cells with
            # no column.
            errors.add(
                "",
                f"the row must have at most {len(columns)} cells, one per column of the "
                f"header, got {len(record)}.",
            )
        for name, cell in cells.items():
            errors.check(name, check_text, name, cell)
        row = parse_row(line, row_id, cells, first_line, rules, numbers, errors, images)
        if row is None:
            shown = {name: printable(cell) for name, cell in cells.items()}
            invalid.append(InvalidRow(line, printable(row_id), errors.sentence(), shown))
        else:
            rows.append(row)
    if line == 0:
        raise ManifestError(f"{source} has a header but no data rows.")
    return Manifest(rows, invalid, extra_columns)


def _open(stream: BinaryIO, source: str) -> tuple[list[str], Iterator[list[str]]]:
    """The header's checked column names, and the non-blank records after it."""
    header, records = read_records(stream, source)
    return column_names(header, source), records
