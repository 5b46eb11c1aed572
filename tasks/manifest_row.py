"""One manifest row: its cells checked against a family's rules into a `RenderRow`, or
the sentences an `InvalidRow` keeps."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tasks.celltext import NOT_TEXT, show, visible
from tasks.columns import KNOWN_COLUMNS
from tasks.errors import RowError
from tasks.images import ImageSources, StartImage, check_fit
from tasks.rules import ManifestRules, NumberColumn, check_voxels

MAX_TEXT = 2_000
IMAGE_COLUMNS = ("image", "last_image")
IMAGE_NOUNS = {"image": "a start image", "last_image": "a last frame"}
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


def derived_seed(row_id: str) -> int:
    """A stable seed for rows that give none: the same id always renders the same video."""
    digest = hashlib.sha256(row_id.encode()).digest()[:8]
    return int.from_bytes(digest, "big") & MAX_DERIVED_SEED


def row_cells(columns: list[str], record: list[str]) -> dict[str, str]:
    """Every column's raw cell ("" when the row is short): known columns under their
    lower-case name, unknown ones under their header."""
    padded = [*record, *[""] * (len(columns) - len(record))]
    return {
        name.lower() if name.lower() in KNOWN_COLUMNS else name: cell
        for name, cell in zip(columns, padded, strict=False)
    }


class RowErrors:
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


def check_text(name: str, cell: str) -> None:
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


def parse_row(
    line: int,
    row_id: str,
    cells: dict[str, str],
    first_line: int,
    rules: ManifestRules,
    numbers: tuple[NumberColumn, ...],
    errors: RowErrors,
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
    start = _images(cells, rules, images, errors)
    if start["last_image"] is not None and "num_frames" in values:
        errors.check("num_frames", _check_frames_between, int(values["num_frames"]), rules)
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


def _images(
    cells: dict[str, str], rules: ManifestRules, images: ImageSources, errors: RowErrors
) -> dict[str, StartImage | None]:
    """The checked image of each image column, None where its cell is empty or it is bad.
    Image columns the model cannot take, or leaves empty where it needs them, are one
    sentence naming the presets that render the row, and no file is read."""
    start: dict[str, StartImage | None] = dict.fromkeys(IMAGE_COLUMNS)
    cell = {column: cells.get(column, "").strip() for column in IMAGE_COLUMNS}
    filled = frozenset(column for column in IMAGE_COLUMNS if cell[column])
    if errors.check("image", _check_image_columns, filled, rules) is None:
        return start
    for column in sorted(filled, key=IMAGE_COLUMNS.index):
        start[column] = errors.check(column, images.check, column, cell[column])
    return start


def _check_image_columns(filled: frozenset[str], rules: ManifestRules) -> bool:
    """Whether the model takes the row's image columns as filled; `RowError` if not."""
    # Families import the manifest's rows; the presets are theirs.
    from tasks.presets import presets_rendering

    if "last_image" in filled and "image" not in filled:
        raise RowError("`last_image` is the video's last frame and needs a start image in `image`.")
    model = f"this {rules.family} model" if rules.family else "this model"
    refused = [column for column in IMAGE_COLUMNS if column in filled - set(rules.image_columns)]
    if refused:
        presets = ", ".join(presets_rendering(filled))
        raise RowError(
            f"{_named(refused)} {'needs' if len(refused) == 1 else 'need'} a model that takes "
            f"{_nouns(refused)}, and {model} does not "
            f"({f'presets that do: {presets}' if presets else 'no preset does'})."
        )
    missing = [column for column in rules.required_images if column not in filled]
    if missing:
        presets = ", ".join(presets_rendering(filled, rules.family))
        raise RowError(
            f"{_named(missing)} must name {_nouns(missing)}: {model} renders from "
            f"{_nouns(rules.required_images)} only (presets that render the row as it is: "
            f"{presets})."
        )
    return True


def _check_frames_between(frames: int, rules: ManifestRules) -> None:
    """A video from a first to a last frame has both: the fewest frames past one."""
    least = rules.frame_step + 1
    if frames < least:
        raise RowError(
            f"`num_frames` must be at least {least} for a row with a `last_image`, got {frames}."
        )


def _named(columns: Sequence[str]) -> str:
    return " and ".join(f"`{column}`" for column in columns)


def _nouns(columns: Sequence[str]) -> str:
    return " and ".join(IMAGE_NOUNS[column] for column in columns)


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
