"""The speed levers on CPU (`make bench-speed`): each transformer family's full-size
architecture at full width but a slice of its depth, with random weights, rendered `exact`,
with each lever alone and with each profile, interleaved in one process.

Each family writes its section `speed/<preset>` of bench/RESULTS.md, and ModelScope's UNet
the levers it skips; `--dry-run` renders the tiny presets in seconds and only prints.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from bench.report import MISSING, environment, markdown_table, number, publish_section
from bench.similarity import psnr
from tasks.families import Family
from tasks.loading import place, quiet_libraries
from tasks.manifest import RenderRow
from tasks.presets import PRESETS
from tasks.render_call import FailedRender, render_batch
from tasks.speed import EXACT, Levers, SpeedSupport
from tasks.speed.apply import SpeedReport, apply_levers
from tasks.speed.compile_cache import INDUCTOR_CACHE_ENV

# Each transformer family's full-size preset: its first two blocks (a first-block cache runs
# the first and skips the rest) and one text-encoder layer fit a 2-core CPU's minutes.
TRANSFORMER_PRESETS = ("wan2.1-1.3b", "ltx-video", "cogvideox-2b")
UNET_PRESET = "ms-1.7b"
BLOCKS = 2
# A fixed-schedule cache skips the same steps on any weights (diffusers' default interval).
TAYLORSEER = "taylorseer:5"
ROUNDS = 2
COMPILES = ("regional", "full")
# A block's attention and feed-forward, by their names in it (`attn1.to_q`, `ff.net.0.proj`).
WORK = r"(attn\d?|ffn?)\."


@dataclass(frozen=True)
class Shape:
    frames: int
    size: int  # height and width; every family takes multiples of 32 and 8k + 1 frames
    steps: int


SHAPE = Shape(frames=9, size=64, steps=30)
DRY_SHAPE = Shape(frames=9, size=32, steps=4)


@dataclass(frozen=True)
class Contender:
    label: str
    levers: Levers


def contenders(support: SpeedSupport, caches: Sequence[str], compiled: bool) -> list[Contender]:
    """`exact`, each of `caches`, each compile mode, then each profile; without `compiled`,
    no compiling (minutes, even for a tiny model)."""
    compiles = [Contender(f"compile {mode}", Levers(compile=mode)) for mode in COMPILES]
    return [
        Contender("exact", EXACT),
        *(Contender(f"cache {cache}", Levers(cache=cache)) for cache in caches),
        *(compiles if compiled else []),
        Contender("fast", support.fast if compiled else replace(support.fast, compile="off")),
        Contender(
            "fastest", support.fastest if compiled else replace(support.fastest, compile="off")
        ),
    ]


def profile_caches(supports: Sequence[SpeedSupport]) -> list[str]:
    """The step caches the profiles of these families choose, and TaylorSeer."""
    chosen = (levers.cache for s in supports for levers in (s.fast, s.fastest))
    return [cache for cache in dict.fromkeys([*chosen, TAYLORSEER]) if cache != "none"]


class BlockCalls:
    """Calls of one transformer block, computed or skipped: a step cache answers a skipped
    call from its cache (first-block) or a prediction of its attention and feed-forward
    (TaylorSeer) without running its attention's or feed-forward's linear layers. The
    counts are tensors
    changed in place: a compiled block would guard on a Python number's value and recompile
    at every call."""

    def __init__(self, block: torch.nn.Module) -> None:
        self.ran = torch.zeros((), dtype=torch.int64)
        self.counts = torch.zeros(2, dtype=torch.int64)  # computed, skipped
        block.register_forward_pre_hook(self._enter)
        for name, layer in block.named_modules():
            # Of its attention and feed-forward: an adaptive norm's linear layers run on
            # every call (CogVideoX's), computed or predicted.
            if isinstance(layer, torch.nn.Linear) and re.match(WORK, name):
                layer.register_forward_hook(self._layer_ran)
        block.register_forward_hook(self._leave)

    def _enter(self, *_: Any) -> None:
        self.ran.zero_()

    def _layer_ran(self, *_: Any) -> None:
        self.ran.fill_(1)

    def _leave(self, *_: Any) -> None:
        self.counts.add_(torch.stack([self.ran, 1 - self.ran]))

    def reset(self) -> None:
        self.counts.zero_()

    def cell(self) -> str:
        computed, skipped = self.counts.tolist()
        return f"{computed} / {skipped}"


class DenoiserClock:
    """Seconds inside an uncompiled denoiser's calls, from forward hooks around them."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        self.seconds = 0.0
        self.started = 0.0
        denoiser.register_forward_pre_hook(self._enter)
        denoiser.register_forward_hook(self._leave)

    def _enter(self, *_: Any) -> None:
        self.started = time.perf_counter()

    def _leave(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self.started


def transformer_blocks(denoiser: torch.nn.Module) -> torch.nn.ModuleList:
    """The denoiser's stack of repeated blocks: its heaviest ModuleList."""
    stacks = [child for child in denoiser.children() if isinstance(child, torch.nn.ModuleList)]
    return max(stacks, key=lambda stack: sum(p.numel() for p in stack.parameters()))


@dataclass
class Run:
    """One contender's own pipeline (the same weights, its own denoiser) and its timings."""

    contender: Contender
    pipe: Any
    report: SpeedReport
    first: BlockCalls
    last: BlockCalls
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # this process's CPU seconds, all threads
    frames: np.ndarray | None = None

    def render(self, row: RenderRow) -> None:
        self.first.reset()
        self.last.reset()
        started, cpu = time.perf_counter(), time.process_time()
        (video,) = render_batch(self.pipe, [row])
        self.walls.append(time.perf_counter() - started)
        self.cpus.append(time.process_time() - cpu)
        if isinstance(video, FailedRender):
            raise RuntimeError(f"{row.id}: {video.error}")
        self.frames = video.frames

    @property
    def compiled(self) -> bool:
        return "compile" in self.report.applied

    @property
    def best_s(self) -> float:
        """The fastest warm call: a compiled pipeline's first call compiles."""
        return min(self.walls[1:] if self.compiled else self.walls)

    @property
    def best_cpu_s(self) -> float:
        """CPU seconds of the least busy warm call: other processes' load hardly moves it."""
        return min(self.cpus[1:] if self.compiled else self.cpus)

    @property
    def compile_s(self) -> float | None:
        """The first call (which compiles) minus the fastest warm one; 0 where it reused
        graphs an earlier contender compiled and only noise is left."""
        return max(0.0, self.walls[0] - self.best_s) if self.compiled else None


def prepare(pipe: Any, family: Family, contender: Contender) -> Run:
    """A pipeline sharing `pipe`'s text encoder and VAE, with a copy of its denoiser counted
    at its first and last block and then given the contender's levers."""
    denoiser = copy.deepcopy(family.denoiser(pipe))
    blocks = transformer_blocks(denoiser)
    first, last = BlockCalls(blocks[0]), BlockCalls(blocks[-1])
    clone = type(pipe)(**{**pipe.components, family.denoiser_name: denoiser})
    clone.set_progress_bar_config(disable=True)
    report = apply_levers(clone, family, contender.levers)
    return Run(contender, clone, report, first, last)


@dataclass(frozen=True)
class Measured:
    runs: list[Run]
    denoiser_s: float  # of exact's fastest call
    load: tuple[float, float]  # the 1-minute load average before and after


def measure(preset: str, shape: Shape, dry_run: bool) -> Measured:
    """Every contender of `preset`'s family on one row, interleaved: a first round, then
    ROUNDS timed ones. A contender whose levers all skip here is listed, not rendered.
    Also the seconds of exact's fastest call spent in its denoiser, and the machine's load."""
    family = PRESETS[preset].family
    device = torch.device("cpu")
    quiet_libraries()
    # Module.compile compiles nn.Module._call_impl, one code object for every module: the
    # families before would use up dynamo's recompile limit, and later ones run uncompiled.
    torch._dynamo.reset()
    if dry_run:
        pipe = family.build_tiny()
    else:
        pipe = family.build_random(preset, device, torch.float32, blocks=BLOCKS)
    place(pipe, family, device, torch.float32)
    caches = profile_caches([family.speed])
    runs = [prepare(pipe, family, c) for c in contenders(family.speed, caches, not dry_run)]
    rules = family.rules
    row = RenderRow(
        1, "bench", "a fox running through fresh snow at dawn", "", 1, shape.frames,
        shape.size, shape.size, shape.steps, rules.guidance_scale, rules.fps,
    )  # fmt: skip
    load_before = os.getloadavg()[0]
    exact = runs[0]
    clock = DenoiserClock(family.denoiser(exact.pipe))
    denoiser_s = []
    rendered = [run for run in runs if run.report.applied or run is exact]
    # A compiled contender's first call compiles; then every contender renders each round.
    rounds = [[run for run in rendered if run.compiled]] + [rendered] * ROUNDS
    for round_ in rounds:
        for run in round_:
            clock.seconds = 0.0
            run.render(row)
            if run is exact:
                denoiser_s.append(clock.seconds)
            print(f"{preset} {run.contender.label}: {run.walls[-1]:.2f} s", file=sys.stderr)
    load = (load_before, os.getloadavg()[0])
    return Measured(runs, denoiser_s[exact.walls.index(exact.best_s)], load)


def family_section(preset: str, shape: Shape, measured: Measured, dry_run: bool) -> str:
    runs = measured.runs
    exact = runs[0]
    assert exact.frames is not None
    header = [
        "contender", "levers applied", "skipped", "wall s", "× exact", "CPU s", "CPU × exact",
        "first block computed / skipped", "last block computed / skipped", "compile s",
        "PSNR dB vs exact",
    ]  # fmt: skip
    rows = []
    for run in runs:
        applied = ", ".join(f"{name} {value}" for name, value in run.report.applied.items())
        skipped = "; ".join(f"{name} {why}" for name, why in run.report.skipped.items())
        if run.frames is None:
            rows.append([run.contender.label, "none", skipped] + [MISSING] * 8)
            continue
        quality = psnr(run.frames, exact.frames)
        rows.append([
            run.contender.label, applied or "none", skipped or "none", number(run.best_s),
            number(exact.best_s / run.best_s), number(run.best_cpu_s),
            number(exact.best_cpu_s / run.best_cpu_s), run.first.cell(), run.last.cell(),
            number(run.compile_s, 1),
            "identical" if math.isinf(quality) else number(quality, 1),
        ])  # fmt: skip
    family = PRESETS[preset].family
    title = f"## Speed levers on CPU: {preset} ({family.name})"
    model = (
        f"tiny preset of {family.name}" if dry_run else f"{preset}'s architecture at full "
        f"width, its first {BLOCKS} transformer blocks and 1 text-encoder layer"
    )  # fmt: skip
    return "\n\n".join([
        title + (" — DRY RUN with the tiny preset, not a result" if dry_run else ""),
        environment("CPU") + f" {torch.get_num_threads()} threads; 1-minute load average "
        f"{measured.load[0]:.1f} before, {measured.load[1]:.1f} after (2 cores, shared).",
        f"{model}, random weights, fp32; one video of {shape.frames} frames, "
        f"{shape.size}×{shape.size}, {shape.steps} steps, guidance "
        f"{family.rules.guidance_scale:g}. Fastest of {ROUNDS} interleaved rounds, after a "
        "first call that compiles for compiled contenders. Of exact's "
        f"{exact.best_s:.2f} s, {measured.denoiser_s:.2f} s are in the denoiser, what the "
        "levers act on; the rest is the text encoder, the VAE decode and the scheduler.",
        markdown_table(header, rows),
        METHOD,
    ])  # fmt: skip


METHOD = """\
**Random weights show the mechanics and the compute a lever saves, not the visual quality
of trained weights**: a threshold cache (first-block) skips on random weights by accident or
not at all, so its skips and PSNR here say nothing of a trained model's; a fixed-schedule
cache (TaylorSeer) skips the same calls on any weights, so its ratio is a fair proxy. The
thresholds are the family's profile settings, chosen from published guidance, never tuned
here. *wall s*: the whole pipeline call (text encoder, denoising, VAE decode) through
`tasks.render_call.render_batch`. *CPU s*: the CPU time of this process in that call (its
threads, not inductor's compile workers), which other work on the cores hardly moves:
under load, its ratio is the steadier one. *computed / skipped*: calls of the block during the video
(forward hooks on the block and its attention's and feed-forward's linear layers: a
skipped call runs none of them;
guidance makes 2 calls per step unless the family batches them). *compile s*: the first
call minus the fastest warm one, with an empty inductor cache; a later contender of the
same family reuses graphs an earlier one compiled. A contender whose levers all skip here
is not rendered."""


def unet_section() -> str:
    """What each lever does to ModelScope's UNet: applied to the tiny preset, not rendered."""
    family = PRESETS[UNET_PRESET].family
    caches = profile_caches([PRESETS[preset].family.speed for preset in TRANSFORMER_PRESETS])
    rows = []
    for contender in contenders(family.speed, caches, compiled=True)[1:]:
        pipe = family.build_tiny()
        place(pipe, family, torch.device("cpu"), torch.float32)
        report = apply_levers(pipe, family, contender.levers)
        applied = ", ".join(f"{name} {value}" for name, value in report.applied.items())
        skipped = "; ".join(f"{name} {why}" for name, why in report.skipped.items())
        rows.append([contender.label, applied or "none", skipped or "none"])
    return "\n\n".join([
        f"## Speed levers on CPU: {UNET_PRESET} ({family.name}, a UNet)",
        "Step caches hook a transformer's blocks: on the UNet they skip, and the render goes "
        "on exact; compiling applies. Levers applied to the tiny preset, not timed:",
        markdown_table(["contender", "levers applied", "skipped"], rows),
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--dry-run", action="store_true",
        help=f"the tiny presets at {DRY_SHAPE.frames} frames of {DRY_SHAPE.size}² and "
        f"{DRY_SHAPE.steps} steps, uncompiled, printed, not written: seconds, not results",
    )  # fmt: skip
    parser.add_argument(
        "--preset", action="append", choices=TRANSFORMER_PRESETS, dest="presets",
        help="measure only this family's preset (repeatable); default: all of them",
    )  # fmt: skip
    args = parser.parse_args(argv)
    shape = DRY_SHAPE if args.dry_run else SHAPE
    with tempfile.TemporaryDirectory(prefix="t2v-inductor-") as inductor:
        # Compile seconds are a cold start's, whatever earlier runs left in t2v's cache.
        os.environ[INDUCTOR_CACHE_ENV] = inductor
        for preset in args.presets or TRANSFORMER_PRESETS:
            measured = measure(preset, shape, args.dry_run)
            text = family_section(preset, shape, measured, args.dry_run)
            publish_section(f"speed/{preset}", text, args.dry_run)
    publish_section(f"speed/{UNET_PRESET}", unet_section(), args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
