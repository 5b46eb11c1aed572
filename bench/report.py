"""Markdown tables and the named sections of bench/RESULTS.md that each benchmark owns."""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
MISSING = "–"  # a cell this run could not measure (no GPU memory on a CPU, no known peak)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; numbers right-aligned, text left."""
    align = ["---:" if _numeric(cell) else "---" for cell in rows[0]] if rows else []
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def number(value: float | None, digits: int = 2) -> str:
    """A table cell: the value rounded, or the missing mark."""
    return MISSING if value is None else f"{value:.{digits}f}"


def write_section(path: Path, name: str, text: str) -> None:
    """Replace section `name` of the markdown file at `path`, or append it; others stay."""
    start, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    new = (
        pattern.sub(lambda _: block, old) if pattern.search(old) else old + "\n" * bool(old) + block
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def publish_section(name: str, text: str, print_only: bool) -> None:
    """Print a benchmark's section, or replace its section `name` of bench/RESULTS.md."""
    if print_only:
        print(text)
    else:
        write_section(RESULTS_MD, name, text)
        print(f"wrote the {name} section of {RESULTS_MD}")


def environment(device_name: str) -> str:
    """One line naming the device, the versions that matter and the date."""
    versions = [f"Python {platform.python_version()}"]
    for package in ("torch", "diffusers", "transformers", "imageio-ffmpeg"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return f"Device: {device_name}; {', '.join(versions)}; {today}."


def _numeric(cell: str) -> bool:
    return cell == MISSING or re.fullmatch(r"[-+]?[0-9.,]+[%×]?", cell) is not None
