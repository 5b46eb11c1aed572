"""How Wan's image-to-video pipeline takes start images: one image (and last frame) per
call, so that a batch of rows goes through one call per picture its rows share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tasks.families.base import Decoded, Family
from tasks.images import StartImage, load_image
from tasks.manifest import RenderRow


class WanImageRows(Family):
    """`WanImageToVideoPipeline` conditions a whole call on one image: given several, it
    encodes each once per generator and the batch no longer lines up with its noise."""

    image_pipeline = "WanImageToVideoPipeline"

    def generate(
        self, pipe: Any, rows: Sequence[RenderRow], generators: list[torch.Generator]
    ) -> Decoded:
        if rows[0].image is None:
            return super().generate(pipe, rows, generators)
        groups: dict[tuple[StartImage | None, StartImage | None, str], list[int]] = {}
        for index, row in enumerate(rows):
            groups.setdefault((row.image, row.last_image, row.image_fit), []).append(index)
        parts = [
            super(WanImageRows, self).generate(
                pipe, [rows[i] for i in group], [generators[i] for i in group]
            )
            for group in groups.values()
        ]
        order = torch.tensor([i for group in groups.values() for i in group]).argsort()
        pixels = torch.cat([part.pixels for part in parts])
        nonfinite = torch.cat([part.nonfinite for part in parts])
        return Decoded(pixels[order.to(pixels.device)], nonfinite[order.to(nonfinite.device)])

    def image_arguments(self, rows: Sequence[RenderRow]) -> dict[str, Any]:
        """The start image and last frame the rows share, at their size and fit."""
        first = rows[0]
        pictures = {"image": first.image, "last_image": first.last_image}
        return {
            name: load_image(image, first.width, first.height, first.image_fit)
            for name, image in pictures.items()
            if image is not None
        }
