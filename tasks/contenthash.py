"""A model folder's identity from its content: the sha256 of every file that loading reads.

Hashing a 5 GB folder takes tens of seconds, so each file's digest is remembered in a small
JSON file under the user's cache folder: by path, with what changes when the file is
rewritten (size, mtime_ns, inode). A rewritten file gets a new mtime (or inode, when saved
through a temporary file and a rename) and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

CHUNK = 1 << 20
DIGESTS_FILE = "file-digests.json"
# Never read by `from_pretrained`: VCS and download bookkeeping, editor and OS litter.
IGNORED_SUFFIXES = (".md", ".lock")


def cache_dir() -> Path:
    """t2v's cache folder, beside huggingface's: $XDG_CACHE_HOME/t2v or ~/.cache/t2v."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "t2v"


def folder_digest(folder: Path) -> str:
    """The sha256 over (relative path, file sha256) of every relevant file under `folder`:
    the same files in another folder give the same digest, another weight a new one."""
    known = _read_digests()
    combined = hashlib.sha256()
    changed = False
    for path in relevant_files(folder):
        stat = path.stat()
        version = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = known.get(str(path.resolve()))
        if entry is not None and entry[:3] == version:
            digest = str(entry[3])
        else:
            digest = file_digest(path)
            known[str(path.resolve())] = [*version, digest]
            changed = True
        combined.update(f"{path.relative_to(folder).as_posix()}\0{digest}\n".encode())
    if changed:
        _write_digests(known)
    return combined.hexdigest()


def relevant_files(folder: Path) -> list[Path]:
    """Files under `folder` in a stable order, without hidden ones and documentation."""
    files = []
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") for part in parts) or path.name.endswith(IGNORED_SUFFIXES):
            continue
        if path.is_file():
            files.append(path)
    return sorted(files, key=lambda path: path.relative_to(folder).as_posix())


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks so that a 5 GB file never sits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# By resolved path: [size, mtime_ns, inode, sha256].
Digests = dict[str, list[int | str]]


def _read_digests() -> Digests:
    try:
        known = json.loads((cache_dir() / DIGESTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or torn: the digests are computed again
        return {}
    return known if isinstance(known, dict) else {}


def _write_digests(known: Digests) -> None:
    """Replace the digests file atomically; a cache that cannot be written only costs time."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=folder, prefix=f".{DIGESTS_FILE}.", delete=False, encoding="utf-8"
        ) as file:
            json.dump(known, file)
        os.replace(file.name, folder / DIGESTS_FILE)
    except OSError:
        return
