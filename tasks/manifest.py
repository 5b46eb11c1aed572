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
from typing import TYPE_CHECKING, BinaryIO

from storage import open_location
from tasks.errors import ManifestError, RowError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# Validation reads at most this many rows; how many a run may render is its budget.
MAX_ROWS = 100_000
MAX_TEXT = 2_000
# Far above 100,000 rows of 2,000-character prompts; past it a path like /dev/zero or a
# wrong object would fill the memory before any row error could be reported.
MAX_MANIFEST_BYTES = 256 * 2**20
MAX_COLUMNS = 10_000
# ASCII only, no separator, no leading '.': an id is a safe file name and S3 key as it is.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_SEED = 2**63 - 1
# Derived seeds stay below 10**15, the 15 significant digits a spreadsheet keeps, so a
# manifest saved back from one still holds the same seeds (2**53 would allow 16 digits).
MAX_DERIVED_SEED = 2**49 - 1
# NUL, or a byte that is not UTF-8 (decoded with surrogateescape to U+DC80…U+DCFF).
_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")
# Plain decimal notation only: int() and float() would also take "1_0", "١٢" and "nan".
INTEGER = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_NUMBER_TEXT = 40  # longer digit strings are typos, and int() refuses past 4,300 digits
# A header cell this plain may be quoted in an error; others could be a line of a secrets
# file given by mistake, so errors give their position instead.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9 _.-]{1,40}")

# csv's limit on one cell is process-wide, with no per-reader setting. A cell can never be
# larger than the manifest, so at the byte cap no cell turns into a whole-manifest error:
# a huge prompt makes only its row invalid. Raising it only makes other readers accept more.
csv.field_size_limit(max(csv.field_size_limit(), MAX_MANIFEST_BYTES))

# In DESIGN's order, which is also the order row errors are looked for in.
KNOWN_COLUMNS = (
    "prompt",
    "id",
    "negative_prompt",
    "seed",
    "num_frames",
    "height",
    "width",
    "num_inference_steps",
    "guidance_scale",
    "fps",
)


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
class ManifestRules:
    """What a model family accepts in a manifest row, and the values its empty cells take.

    `frame_step` k means `num_frames` must be k·n + 1 (Wan and CogVideoX 4, LTX 8); 1 takes
    any count. `max_voxels` caps frames × height × width of one row; `max_voxels_shape`,
    when given, is the video (frames, height, width) it stands for, named in errors.
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
    max_voxels_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.max_voxels_shape is not None and math.prod(self.max_voxels_shape) != (
            self.max_voxels
        ):
            raise ValueError(
                f"`max_voxels_shape` must multiply to `max_voxels` ({self.max_voxels:,}), "
                f"got {self.max_voxels_shape}."
            )


MODELSCOPE_RULES = ManifestRules(max_voxels_shape=(64, 512, 512))


@dataclass(frozen=True)
class NumberColumn:
    """A numeric column: its default, its bounds, and optional extra rules.

    `family` names the model family whose rule this is; its errors then say so and give
    the valid values nearest to a wrong one. ModelScope's rules are the manifest's
    documented ones: their errors name no family.
    """

    name: str
    kind: type[int] | type[float]
    default: int | float
    low: int | float
    high: int | float
    multiple_of: int = 1
    frame_step: int = 1  # k > 1: the value must be k·n + 1
    family: str = ""

    def rule(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.multiple_of > 1:
            noun = f"a multiple of {self.multiple_of}"
        if self.frame_step > 1:
            noun = f"{self.frame_step}k+1"
        return f"{noun} in {self.low}…{self.high}"

    def parse(self, text: str) -> int | float:
        """The cell's value, its default when empty; `RowError` when it breaks the rule."""
        if not text:
            return self.default
        value = _parse_number(text, self.kind)
        if value is None or not self.low <= value <= self.high or not self._on_grid(value):
            raise RowError(self._error(text, value))
        return value

    def _on_grid(self, value: int | float) -> bool:
        if self.multiple_of > 1 and value % self.multiple_of:
            return False
        return self.frame_step == 1 or (value - 1) % self.frame_step == 0

    def _error(self, text: str, value: int | float | None) -> str:
        if not self.family:
            return f"`{self.name}` must be {self.rule()}, got {_show(text)}."
        rule = f"`{self.name}` must be {self.rule()} for {self.family}"
        if value is None:
            return f"{rule}, got {_show(text)}."
        if self.frame_step > 1:
            return f"{rule} ({self._nearest_steps(int(value))}), got {int(value)}."
        return f"{rule}, got {int(value)} (nearest: {self._nearest_multiples(int(value))})."

    def _nearest_steps(self, value: int) -> str:
        """The k·n + 1 values around the one nearest `value`: "…, 77, 81, 85, …"."""
        k, low, high = self.frame_step, int(self.low), int(self.high)
        first, last = low + (1 - low) % k, high - (high - 1) % k
        centre = min(max(round((value - 1) / k) * k + 1, first), last)
        shown = [v for v in (centre - k, centre, centre + k) if first <= v <= last]
        text = ", ".join(map(str, shown))
        if shown[0] > first:
            text = f"…, {text}"
        return f"{text}, …" if shown[-1] < last else text

    def _nearest_multiples(self, value: int) -> str:
        """The allowed multiples just below and above `value`: "96 or 112"."""
        m, low, high = self.multiple_of, int(self.low), int(self.high)
        first, last = -(-low // m) * m, high // m * m
        below = min(max(value // m * m, first), last)
        above = min(max(-(-value // m) * m, first), last)
        return str(below) if below == above else f"{below} or {above}"


def number_columns(rules: ManifestRules) -> tuple[NumberColumn, ...]:
    """The numeric columns, in DESIGN's order, with `rules`' defaults and bounds."""
    family = "" if rules.family == MODELSCOPE_RULES.family else rules.family

    def size(name: str, default: int) -> NumberColumn:
        low, high, multiple = rules.min_size, rules.max_size, rules.size_multiple
        return NumberColumn(name, int, default, low, high, multiple_of=multiple, family=family)

    return (
        NumberColumn("seed", int, -1, 0, MAX_SEED),  # default -1: derived from the id
        NumberColumn(
            "num_frames",
            int,
            rules.num_frames,
            1,
            rules.max_frames,
            frame_step=rules.frame_step,
            family=family,
        ),
        size("height", rules.height),
        size("width", rules.width),
        NumberColumn("num_inference_steps", int, rules.num_inference_steps, 1, 150),
        NumberColumn("guidance_scale", float, rules.guidance_scale, 0, 30),
        NumberColumn("fps", int, rules.fps, 1, 60),
    )


def read_manifest(
    uri: str, limit: int | None = None, rules: ManifestRules = MODELSCOPE_RULES
) -> Manifest:
    """Read a manifest from a local path (or any storage location) and validate it against
    a model family's `rules`. It is read as a stream, of at most `MAX_MANIFEST_BYTES`."""
    storage, key = open_location(uri)
    with storage.open_read(key, max_bytes=MAX_MANIFEST_BYTES) as stream:
        return _parse(stream, uri, limit, rules)


def read_header(uri: str) -> list[str]:
    """A manifest's column names, after every check `read_manifest` makes of its header,
    reading no further: a bad manifest is refused before a run starts."""
    storage, key = open_location(uri)
    with storage.open_read(key, max_bytes=MAX_MANIFEST_BYTES) as stream:
        columns, _ = _open(stream, uri)
    return columns


def parse_manifest(
    data: bytes, source: str, limit: int | None = None, rules: ManifestRules = MODELSCOPE_RULES
) -> Manifest:
    """Validate a manifest held in memory, as `read_manifest` does; `source` names it."""
    return _parse(io.BytesIO(data), source, limit, rules)


def derived_seed(row_id: str) -> int:
    """A stable seed for rows that give none: the same id always renders the same video."""
    digest = hashlib.sha256(row_id.encode()).digest()[:8]
    return int.from_bytes(digest, "big") & MAX_DERIVED_SEED


def _parse(stream: BinaryIO, source: str, limit: int | None, rules: ManifestRules) -> Manifest:
    """Validate every row (the first `limit` ones when given); `source` names it in errors.

    Only a manifest unusable as a whole raises `ManifestError`; a bad row becomes an
    `InvalidRow` whose error is one sentence about its first problem, in column order.
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
        try:
            _check_width(record, columns)
            _check_text(cells)
            rows.append(_parse_row(line, row_id, cells, first_line, rules, numbers))
        except RowError as exc:
            shown = {name: _printable(cell) for name, cell in cells.items()}
            invalid.append(InvalidRow(line, _printable(row_id), str(exc), shown))
    if line == 0:
        raise ManifestError(f"{source} has a header but no data rows.")
    return Manifest(rows, invalid, extra_columns)


def _open(stream: BinaryIO, source: str) -> tuple[list[str], Iterator[list[str]]]:
    """The header's checked column names, and the non-blank records after it."""
    lines = _Lines(stream, source)
    records = (record for record in _records(lines, source) if _filled(record))
    header = next(records, None)
    if header is None:
        raise ManifestError(f"{source} is empty: it needs a header row with a `prompt` column.")
    _check_header_text(header, lines.stop_keeping(), lines.bom, source)
    return _columns(header, source), records


class _CappedStream(io.RawIOBase):
    """The bytes of `stream`, refused once more than `MAX_MANIFEST_BYTES` have come."""

    def __init__(self, stream: BinaryIO, source: str) -> None:
        super().__init__()
        self._stream = stream
        self._source = source
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._stream.read(len(view))
        self._count += len(data)
        if self._count > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"{self._source} holds more than {MAX_MANIFEST_BYTES:,} bytes, the most a "
                "manifest may: split it into smaller runs."
            )
        view[: len(data)] = data
        return len(data)


class _Lines:
    """A manifest's lines for csv, decoded as the bytes are read, its BOM dropped. Until
    `stop_keeping`, the lines read are also kept, for errors about the header."""

    def __init__(self, stream: BinaryIO, source: str) -> None:
        # Bytes that are not UTF-8 become lone surrogates, so that only the rows holding
        # them are refused (`_check_text`), or the whole file when its header holds them.
        self._text = io.TextIOWrapper(
            io.BufferedReader(_CappedStream(stream, source), 1 << 16),
            encoding="utf-8",
            errors="surrogateescape",
            newline="",
        )
        self._kept: list[str] | None = []
        self.bom = 0  # bytes of BOM the first line began with

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._text)
        if self._kept is None:
            return line
        if not self._kept and line.startswith("\ufeff"):
            line, self.bom = line[1:], len(codecs.BOM_UTF8)
        self._kept.append(line)
        return line

    def stop_keeping(self) -> str:
        """The text read so far; from now on lines are not kept."""
        text = "".join(self._kept or ())
        self._kept = None
        return text


def _check_header_text(header: list[str], text: str, bom: int, source: str) -> None:
    """A header that is not UTF-8 text, or holds NUL, means the file is not a UTF-8 CSV.
    `text` is the decoded file up to the header's end, after a `bom` bytes long BOM."""
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


def _records(lines: Iterator[str], source: str) -> Iterator[list[str]]:
    reader = csv.reader(lines, strict=True)
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
    """The header's names, trimmed. Its errors quote a header cell only when the cell names
    the problem: a file given by mistake (a secrets file) must not be echoed."""
    if len(header) > MAX_COLUMNS:
        raise ManifestError(
            f"{source} has {len(header):,} columns in its header, "
            f"more than the {MAX_COLUMNS:,} a manifest may have."
        )
    columns = [name.strip() for name in header]
    lowered = [name.lower() for name in columns]
    lookalikes = list(_lookalikes(columns, set(lowered)))
    if "prompt" not in lowered:
        typo = next((name for name, known in lookalikes if known == "prompt"), None)
        if typo is not None:
            raise ManifestError(
                f"{source} has no `prompt` column: did you mean its column {_quote(typo)}? "
                "Rename it `prompt`."
            )
        count = f"{len(columns):,} column" + ("s" if len(columns) > 1 else "")
        raise ManifestError(f"{source} has no `prompt` column (its header has {count}).")
    if "" in columns:
        raise ManifestError(
            f"{source} has a column with no name (column {columns.index('') + 1} of its header): "
            "name it or delete it."
        )
    first_of: dict[str, int] = {}
    for number, name in enumerate(lowered, 1):
        first = first_of.setdefault(name, number)
        if first == number:
            continue
        if name in KNOWN_COLUMNS or _PLAIN_NAME.fullmatch(name):
            raise ManifestError(f"{source} names the column {_show(name)} twice in its header.")
        raise ManifestError(
            f"{source} gives columns {first} and {number} of its header the same name."
        )
    if lookalikes:
        name, known = lookalikes[0]
        raise ManifestError(
            f"{source} has a column {_quote(name)} that looks like `{known}`: rename it "
            f"`{known}`, or give it a name further from `{known}` to keep it as an extra column."
        )
    return columns


def _lookalikes(columns: list[str], present: set[str]) -> Iterator[tuple[str, str]]:
    """Each unknown column that looks like a known one, with that known name.

    Spelled the same up to case, '-', '_' and spaces, it looks like any known column;
    within a few edits (1 for names of up to 4 letters, else 2), only like one the header
    lacks, so that `seed` next to a deliberate `seeds` column stays allowed.
    """
    for name in columns:
        if name.lower() in KNOWN_COLUMNS:
            continue
        folded = name.lower().replace("-", "_").replace(" ", "_")
        for known in KNOWN_COLUMNS:
            edits = 1 if len(known) <= 4 else 2
            if folded == known or (known not in present and _within(folded, known, edits)):
                yield name, known
                break


def _within(a: str, b: str, edits: int) -> bool:
    """Whether `a` becomes `b` in at most `edits` insertions, deletions, substitutions or
    swaps of neighbours (Damerau-Levenshtein, optimal string alignment)."""
    if abs(len(a) - len(b)) > edits:
        return False  # the common case, decided without the table
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i, *[0] * len(b)]
        for j, other in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other))
            if i > 1 and j > 1 and char == b[j - 2] and a[i - 2] == other:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > edits:
            return False
        before, previous = previous, current
    return previous[-1] <= edits


def _quote(name: str) -> str:
    """A short header name as errors show it: in backticks when plain, else its repr."""
    return f"`{name}`" if _PLAIN_NAME.fullmatch(name) else _show(name)


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


def _parse_row(
    line: int,
    row_id: str,
    cells: dict[str, str],
    first_line: int,
    rules: ManifestRules,
    numbers: tuple[NumberColumn, ...],
) -> RenderRow:
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
    values = {c.name: c.parse(cells.get(c.name, "").strip()) for c in numbers}
    num_frames, height, width = (int(values[name]) for name in ("num_frames", "height", "width"))
    _check_voxels(num_frames, height, width, rules)
    seed = int(values["seed"])
    return RenderRow(
        line=line,
        id=row_id,
        prompt=prompt,
        negative_prompt=negative_prompt or rules.negative_prompt,
        seed=seed if seed >= 0 else derived_seed(row_id),
        num_frames=num_frames,
        height=height,
        width=width,
        num_inference_steps=int(values["num_inference_steps"]),
        guidance_scale=float(values["guidance_scale"]),
        fps=int(values["fps"]),
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


def _check_voxels(num_frames: int, height: int, width: int, rules: ManifestRules) -> None:
    """A single row past `rules.max_voxels` could exhaust a GPU."""
    voxels = num_frames * height * width
    if voxels <= rules.max_voxels:
        return
    family = "" if rules.family == MODELSCOPE_RULES.family else f" for {rules.family}"
    shape = ""
    if rules.max_voxels_shape is not None:
        frames, shape_height, shape_width = rules.max_voxels_shape
        shape = f" ({frames} frames of {shape_height}×{shape_width})"
    raise RowError(
        f"`num_frames` × `height` × `width` must be at most {rules.max_voxels:,}{family}{shape}, "
        f"got {num_frames}×{height}×{width} = {voxels:,}."
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
