"""Read and validate a prompt CSV into typed rows and row errors."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from storage import open_location
from tasks.errors import ManifestError, RowError

# Validation reads at most this many rows; how many a run may render is its budget.
MAX_ROWS = 100_000
MAX_TEXT = 2_000
# Frames × height × width of one video; past this a single row could exhaust a GPU.
MAX_VOXELS_PER_ROW = 64 * 512 * 512
# ASCII only, no separator, no leading '.': an id is a safe file name and S3 key as it is.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_SEED = 2**63 - 1
# NUL, or a byte that is not UTF-8 (decoded with surrogateescape to U+DC80…U+DCFF).
_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")
# Plain decimal notation only: int() and float() would also take "1_0", "١٢" and "nan".
INTEGER = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_NUMBER_TEXT = 40  # longer digit strings are typos, and int() refuses past 4,300 digits


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that breaks a rule: its raw cells and one sentence saying why."""

    line: int
    id: str
    error: str
    cells: dict[str, str]  # known columns by lower-case name, unknown ones by header


@dataclass(frozen=True)
class Manifest:
    """Every data row of a manifest, in input order, split into valid and invalid ones."""

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
        """The cell's value, its default when empty; `RowError` when it breaks the rule."""
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


@dataclass(frozen=True)
class ManifestRules:
    """What a model family accepts in a manifest row, and the values its empty cells take.

    `frame_step` k means `num_frames` must be k·n + 1 (Wan and CogVideoX 4, LTX 8); 1 takes
    any count. `max_voxels` caps frames × height × width of one row.
    """

    family: str = "ModelScope"
    num_frames: int = 16
    height: int = 256
    width: int = 256
    num_inference_steps: int = 25
    guidance_scale: float = 9.0
    fps: int = 8
    negative_prompt: str = ""
    max_frames: int = 128
    min_size: int = 64
    max_size: int = 1024
    size_multiple: int = 8
    frame_step: int = 1
    max_voxels: int = 64 * 512 * 512


MODELSCOPE_RULES = ManifestRules()


# In DESIGN's order, which is also the order row errors are looked for in.
NUMBER_COLUMNS = (
    NumberColumn("seed", int, -1, 0, MAX_SEED),  # default -1: derived from the id
    NumberColumn("num_frames", int, 16, 1, 128),
    NumberColumn("height", int, 256, 64, 1024, multiple_of=8),
    NumberColumn("width", int, 256, 64, 1024, multiple_of=8),
    NumberColumn("num_inference_steps", int, 25, 1, 150),
    NumberColumn("guidance_scale", float, 9.0, 0, 30),
    NumberColumn("fps", int, 8, 1, 60),
)
KNOWN_COLUMNS = ("prompt", "id", "negative_prompt", *(c.name for c in NUMBER_COLUMNS))


def read_manifest(uri: str, limit: int | None = None) -> Manifest:
    """Read a manifest from a local path (or any storage location) and validate it."""
    storage, key = open_location(uri)
    return parse_manifest(storage.read_bytes(key), uri, limit=limit)


def parse_manifest(data: bytes, source: str, limit: int | None = None) -> Manifest:
    """Validate every row (the first `limit` ones when given); `source` names it in errors.

    Only a manifest unusable as a whole raises `ManifestError`; a bad row becomes an
    `InvalidRow` whose error is one sentence about its first problem, in column order.
    """
    # 1. Decode, split into records, read the header
    text = _decode(data)
    records = (record for record in _records(text, source) if _filled(record))
    header = next(records, None)
    if header is None:
        raise ManifestError(f"{source} is empty: it needs a header row with a `prompt` column.")
    _check_header_text(header, text, len(data) - len(data.removeprefix(codecs.BOM_UTF8)), source)
    columns = _columns(header, source)
    extra_columns = [name for name in columns if name.lower() not in KNOWN_COLUMNS]
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
        cells = _cells(columns, record)
        row_id = cells.get("id", "").strip() or f"row-{line}"
        first_line = first_line_of.setdefault(row_id, line)
        try:
            _check_width(record, columns)
            _check_text(cells)
            rows.append(_parse_row(line, row_id, cells, first_line))
        except RowError as exc:
            shown = {name: _printable(cell) for name, cell in cells.items()}
            invalid.append(InvalidRow(line, _printable(row_id), str(exc), shown))
    if line == 0:
        raise ManifestError(f"{source} has a header but no data rows.")
    return Manifest(rows, invalid, extra_columns)


def derived_seed(row_id: str) -> int:
    """A stable seed for rows that give none: the same id always renders the same video."""
    return int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") & MAX_SEED


def _decode(data: bytes) -> str:
    """The text of a manifest. Bytes that are not UTF-8 become lone surrogates, so that
    only the rows holding them are refused (`_check_text`), or the whole file when its
    header holds them (`_check_header_text`)."""
    return data.removeprefix(codecs.BOM_UTF8).decode("utf-8", "surrogateescape")


def _check_header_text(header: list[str], text: str, bom: int, source: str) -> None:
    """A header that is not UTF-8 text, or holds NUL, means the file is not a UTF-8 CSV.
    `text` is the whole decoded file, which began with a `bom` bytes long BOM."""
    found = _NOT_TEXT.search("".join(header))
    if found is None:
        return
    if found.group() == "\x00":
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ManifestError(f"{source} holds a NUL character on line {line}: it is not a CSV file.")
    # Nothing before the header holds a bad byte, so the file's first one is in it.
    first = text.index(found.group())
    offset = bom + len(text[:first].encode("utf-8", "surrogateescape"))
    raise ManifestError(
        f"{source} is not UTF-8 text (byte {offset} is {ord(found.group()) - 0xDC00:#04x}): "
        "save it as UTF-8 CSV."
    )


def _records(text: str, source: str) -> Iterator[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        yield from reader
    except csv.Error as exc:
        raise ManifestError(
            f"{source} is not valid CSV near line {reader.line_num}: {exc}."
        ) from exc


def _filled(record: list[str]) -> bool:
    """False for blank lines, and for lines of separators only as spreadsheets leave them."""
    return any(cell.strip() for cell in record)


def _columns(header: list[str], source: str) -> list[str]:
    columns = [name.strip() for name in header]
    lowered = [name.lower() for name in columns]
    if "prompt" not in lowered:
        shown = ", ".join(_show(name) for name in columns[:8]) + (", …" if len(columns) > 8 else "")
        raise ManifestError(f"{source} has no `prompt` column (its header is {shown}).")
    if "" in columns:
        raise ManifestError(
            f"{source} has a column with no name (column {columns.index('') + 1} of its header): "
            "name it or delete it."
        )
    repeated = [name for number, name in enumerate(lowered) if name in lowered[:number]]
    if repeated:
        raise ManifestError(f"{source} names the column {_show(repeated[0])} twice in its header.")
    return columns


def _cells(columns: list[str], record: list[str]) -> dict[str, str]:
    """Every column's raw cell ("" when the row is short): known columns under their
    lower-case name, unknown ones under their header."""
    padded = [*record, *[""] * (len(columns) - len(record))]
    return {
        name.lower() if name.lower() in KNOWN_COLUMNS else name: cell
        for name, cell in zip(columns, padded, strict=False)
    }


def _check_text(cells: dict[str, str]) -> None:
    """Every cell must be UTF-8 text without NUL; the first one that is not names its column."""
    for name, cell in cells.items():
        found = _NOT_TEXT.search(cell)
        if found is None:
            continue
        where = f"at character {found.start() + 1}"
        if found.group() == "\x00":
            raise RowError(f"`{name}` must not hold a NUL character, got one {where}.")
        byte = ord(found.group()) - 0xDC00
        raise RowError(
            f"`{name}` must be UTF-8 text, got the byte {byte:#04x} {where}: "
            "save the manifest as UTF-8 CSV."
        )


def _printable(text: str) -> str:
    """A raw cell as the results manifest shows it: U+FFFD for each bad byte or NUL."""
    return _NOT_TEXT.sub("\ufffd", text)


def _check_width(record: list[str], columns: list[str]) -> None:
    # A short row is fine (its missing cells are empty); a long one has cells with no column.
    if len(record) > len(columns):
        raise RowError(
            f"the row must have at most {len(columns)} cells, one per column of the header, "
            f"got {len(record)}."
        )


def _parse_row(line: int, row_id: str, cells: dict[str, str], first_line: int) -> RenderRow:
    # 1. Check the text columns, in the order errors are reported
    prompt = cells.get("prompt", "").strip()
    if not prompt:
        raise RowError(
            f"`prompt` must not be empty after trimming, got {_show(cells.get('prompt', ''))}."
        )
    _check_length("prompt", prompt)
    _check_id(row_id, line, first_line)
    negative_prompt = cells.get("negative_prompt", "").strip()
    _check_length("negative_prompt", negative_prompt)
    # 2. Check the numbers, then the size of the video they describe
    numbers = {c.name: c.parse(cells.get(c.name, "").strip()) for c in NUMBER_COLUMNS}
    num_frames, height, width = (int(numbers[name]) for name in ("num_frames", "height", "width"))
    if num_frames * height * width > MAX_VOXELS_PER_ROW:
        raise RowError(
            f"`num_frames` × `height` × `width` must be at most {MAX_VOXELS_PER_ROW:,} "
            f"(64 frames of 512×512), got {num_frames}×{height}×{width} = "
            f"{num_frames * height * width:,}."
        )
    seed = int(numbers["seed"])
    return RenderRow(
        line=line,
        id=row_id,
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed if seed >= 0 else derived_seed(row_id),
        num_frames=num_frames,
        height=height,
        width=width,
        num_inference_steps=int(numbers["num_inference_steps"]),
        guidance_scale=float(numbers["guidance_scale"]),
        fps=int(numbers["fps"]),
        extra={name: cell for name, cell in cells.items() if name not in KNOWN_COLUMNS},
    )


def _check_length(column: str, text: str) -> None:
    if len(text) > MAX_TEXT:
        raise RowError(
            f"`{column}` must be at most {MAX_TEXT:,} characters, "
            f"got {len(text):,} characters: {_show(text)}."
        )


def _check_id(row_id: str, line: int, first_line: int) -> None:
    if not ID_PATTERN.fullmatch(row_id):
        raise RowError(
            "`id` must be 1–128 ASCII letters, digits, '.', '_' or '-' starting with a letter "
            f"or digit (a safe file name), got {_show(row_id)}."
        )
    if first_line != line:
        raise RowError(
            f"`id` must be unique in the manifest, got {_show(row_id)}, "
            f"which data row {first_line} already has."
        )


def _parse_number(text: str, kind: type[int] | type[float]) -> int | float | None:
    """An integer column takes "16" and "16.0" but not "1e1"; a number column any finite
    decimal, exponents included. None when the text is not such a number."""
    if len(text) > MAX_NUMBER_TEXT:
        return None
    if kind is int:
        return int(text.partition(".")[0]) if INTEGER.fullmatch(text) else None
    if not DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None  # "1e999" is inf


def _show(text: str) -> str:
    """A cell as it appears in an error: quoted, and cut short when long."""
    return repr(text if len(text) <= 60 else text[:57] + "...")
