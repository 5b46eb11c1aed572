"""What a start image costs: reading and checking it (a manifest's check), and fitting it
to a row's size (done before its batch takes the device), on photo-like synthetic files.

python -m bench.image_cost [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.quality_cost import fastest_ms
from tasks.images import PICTURES, ImageSources, StartImage, load_image

# (width, height): a phone photo, a 4K frame, a product shot; each fitted to Wan's 832×480.
SIZES = ((4032, 3024), (3840, 2160), (1024, 1024))
ROW_SIZE = (832, 480)


def photo_like(width: int, height: int) -> Image.Image:
    """Smooth gradients under noise: compresses about as a photo does."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    noise = np.random.default_rng(0).normal(0, 12, base.shape)
    return Image.fromarray((base + noise).clip(0, 255).astype(np.uint8), "RGB")


def costs(folder: Path, name: str) -> list[float]:
    """Milliseconds to read and check the file as a manifest's check does, then to fit the
    picture it keeps to a row's size, then to find that fit kept."""
    manifest = str(folder / "m.csv")

    def check() -> StartImage:
        PICTURES.clear()
        return ImageSources.for_manifest(manifest).check("image", name)

    checked = fastest_ms(check)
    fitted = fastest_ms(lambda: load_image(check(), *ROW_SIZE, "cover")) - checked
    image = check()
    kept = fastest_ms(lambda: load_image(image, *ROW_SIZE, "cover"))
    return [checked, fitted, kept]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.image_cost", description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="t2v-image-cost-"))
    print("| image | bytes | read + check | fit to 832×480 | fit again (kept) |")
    print("|---|---|---|---|---|")
    for width, height in SIZES:
        picture = photo_like(width, height)
        for fmt, suffix, options in (("JPEG", "jpg", {"quality": 90}), ("PNG", "png", {})):
            name = f"{width}x{height}.{suffix}"
            picture.save(folder / name, fmt, **options)
            cells = " | ".join(f"{cost:.1f} ms" for cost in costs(folder, name))
            size = (folder / name).stat().st_size
            print(f"| {width}×{height} {fmt} | {size / 1e6:.1f} MB | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
