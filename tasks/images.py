"""Start images: where a row's image may come from, the checks its bytes must pass, and
how it becomes the 8-bit RGB picture of the row's size that a pipeline takes."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from storage import URI_LOOKALIKE, StorageError, open_location
from tasks.celltext import show
from tasks.errors import RenderError, RowError

MAX_IMAGE_BYTES = 50 * 1024 * 1024
# Read from the header before any pixel is decoded: a few KB of PNG can claim gigapixels.
MAX_IMAGE_PIXELS = 50_000_000
FORMATS = ("PNG", "JPEG", "WEBP")
FITS = ("cover", "contain")
THUMBNAIL_SIZE = 160  # the gallery's start images at most this wide
# Decoded pictures a process keeps for renders: a 12-megapixel photo is 36 MB.
PICTURE_CACHE_BYTES = 256 * 1024 * 1024
# What a broken file raises while Pillow decodes it.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


@dataclass(frozen=True, slots=True)
class StartImage:
    """A checked image: where it is read from, and the sha256 of its bytes (the key's part)."""

    uri: str
    sha256: str


@dataclass(frozen=True)
class ImageSources:
    """Where a manifest's images may come from: paths relative to the manifest's folder
    (an S3 manifest's prefix), `s3://bucket/key`, and local files inside the manifest's
    folder or `root`, after following links. An S3 manifest never reaches local files."""

    base: str  # the manifest's folder: a local path, or `s3://bucket/prefix/`
    root: Path | None = None
    # Rows often share an image (one product shot, many prompts): it is read once.
    _checked: dict[str, StartImage] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_manifest(cls, manifest_uri: str, root: str | None = None) -> ImageSources:
        if manifest_uri.startswith("s3://"):
            return cls(manifest_uri.rpartition("/")[0] + "/")
        folder = Path(manifest_uri.removeprefix("file://")).parent
        return cls(os.path.realpath(folder), Path(os.path.realpath(root)) if root else None)

    def check(self, column: str, cell: str) -> StartImage:
        """The image a cell names, read and checked; `RowError` with one sentence if not."""
        uri = self._resolve(column, cell)
        if uri not in self._checked:
            data = self._read(column, cell, uri)
            picture = check_image_bytes(column, cell, data)
            self._checked[uri] = StartImage(uri, hashlib.sha256(data).hexdigest())
            PICTURES.put(self._checked[uri].sha256, picture)
        return self._checked[uri]

    def _resolve(self, column: str, cell: str) -> str:
        if cell.startswith("s3://"):
            return cell
        if URI_LOOKALIKE.match(cell):
            raise RowError(
                f"`{column}` must be a path relative to the manifest's folder or "
                f"s3://bucket/key, got {show(cell)}."
            )
        if self.base.startswith("s3://"):
            path = PurePosixPath(cell)
            if path.is_absolute() or ".." in path.parts:
                raise RowError(
                    f"`{column}` of a manifest in S3 must be a key relative to its prefix "
                    f"or s3://bucket/key, never a local file or '..', got {show(cell)}."
                )
            return self.base + str(path)
        resolved = Path(os.path.realpath(Path(self.base, cell)))
        allowed = [Path(self.base), *([self.root] if self.root else [])]
        if not any(resolved.is_relative_to(folder) for folder in allowed):
            where = "the manifest's folder" + (" or the image root" if self.root else "")
            hint = "" if self.root else " (name a folder images may come from with --image-root)"
            raise RowError(
                f"`{column}` must stay inside {where}, after following links, "
                f"got {show(cell)}{hint}."
            )
        return str(resolved)

    def _read(self, column: str, cell: str, uri: str) -> bytes:
        if not uri.startswith("s3://"):
            try:
                mode = os.stat(uri).st_mode
            except OSError:
                raise RowError(f"`{column}` {show(cell)} was not found.") from None
            if not stat.S_ISREG(mode):
                raise RowError(f"`{column}` {show(cell)} is not a regular file.")
        try:
            return read_image_bytes(uri)
        except StorageError as exc:
            raise RowError(f"`{column}` {show(cell)} could not be read: {exc}.") from exc


def read_image_bytes(uri: str) -> bytes:
    """An image's bytes, refused past `MAX_IMAGE_BYTES` (as its size says, or as read)."""
    storage, key = open_location(uri)
    with storage.open_read(key, max_bytes=MAX_IMAGE_BYTES) as stream:
        data = stream.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise StorageError(f"{uri} holds more than the {MAX_IMAGE_BYTES:,} bytes allowed")
    return data


def check_image_bytes(column: str, cell: str, data: bytes) -> Image.Image:
    """The decoded picture, its EXIF orientation applied, in 8-bit RGB (see `to_rgb`);
    `RowError` for anything but one still PNG, JPEG or WebP within the caps. Never quotes
    the bytes: a file named .png may be anything."""
    named = f"`{column}` {show(cell)}"
    if len(data) > MAX_IMAGE_BYTES:
        raise RowError(f"{named} holds {len(data):,} bytes, more than {MAX_IMAGE_BYTES:,}.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise RowError(f"{named} is not an image that can be read.") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise RowError(
                f"{named} claims more than {MAX_IMAGE_PIXELS:,} pixels in its header."
            ) from None
        except _DECODE_ERRORS:
            raise RowError(f"{named} is truncated or corrupt.") from None
    with image:
        if image.format not in FORMATS:
            raise RowError(f"{named} is a {image.format} image: only PNG, JPEG and WebP are taken.")
        if getattr(image, "n_frames", 1) > 1:
            raise RowError(f"{named} is animated: only still images are taken.")
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise RowError(
                f"{named} is {width}×{height} = {width * height:,} pixels, "
                f"more than {MAX_IMAGE_PIXELS:,}."
            )
        try:
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
        except _DECODE_ERRORS:
            raise RowError(f"{named} is truncated or corrupt.") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """One rule for every mode: transparency is composited on black, 16-bit samples keep
    their top 8 bits, CMYK and palettes become 8-bit RGB (embedded ICC profiles are ignored)."""
    if image.mode.startswith("I"):
        grey = (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def fit_image(image: Image.Image, width: int, height: int, fit: str) -> Image.Image:
    """The picture at the row's size: `cover` scales and centre-crops, `contain` scales
    and letterboxes on black."""
    if fit == "contain":
        return ImageOps.pad(image, (width, height), Image.Resampling.LANCZOS, color=(0, 0, 0))
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


class PictureCache:
    """Pictures by key, least recently used out first past a budget of bytes; shared by the
    threads that check manifests and prepare renders."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._pictures: OrderedDict[Hashable, Image.Image] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Image.Image | None:
        with self._lock:
            picture = self._pictures.get(key)
            if picture is not None:
                self._pictures.move_to_end(key)
            return picture

    def put(self, key: Hashable, picture: Image.Image) -> None:
        size = picture.width * picture.height * len(picture.getbands())
        with self._lock:
            if key in self._pictures or size > self.budget:
                return
            self._pictures[key] = picture
            self._bytes += size
            while self._bytes > self.budget:
                _, old = self._pictures.popitem(last=False)
                self._bytes -= old.width * old.height * len(old.getbands())

    def clear(self) -> None:
        with self._lock:
            self._pictures.clear()
            self._bytes = 0


# A checked image's picture by the sha256 of its bytes, and fitted by (sha256, width,
# height, fit): rows sharing an image read and decode it once, when the manifest is checked.
PICTURES = PictureCache(PICTURE_CACHE_BYTES)


def load_image(image: StartImage, width: int, height: int, fit: str) -> Image.Image:
    """A checked image at a row's size, as its bytes were checked: from the process's cache,
    else read again; `RenderError` if it can no longer be read or its bytes changed."""
    key = (image.sha256, width, height, fit)
    fitted = PICTURES.get(key)
    if fitted is None:
        fitted = fit_image(_picture(image), width, height, fit)
        PICTURES.put(key, fitted)
    return fitted


def _picture(image: StartImage) -> Image.Image:
    picture = PICTURES.get(image.sha256)
    if picture is not None:
        return picture
    try:
        data = read_image_bytes(image.uri)
    except StorageError as exc:
        raise RenderError(f"the start image could not be read again: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise RenderError(f"the start image {image.uri} changed since the manifest was checked")
    picture = check_image_bytes("image", image.uri, data)
    PICTURES.put(image.sha256, picture)
    return picture


def thumbnail(uri: str, sha256: str) -> bytes | None:
    """A start image as a small JPEG, for the gallery to show from DEST, from the picture
    its render took if the process still keeps it; None when it cannot be read or is no
    longer the image that was rendered."""
    try:
        picture = _picture(StartImage(uri, sha256)).copy()  # thumbnail() shrinks in place
    except (RenderError, RowError):
        return None
    picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=80)
    return out.getvalue()


def check_fit(cell: str) -> str:
    """`image_fit`: `cover` (the default) or `contain`."""
    fit = cell.strip().lower() or FITS[0]
    if fit not in FITS:
        raise RowError(f"`image_fit` must be cover or contain, got {show(cell)}.")
    return fit
