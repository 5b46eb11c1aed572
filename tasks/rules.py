"""What a model family accepts in a manifest row, and how a cell becomes a number."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tasks.celltext import show
from tasks.errors import RowError

MAX_SEED = 2**63 - 1
MAX_CANDIDATES = 8  # seeds one row may render to keep the best (`candidates`)
# Plain decimal notation only: int() and float() would also take "1_0", "١٢" and "nan".
INTEGER = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_NUMBER_TEXT = 40  # longer digit strings are typos, and int() refuses past 4,300 digits


@dataclass(frozen=True)
class ManifestRules:
    """What a model family accepts in a manifest row, and the values its empty cells take.

    The defaults are the manifest's documented ones (README: The manifest). `family` names the
    family whose rules these are in errors, which then give the valid values nearest to a
    wrong one; the documented rules name none.

    `frame_step` k means `num_frames` must be k·n + 1 (Wan and CogVideoX 4, LTX 8); 1 takes
    any count. `max_voxels` caps frames × height × width of one row; `max_voxels_shape`,
    when given, is the video (frames, height, width) it stands for, named in errors.
    """

    family: str = ""
    num_frames: int = 16
    height: int = 256
    width: int = 256
    num_inference_steps: int = 25
    min_inference_steps: int = 1
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
    image_columns: tuple[str, ...] = ()  # the start-image columns a row may fill
    required_images: tuple[str, ...] = ()  # those a row must fill (image-to-video-only models)
    # (height, width) of a model that renders one size only (learned positional embeddings)
    fixed_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.max_voxels_shape is not None and math.prod(self.max_voxels_shape) != (
            self.max_voxels
        ):
            raise ValueError(
                f"`max_voxels_shape` must multiply to `max_voxels` ({self.max_voxels:,}), "
                f"got {self.max_voxels_shape}."
            )


DOCUMENTED_RULES = ManifestRules(max_voxels_shape=(64, 512, 512))


@dataclass(frozen=True)
class NumberColumn:
    """A numeric column: its default, its bounds, and optional extra rules.

    `family` names the model family whose rule this is; its errors then say so and give
    the valid values nearest to a wrong one.
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
        if self.low == self.high:
            return str(self.low)
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
            return f"`{self.name}` must be {self.rule()}, got {show(text)}."
        rule = f"`{self.name}` must be {self.rule()} for {self.family}"
        if value is None:
            return f"{rule}, got {show(text)}."
        if self.low == self.high:
            return f"{rule}, got {int(value)}."
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
    """The numeric columns, in the documented order, with `rules`' defaults and bounds."""
    family = rules.family

    def size(name: str, default: int, fixed: int | None) -> NumberColumn:
        low, high = (fixed, fixed) if fixed else (rules.min_size, rules.max_size)
        multiple = rules.size_multiple
        return NumberColumn(name, int, default, low, high, multiple_of=multiple, family=family)

    height, width = rules.fixed_size or (None, None)
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
        size("height", rules.height, height),
        size("width", rules.width, width),
        NumberColumn(
            "num_inference_steps",
            int,
            rules.num_inference_steps,
            rules.min_inference_steps,
            150,
            family=family,
        ),
        NumberColumn("guidance_scale", float, rules.guidance_scale, 0, 30),
        NumberColumn("fps", int, rules.fps, 1, 60),
        NumberColumn("candidates", int, 1, 1, MAX_CANDIDATES),
    )


def check_voxels(num_frames: int, height: int, width: int, rules: ManifestRules) -> None:
    """A single row past `rules.max_voxels` could exhaust a GPU."""
    voxels = num_frames * height * width
    if voxels <= rules.max_voxels:
        return
    family = f" for {rules.family}" if rules.family else ""
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
