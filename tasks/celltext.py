"""What a decoded manifest cell may hold, and how a raw cell is shown to people."""

from __future__ import annotations

import re

# NUL, or a byte that is not UTF-8 (decoded with surrogateescape to U+DC80…U+DCFF).
NOT_TEXT = re.compile("[\x00\udc80-\udcff]")


def show(text: str) -> str:
    """A cell as it appears in an error: quoted, and cut short when long."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def printable(text: str) -> str:
    """A raw cell as the results manifest shows it: U+FFFD for each bad byte or NUL."""
    return NOT_TEXT.sub("\ufffd", text)
