"""The floor for `t2v render`: the same pipeline and encoder called in a plain loop.

python -m bench.bare_loop MANIFEST OUT_FOLDER [--batch-size N] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from tasks.batching import plan_batches
from tasks.devices import get_pipeline
from tasks.encode import encode_mp4
from tasks.manifest import read_manifest
from tasks.presets import resolve_model
from tasks.render_call import RenderedVideo, render_batch


def render_manifest_bare(manifest: str, out: Path, batch_size: int, device: str) -> int:
    """Render and encode every valid row of `manifest` into `out`; return the videos written."""
    rows = read_manifest(manifest).rows
    pipe = get_pipeline(resolve_model("tiny-random"), torch.device(device))
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for batch in plan_batches(rows, batch_size):
        for video in render_batch(pipe, batch):
            if not isinstance(video, RenderedVideo):
                continue  # a render fault (black or NaN frames): nothing to encode
            encode_mp4(video.frames, video.row.fps, out / f"{video.row.id}.mp4")
            written += 1
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_loop", description=__doc__)
    parser.add_argument("manifest")
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    written = render_manifest_bare(args.manifest, args.out, args.batch_size, args.device)
    print(f"{written} videos in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
