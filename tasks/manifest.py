"""Read and validate a prompt CSV into typed rows and row errors."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

from tasks.celltext import NOT_TEXT, printable, show, visible
from tasks.columns import KNOWN_COLUMNS, column_names
from tasks.csvstream import open_manifest, read_records
from tasks.errors import ManifestError, RowError
from tasks.images import ImageSources, StartImage, check_fit
from tasks.rules import DOCUMENTED_RULES, ManifestRules, NumberColumn, check_voxels, number_columns

# Validation reads at most this many rows; how many a run may render is its budget.
MAX_ROWS = 100_000
MAX_TEXT = 2_000
# ASCII only, no separator, no leading '.': an id is a safe file name and S3 key as it is.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Derived seeds stay below 10**15, the 15 significant digits a spreadsheet keeps, so a
# manifest saved back from one still holds the same seeds (2**53 would allow 16 digits).
MAX_DERIVED_SEED = 2**49 - 1
_T = TypeVar("_T")


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
    image: StartImage | None = None
    last_image: StartImage | None = None
    image_fit: str = "cover"
    candidates: int = 1  # seeds rendered, the best video kept (tasks.candidates)


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


def derived_seed(row_id: str) -> int:
    """A stable seed for rows that give none: the same id always renders the same video."""
    digest = hashlib.sha256(row_id.encode()).digest()[:8]
    return int.from_bytes(digest, "big") & MAX_DERIVED_SEED


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
        cells = _cells(columns, record)
        row_id = cells.get("id", "").strip() or f"row-{line}"
        first_line = first_line_of.setdefault(row_id, line)
        errors = _RowErrors()
        if len(record) > len(columns):
            # A short row is fine (its missing cells are empty); a long one has cells with
            # no column.
            errors.add(
                "",
                f"the row must have at most {len(columns)} cells, one per column of the "
                f"header, got {len(record)}.",
            )
        for name, cell in cells.items():
            errors.check(name, _check_text, name, cell)
        row = _parse_row(line, row_id, cells, first_line, rules, numbers, errors, images)
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


def _cells(columns: list[str], record: list[str]) -> dict[str, str]:
    """Every column's raw cell ("" when the row is short): known columns under their
    lower-case name, unknown ones under their header."""
    padded = [*record, *[""] * (len(columns) - len(record))]
    return {
        name.lower() if name.lower() in KNOWN_COLUMNS else name: cell
        for name, cell in zip(columns, padded, strict=False)
    }


class _RowErrors:
    """A row's problems: the first one of each column, in the order they were found."""

    def __init__(self) -> None:
        self._found: dict[str, str] = {}

    def add(self, column: str, sentence: str) -> None:
        self._found.setdefault(column, sentence)

    def check(self, column: str, check: Callable[..., _T], *args: Any) -> _T | None:
        """`check(*args)`, or None once it raises `RowError` or `column` is already broken."""
        if column in self._found:
            return None
        try:
            return check(*args)
        except RowError as exc:
            self.add(column, str(exc))
            return None

    def __bool__(self) -> bool:
        return bool(self._found)

    def sentence(self) -> str:
        return " ".join(self._found.values())


def _check_text(name: str, cell: str) -> None:
    """A cell must be UTF-8 text without NUL."""
    found = NOT_TEXT.search(cell)
    if found is None:
        return
    where = f"at character {found.start() + 1}"
    if found.group() == "\x00":
        raise RowError(f"`{name}` must not hold a NUL character, got one {where}.")
    byte = ord(found.group()) - 0xDC00
    raise RowError(
        f"`{name}` must be UTF-8 text, got the byte {byte:#04x} {where}: "
        "save the manifest as UTF-8 CSV."
    )


def _parse_row(
    line: int,
    row_id: str,
    cells: dict[str, str],
    first_line: int,
    rules: ManifestRules,
    numbers: tuple[NumberColumn, ...],
    errors: _RowErrors,
    images: ImageSources,
) -> RenderRow | None:
    """The row with its defaults filled in; None when `errors` holds any of its problems."""
    # 1. Check the text columns, in the order errors are reported
    prompt = cells.get("prompt", "").strip()
    errors.check("prompt", _check_prompt, prompt, cells.get("prompt", ""))
    errors.check("id", _check_id, row_id, line, first_line)
    negative_prompt = cells.get("negative_prompt", "").strip()
    errors.check("negative_prompt", _check_length, "negative_prompt", negative_prompt)
    # 2. Check the numbers, then the size of the video they describe
    parsed = {c.name: errors.check(c.name, c.parse, cells.get(c.name, "").strip()) for c in numbers}
    values = {name: value for name, value in parsed.items() if value is not None}
    if {"num_frames", "height", "width"} <= values.keys():
        shape = (int(values["num_frames"]), int(values["height"]), int(values["width"]))
        errors.check("num_frames × height × width", check_voxels, *shape, rules)
    # 3. Read and check the images, the row's only file reads
    start = {name: _image(name, cells, rules, images, errors) for name in ("image", "last_image")}
    image_fit = errors.check("image_fit", check_fit, cells.get("image_fit", ""))
    if errors:
        return None
    seed = int(values["seed"])
    return RenderRow(
        line=line,
        id=row_id,
        prompt=prompt,
        negative_prompt=negative_prompt or rules.negative_prompt,
        seed=seed if seed >= 0 else derived_seed(row_id),
        num_frames=int(values["num_frames"]),
        height=int(values["height"]),
        width=int(values["width"]),
        num_inference_steps=int(values["num_inference_steps"]),
        guidance_scale=float(values["guidance_scale"]),
        fps=int(values["fps"]),
        extra={name: cell for name, cell in cells.items() if name not in KNOWN_COLUMNS},
        image=start["image"],
        last_image=start["last_image"],
        image_fit=image_fit or "cover",
        candidates=int(values["candidates"]),
    )


def _image(
    column: str,
    cells: dict[str, str],
    rules: ManifestRules,
    images: ImageSources,
    errors: _RowErrors,
) -> StartImage | None:
    """The checked image a column names, None when its cell is empty or the image is bad."""
    cell = cells.get(column, "").strip()
    if not cell:
        return None
    if column not in rules.image_columns:
        # Families import this module; the presets that take images are theirs.
        from tasks.families import image_presets

        presets = ", ".join(image_presets(column))
        errors.add(
            column,
            f"`{column}` needs a model that takes one, and {rules.family or 'this model'} "
            "does not "
            f"({f'presets that do: {presets}' if presets else 'no preset does yet'}).",
        )
        return None
    return errors.check(column, images.check, column, cell)


def _check_prompt(prompt: str, cell: str) -> None:
    if not visible(prompt):
        raise RowError(
            "`prompt` must not be empty after trimming spaces and invisible characters, "
            f"got {show(cell)}."
        )
    _check_length("prompt", prompt)


def _check_length(column: str, text: str) -> None:
    if len(text) > MAX_TEXT:
        raise RowError(
            f"`{column}` must be at most {MAX_TEXT:,} characters, "
            f"got {len(text):,} characters: {show(text)}."
        )


def _check_id(row_id: str, line: int, first_line: int) -> None:
    if not ID_PATTERN.fullmatch(row_id):
        raise RowError(
            "`id` must be 1–128 ASCII letters, digits, '.', '_' or '-' starting with a letter "
            f"or digit (a safe file name), got {show(row_id)}."
        )
    if first_line != line:
        raise RowError(
            f"`id` must be unique in the manifest, got {show(row_id)}, "
            f"which data row {first_line} already has."
        )
