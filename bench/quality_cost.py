"""What the quality checks and the scorers cost per video, on synthetic frames.

python -m bench.quality_cost [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from tasks.families.base import nonfinite
from tasks.families.modelscope import CLIP_MAX_TOKENS
from tasks.families.parts import byte_tokenizer
from tasks.quality import inspect_video
from tasks.scoring import Scorer, get_scorer

SHAPES = ((8, 64, 64), (16, 256, 256), (81, 480, 832))  # tiny-random, the bench shape, Wan


def fastest_ms(fn: Callable[[], object], tries: int = 5) -> float:
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) * 1e3


def video_costs(video: np.ndarray, floats: torch.Tensor, tiny: Scorer, full: Scorer) -> list[float]:
    """Milliseconds of the checks, the non-finite sum and each scorer on one video."""
    prompt = "a red kite over the sea"
    return [
        fastest_ms(lambda: inspect_video(video)),
        fastest_ms(lambda: nonfinite(floats).tolist()),
        fastest_ms(lambda: tiny.score(prompt, video)),
        fastest_ms(lambda: full.score(prompt, video), tries=3),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality_cost", description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import CLIPConfig, CLIPModel

    device = torch.device(args.device)
    tiny = get_scorer("tiny-clip", device)
    # CLIPConfig's defaults are ViT-B/32's shape: the cost of `--score clip`, no download.
    full = Scorer(CLIPModel(CLIPConfig()), byte_tokenizer(CLIP_MAX_TOKENS), device)
    print("| frames × h × w | checks | non-finite sum | tiny-clip | ViT-B/32 shape |")
    print("|---|---|---|---|---|")
    for frames, height, width in SHAPES:
        video = np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), np.uint8)
        floats = torch.rand(1, frames, 3, height, width, device=device)
        costs = video_costs(video, floats, tiny, full)
        cells = " | ".join(f"{cost:.1f} ms" for cost in costs)
        print(f"| {frames}×{height}×{width} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
