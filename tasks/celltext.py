"""What a decoded manifest cell may hold, and how a raw cell is shown to people."""

from __future__ import annotations

import re
import unicodedata

# NUL, or a byte that is not UTF-8 (decoded with surrogateescape to U+DC80…U+DCFF).
NOT_TEXT = re.compile("[\x00\udc80-\udcff]")
# Characters that show nothing although they are neither spaces nor format characters:
# Hangul fillers, the blank Braille pattern, and the default-ignorable marks and variation
# selectors (Unicode's Default_Ignorable_Code_Point outside category Cf).
_BLANK = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef]"
)


def show(text: str) -> str:
    """A cell as it appears in an error: quoted, and cut short when long."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def printable(text: str) -> str:
    """A raw cell as the results manifest shows it: U+FFFD for each bad byte or NUL."""
    return NOT_TEXT.sub("\ufffd", text)


def visible(text: str) -> bool:
    """Whether `text` shows anything: not only spaces, zero-width and other format
    characters (U+200B, U+FEFF, ...), control characters or blank fillers."""
    return any(
        not (char.isspace() or unicodedata.category(char) in {"Cf", "Cc", "Zs", "Zl", "Zp"})
        and not _BLANK.match(char)
        for char in text
    )
