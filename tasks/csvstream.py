"""A manifest read as a capped stream of CSV records, decoded as its bytes arrive."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

from storage import open_location
from tasks.celltext import NOT_TEXT
from tasks.errors import ManifestError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# Far above 100,000 rows of 2,000-character prompts; past it a path like /dev/zero or a
# wrong object would fill the memory before any row error could be reported.
MAX_MANIFEST_BYTES = 256 * 2**20

# csv's limit on one cell is process-wide, with no per-reader setting. A cell can never be
# larger than the manifest, so at the byte cap no cell turns into a whole-manifest error:
# a huge prompt makes only its row invalid. Raising it only makes other readers accept more.
csv.field_size_limit(max(csv.field_size_limit(), MAX_MANIFEST_BYTES))


@contextmanager
def open_manifest(uri: str) -> Iterator[BinaryIO]:
    """The bytes at a local path or storage location, refused before any is read when its
    size is known to be past `MAX_MANIFEST_BYTES`."""
    storage, key = open_location(uri)
    with storage.open_read(key, max_bytes=MAX_MANIFEST_BYTES) as stream:
        yield stream


def read_records(stream: BinaryIO, source: str) -> tuple[list[str], Iterator[list[str]]]:
    """The header's cells, checked to be text, and the non-blank records after it, read
    as they are needed; `source` names the manifest in errors."""
    lines = _Lines(stream, source)
    records = (record for record in _records(lines, source) if _filled(record))
    header = next(records, None)
    if header is None:
        raise ManifestError(f"{source} is empty: it needs a header row with a `prompt` column.")
    _check_header_text(header, lines.stop_keeping(), lines.bom, source)
    return header, records


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
        # them are refused (a row's cells are checked against `NOT_TEXT`), or the whole
        # file when its header holds them.
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
    found = NOT_TEXT.search("".join(header))
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
