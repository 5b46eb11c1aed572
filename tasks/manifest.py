"""Read and validate a prompt CSV into typed rows and row errors."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from storage import open_location
from tasks.errors import ManifestError, RowError

MAX_ROWS = 10_000
MAX_TEXT = 2_000
# Frames × height × width of one video; past this a single row could exhaust a GPU.
MAX_VOXELS_PER_ROW = 64 * 512 * 512
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class RenderRow:
    """One valid manifest row with every default filled in."""

    line: int  # 1-based data row number, the position in the input order
    id: str
    prompt: str
    negative_prompt: str
    seed: int
    num_frames: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    fps: int
    extra: dict[str, str] = field(default_factory=dict)  # unknown columns, by header


@dataclass(frozen=True)
class InvalidRow:
    """A row that breaks a rule: its raw cells and one sentence saying why."""

    line: int
    id: str
    error: str
    cells: dict[str, str]  # known columns by lower-case name, unknown ones by header


@dataclass(frozen=True)
class Manifest:
    rows: list[RenderRow]
    invalid: list[InvalidRow]
    extra_columns: list[str]  # unknown columns, in manifest order, with their original names


@dataclass(frozen=True)
class NumberColumn:
    """A numeric column: its default, its bounds, and an optional extra rule."""

    name: str
    kind: type[int] | type[float]
    default: int | float
    low: int | float
    high: int | float
    multiple_of: int = 1

    def rule(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.multiple_of > 1:
            noun = f"a multiple of {self.multiple_of}"
        return f"{noun} in {self.low}…{self.high}"

    def parse(self, text: str) -> int | float:
        if not text:
            return self.default
        value = _parse_number(text, self.kind)
        if (
            value is None
            or not self.low <= value <= self.high
            or (self.multiple_of > 1 and value % self.multiple_of)
        ):
            raise RowError(f"`{self.name}` must be {self.rule()}, got {_show(text)}.")
        return value


NUMBER_COLUMNS = (
    NumberColumn("seed", int, -1, 0, MAX_SEED),  # default -1: derived from the id
    NumberColumn("num_frames", int, 16, 1, 128),
    NumberColumn("height", int, 256, 64, 1024, multiple_of=8),
    NumberColumn("width", int, 256, 64, 1024, multiple_of=8),
    NumberColumn("num_inference_steps", int, 25, 1, 150),
    NumberColumn("guidance_scale", float, 9.0, 0, 30),
    NumberColumn("fps", int, 8, 1, 60),
)
KNOWN_COLUMNS = ("id", "prompt", "negative_prompt", *(c.name for c in NUMBER_COLUMNS))


def read_manifest(uri: str, limit: int | None = None) -> Manifest:
    """Read a manifest from a local path (or any storage location) and validate it."""
    storage, key = open_location(uri)
    return parse_manifest(storage.read_bytes(key), uri, limit=limit)


def parse_manifest(data: bytes, source: str, limit: int | None = None) -> Manifest:
    """Validate every row; only a manifest unusable as a whole raises `ManifestError`."""
    # 1. Decode and split into records
    records = _records(_decode(data, source), source)
    header = next(records, None)
    if header is None:
        raise ManifestError(f"{source} is empty: it needs a header row with a `prompt` column")
    columns = _columns(header, source)
    extra_columns = [name for name in columns if name.lower() not in KNOWN_COLUMNS]
    # 2. Validate each data row on its own; remember ids to refuse repeats
    rows: list[RenderRow] = []
    invalid: list[InvalidRow] = []
    first_line_of: dict[str, int] = {}
    line = 0
    for record in records:
        if not any(cell.strip() for cell in record):
            continue
        line += 1
        if limit is not None and line > limit:
            break
        if line > MAX_ROWS:
            raise ManifestError(
                f"{source} has more than {MAX_ROWS:,} rows; split it into smaller runs"
            )
        cells = _cells(columns, record)
        row_id = cells.get("id", "").strip() or f"row-{line}"
        try:
            row = _parse_row(line, cells, columns, record)
            if row.id in first_line_of:
                raise RowError(
                    f"`id` {_show(row.id)} repeats the id of data row {first_line_of[row.id]}."
                )
            first_line_of[row.id] = line
            rows.append(row)
        except RowError as exc:
            invalid.append(InvalidRow(line, row_id, str(exc), cells))
    if line == 0:
        raise ManifestError(f"{source} has a header but no data rows")
    return Manifest(rows, invalid, extra_columns)


def _decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{source} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); "
            "save it as UTF-8 CSV"
        ) from exc
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ManifestError(f"{source} holds a NUL character on line {line}: it is not a CSV file")
    return text


def _records(text: str, source: str) -> Iterator[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        yield from reader
    except csv.Error as exc:
        raise ManifestError(
            f"{source} is not valid CSV near line {reader.line_num}: {exc}"
        ) from exc


def _columns(header: list[str], source: str) -> list[str]:
    columns = [name.strip() for name in header]
    lowered = [name.lower() for name in columns]
    if "prompt" not in lowered:
        shown = ", ".join(repr(name) for name in columns[:8])
        raise ManifestError(f"{source} has no `prompt` column (its header is {shown})")
    repeated = sorted({name for name in lowered if name and lowered.count(name) > 1})
    if repeated:
        raise ManifestError(f"{source} repeats the column {repeated[0]!r} in its header")
    return columns


def _cells(columns: list[str], record: list[str]) -> dict[str, str]:
    """Known columns under their lower-case name, unknown ones under their header."""
    cells = {}
    for name, value in zip(columns, record, strict=False):
        key = name.lower() if name.lower() in KNOWN_COLUMNS else name
        cells[key] = value
    return cells


def _parse_row(
    line: int, cells: dict[str, str], columns: list[str], record: list[str]
) -> RenderRow:
    # 1. Check the shape and the text columns
    if len(record) > len(columns):
        raise RowError(
            f"the row has {len(record)} cells but the header names {len(columns)} columns."
        )
    prompt = cells.get("prompt", "").strip()
    if not prompt:
        raise RowError("`prompt` must not be empty.")
    _check_length("prompt", prompt)
    row_id = cells.get("id", "").strip() or f"row-{line}"
    if not ID_PATTERN.fullmatch(row_id):
        raise RowError(
            f"`id` must be 1–128 letters, digits, '.', '_' or '-' starting with a letter or "
            f"digit (a safe file name), got {_show(row_id)}."
        )
    negative_prompt = cells.get("negative_prompt", "").strip()
    _check_length("negative_prompt", negative_prompt)
    # 2. Check the numbers, then the size of the video they describe
    numbers = {c.name: c.parse(cells.get(c.name, "").strip()) for c in NUMBER_COLUMNS}
    voxels = int(numbers["num_frames"] * numbers["height"] * numbers["width"])
    if voxels > MAX_VOXELS_PER_ROW:
        raise RowError(
            f"`num_frames` × `height` × `width` must be at most {MAX_VOXELS_PER_ROW:,} "
            f"(64 frames of 512×512), got {numbers['num_frames']}×{numbers['height']}×"
            f"{numbers['width']} = {voxels:,}."
        )
    seed = int(numbers["seed"])
    return RenderRow(
        line=line,
        id=row_id,
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed if seed >= 0 else derived_seed(row_id),
        num_frames=int(numbers["num_frames"]),
        height=int(numbers["height"]),
        width=int(numbers["width"]),
        num_inference_steps=int(numbers["num_inference_steps"]),
        guidance_scale=float(numbers["guidance_scale"]),
        fps=int(numbers["fps"]),
        extra={k: v for k, v in cells.items() if k.lower() not in KNOWN_COLUMNS},
    )


def derived_seed(row_id: str) -> int:
    """A stable seed for rows that give none: the same id always renders the same video."""
    return int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") & MAX_SEED


def _parse_number(text: str, kind: Callable[[str], int | float]) -> int | float | None:
    """An int column takes integers ("16", "16.0"); a float column any finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if kind is int:
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)  # exact, even past float precision (seeds near 2**63)
        return int(value) if value.is_integer() and "e" not in text.lower() else None
    return value


def _check_length(column: str, text: str) -> None:
    if len(text) > MAX_TEXT:
        raise RowError(f"`{column}` must be at most {MAX_TEXT:,} characters, got {len(text):,}.")


def _show(text: str) -> str:
    """A cell as it appears in an error: quoted, and cut short when long."""
    return repr(text if len(text) <= 60 else text[:57] + "...")
