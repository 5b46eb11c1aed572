"""A batch's start images made ready before it takes the device: read (or found in the
process's cache), checked and fitted to each row's size, so that a render holding the
device never waits for a file."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.errors import RenderError
from tasks.images import load_image
from tasks.manifest import RenderRow


def read_start_images(rows: Sequence[RenderRow]) -> list[tuple[RenderRow, str]]:
    """Each row's start images at its size, cached for its render; the rows whose images
    can no longer be read as checked, with why."""
    failed = []
    for row in rows:
        try:
            for image in (row.image, row.last_image):
                if image is not None:
                    load_image(image, row.width, row.height, row.image_fit)
        except RenderError as exc:
            failed.append((row, str(exc)))
    return failed
