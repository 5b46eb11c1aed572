"""The GPU benchmark's settings: its command line, and the rows it renders."""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from bench.report import RESULTS_MD
from tasks.families import Family
from tasks.images import StartImage
from tasks.manifest import RenderRow
from tasks.presets import PRESETS, preset_rules
from tasks.rules import ManifestRules
from tasks.speed.levers import COMPILE_MODES, SPEEDS, Speed

# What `--model` takes: presets built in memory, full-size with random weights or tiny.
MODELS = tuple(name for name, preset in PRESETS.items() if preset.random or not preset.info.repo)


@dataclass(frozen=True)
class Settings:
    device: str
    model: str  # the preset that runs: `requested`, or its family's tiny preset in a dry run
    requested: str  # the preset asked for, which names the section of RESULTS.md
    height: int
    width: int
    frames: int
    steps: int
    batch_sizes: tuple[int, ...]
    videos: int  # per engine measurement, rounded up to whole batches
    baseline_videos: int
    compile_modes: tuple[str, ...]
    speeds: tuple[Speed, ...]  # measure these profiles instead of the engine against the card
    peak_tflops: float | None
    out: Path
    dry_run: bool

    @property
    def family(self) -> Family:
        return PRESETS[self.model].family

    @property
    def rules(self) -> ManifestRules:
        """The requested preset's rules: a distilled preset's guidance is its own."""
        return preset_rules(PRESETS[self.requested])


def bench_rows(settings: Settings, count: int) -> list[RenderRow]:
    """`count` rows of the settings' shape, with a start image where the model needs one."""
    rules = settings.rules
    required = preset_rules(PRESETS[settings.model]).required_images
    image = bench_image() if "image" in required else None
    last_image = bench_image() if "last_image" in required else None
    return [
        RenderRow(
            line=n + 1,
            id=f"bench-{n}",
            prompt=f"a fox running through fresh snow at dawn, shot number {n}",
            negative_prompt=rules.negative_prompt,
            seed=n,
            num_frames=settings.frames,
            height=settings.height,
            width=settings.width,
            num_inference_steps=settings.steps,
            guidance_scale=rules.guidance_scale,
            fps=rules.fps,
            image=image,
            last_image=last_image,
        )
        for n in range(count)
    ]


@cache
def bench_image() -> StartImage:
    """A start image for models that render from images only: a colour ramp, written once."""
    path = Path(tempfile.mkdtemp(prefix="t2v-bench-")) / "start.png"
    ramp = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))
    pixels = np.stack([ramp, ramp.T, np.full_like(ramp, 128)], axis=-1)
    Image.fromarray(pixels, "RGB").save(path)
    return StartImage(str(path), hashlib.sha256(path.read_bytes()).hexdigest())


def batched_rows(settings: Settings, batch_size: int) -> list[RenderRow]:
    """`settings.videos` rows rounded up to whole batches, so every call has a full batch."""
    return bench_rows(settings, -(-settings.videos // batch_size) * batch_size)


def tiny_preset(model: str) -> str:
    """The tiny preset of `model`'s family: what a dry run renders instead."""
    family = PRESETS[model].family
    return next(info.name for info in family.presets if info.repo is None)


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_throughput",
        description="GPU throughput of t2v-batch against the model card's way of running a "
        "model family, or of its speed profiles.",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="ms-1.7b-random", choices=MODELS)
    native = "default: the family's native value"
    parser.add_argument("--height", type=int, help=native)
    parser.add_argument("--width", type=int, help=native)
    parser.add_argument("--frames", type=int, help=native)
    parser.add_argument("--steps", type=int, help=native)
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="comma-separated")
    parser.add_argument(
        "--videos", type=int,
        help="per t2v-batch measurement (default 16), or per profile with --speed (default 1)",
    )  # fmt: skip
    parser.add_argument("--baseline-videos", type=int, default=4)
    parser.add_argument(
        "--compile", action="append", default=[], choices=COMPILE_MODES, metavar="MODE",
        help=f"also measure the fastest batch size compiled in MODE ({', '.join(COMPILE_MODES)})",
    )  # fmt: skip
    parser.add_argument(
        "--speed", nargs="+", default=[], choices=SPEEDS, metavar="SPEED",
        help=f"measure these profiles ({'|'.join(SPEEDS)}; exact always, first) instead of "
        "the engine against the model card",
    )  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, help="override the GPU's dense bf16 peak")
    parser.add_argument("--out", type=Path, default=RESULTS_MD, help="markdown file to update")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="CPU, the family's tiny preset, 64×64, 9 frames, 2 steps, batch sizes 1,2: "
        "seconds, not results",
    )  # fmt: skip
    args = parser.parse_args(argv)
    rules = preset_rules(PRESETS[args.model])
    settings = Settings(
        args.device, args.model, args.model, args.height or rules.height,
        args.width or rules.width, args.frames or rules.num_frames,
        args.steps or rules.num_inference_steps,
        tuple(int(size) for size in args.batch_sizes.split(",")),
        args.videos or (1 if args.speed else 16), args.baseline_videos, tuple(args.compile),
        tuple(args.speed), args.peak_tflops, args.out, args.dry_run,
    )  # fmt: skip
    if args.dry_run:
        settings = replace(
            settings, device="cpu", model=tiny_preset(args.model), batch_sizes=(1, 2),
            videos=1 if args.speed else 4, baseline_videos=2,
            # Every family takes these (frames 8k + 1, sides multiples of 32): CPU seconds.
            height=64, width=64, frames=9, steps=2,
        )  # fmt: skip
    return settings
