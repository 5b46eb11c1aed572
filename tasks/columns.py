"""A manifest header's column names: the known ones, and the checks a header must pass."""

from __future__ import annotations

import re
from collections.abc import Iterator

from tasks.celltext import show
from tasks.errors import ManifestError

MAX_COLUMNS = 10_000
SHOWN_EXTRAS = 10  # extra columns named in the notice before a run
# A header cell this plain may be quoted in an error; others could be a line of a secrets
# file given by mistake, so errors give their position instead.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9 _.-]{1,40}")

# In the documented order (README: The manifest), also the order row errors are found in.
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
    "image",
    "last_image",
    "image_fit",
    "candidates",
)
# Names people write for known columns (other tools' and libraries' names), after folding
# case, '-' and spaces to '_'. Read as extra columns they would silently change nothing
# (`steps` rendering every row at the default count), so they are refused with the real name.
ALIASES = {
    **dict.fromkeys(("text", "caption", "positive_prompt"), "prompt"),
    **dict.fromkeys(("negative", "neg_prompt"), "negative_prompt"),
    **dict.fromkeys(("random_seed", "rng_seed"), "seed"),
    **dict.fromkeys(("frames", "n_frames", "nframes", "frame_count", "video_length"), "num_frames"),
    **dict.fromkeys(("h", "video_height"), "height"),
    **dict.fromkeys(("w", "video_width"), "width"),
    **dict.fromkeys(
        ("steps", "n_steps", "num_steps", "inference_steps", "sampling_steps"),
        "num_inference_steps",
    ),
    **dict.fromkeys(("cfg", "cfg_scale", "guidance"), "guidance_scale"),
    **dict.fromkeys(("frame_rate", "framerate", "frames_per_second"), "fps"),
    **dict.fromkeys(("start_image", "first_image", "init_image", "input_image"), "image"),
    **dict.fromkeys(("end_image", "final_image"), "last_image"),
}


def column_names(header: list[str], source: str) -> list[str]:
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
            raise ManifestError(f"{source} names the column {show(name)} twice in its header.")
        raise ManifestError(
            f"{source} gives columns {first} and {number} of its header the same name."
        )
    if lookalikes:
        name, known = lookalikes[0]
        if _folded(name) in ALIASES:
            raise ManifestError(
                f"{source} has a column {_quote(name)}, which t2v does not read: rename it "
                f"`{known}` to set that, or give it another name to keep it as an extra column."
            )
        raise ManifestError(
            f"{source} has a column {_quote(name)} that looks like `{known}`: rename it "
            f"`{known}`, or give it a name further from `{known}` to keep it as an extra column."
        )
    return columns


def carried_notice(extra_columns: list[str]) -> str:
    """The line a run shows before rendering about the columns it does not read ("" for
    none), so that a column meant as a setting is noticed before the videos are."""
    if not extra_columns:
        return ""
    shown = ", ".join(_quote(name) for name in extra_columns[:SHOWN_EXTRAS])
    more = len(extra_columns) - SHOWN_EXTRAS
    if more > 0:
        shown += f" and {more:,} more"
    return f"t2v reads none of these columns and carries them to the results untouched: {shown}"


def _lookalikes(columns: list[str], present: set[str]) -> Iterator[tuple[str, str]]:
    """Each unknown column that looks like a known one, with that known name.

    Spelled the same up to case, '-', '_' and spaces, it looks like any known column;
    as one of its `ALIASES`, or within a few edits (1 for names of up to 5 letters, else 2:
    `stage` and `age` are words of their own, not misspellings of `image`),
    only like one the header lacks, so that `seed` next to a deliberate `seeds` column, or
    `prompt` next to a `caption`, stays allowed.
    """
    for name in columns:
        if name.lower() in KNOWN_COLUMNS:
            continue
        folded = _folded(name)
        alias = ALIASES.get(folded)
        if alias is not None and alias not in present:
            yield name, alias
            continue
        for known in KNOWN_COLUMNS:
            edits = 1 if len(known) <= 5 else 2
            if folded == known or (known not in present and _within(folded, known, edits)):
                yield name, known
                break


def _folded(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


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
    return f"`{name}`" if _PLAIN_NAME.fullmatch(name) else show(name)
