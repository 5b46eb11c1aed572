"""The GPU benchmark's `--speed` profiles: each profile of one preset rendered through the
engine at the same rows, timed, and its frames compared with exact's (PSNR, SSIM)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from bench.flops import VideoFlops
from bench.report import markdown_table, number
from bench.similarity import psnr, ssim
from tasks.devices import speed_report
from tasks.manifest import RenderRow
from tasks.presets import ModelRef
from tasks.render import render_rows
from tasks.render_call import FailedRender
from tasks.speed import Levers, Speed, resolve_levers
from tasks.speed.apply import SpeedReport

# The warm-up call's steps: enough to compile and to hook the step caches, a fraction of a
# video's time (not 1: LTX-Video's scheduler finds no step index in a 1-step schedule).
WARM_UP_STEPS = 2


@dataclass(frozen=True)
class ProfileRun:
    speed: Speed
    report: SpeedReport
    videos: int
    wall_s: float
    warm_up_s: float  # the first call, at WARM_UP_STEPS steps: it compiles
    peak_memory: int | None  # bytes; None off CUDA
    frames: np.ndarray  # the first row's video

    @property
    def seconds_per_video(self) -> float:
        return self.wall_s / self.videos


def speeds_to_measure(speeds: Sequence[Speed]) -> list[Speed]:
    """`exact` first, the reference of the others, then each profile asked for, once."""
    return list(dict.fromkeys(["exact", *speeds]))  # type: ignore[list-item]


def measure_speeds(
    model: ModelRef,
    device: torch.device,
    speeds: Sequence[Speed],
    rows: Sequence[RenderRow],
    compiled: bool = True,
) -> list[ProfileRun]:
    """Each profile in turn: a warm-up call, then `rows` one per call (a first-block cache
    renders one row per call anyway). Without `compiled`, the profiles' compile is off."""
    runs = []
    for speed in speeds_to_measure(speeds):
        levers = resolve_levers(model.family.speed, speed)
        if not compiled:
            levers = replace(levers, compile="off")
        started = time.perf_counter()
        _render(model, device, replace(rows[0], num_inference_steps=WARM_UP_STEPS), levers)
        warm_up_s = time.perf_counter() - started
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        videos = [_render(model, device, row, levers) for row in rows]
        wall_s = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        report = speed_report(model, str(device), levers) or SpeedReport()
        print(f"{speed}: {wall_s / len(rows):.3f} s/video; {report.line()}", file=sys.stderr)
        runs.append(ProfileRun(speed, report, len(rows), wall_s, warm_up_s, peak, videos[0]))
    return runs


def _render(model: ModelRef, device: torch.device, row: RenderRow, levers: Levers) -> np.ndarray:
    (outcome,) = render_rows(model, str(device), [row], levers=levers).outcomes
    if isinstance(outcome, FailedRender):
        raise RuntimeError(f"row {outcome.row.id} failed: {outcome.error}")
    return outcome.frames


def speed_table(runs: Sequence[ProfileRun], flops: VideoFlops, peak: float | None) -> str:
    """One row per profile; throughput counts exact's FLOPs per video for every profile."""
    exact = runs[0]
    header = [
        "speed", "levers applied", "skipped", "videos", "s/video", "× exact", "warm-up s",
        "peak GPU GiB", "TFLOP/s", "MFU %", "PSNR dB vs exact", "SSIM vs exact",
    ]  # fmt: skip
    rows = []
    for run in runs:
        achieved = flops.total / run.seconds_per_video / 1e12
        quality = psnr(run.frames, exact.frames)
        applied = ", ".join(f"{name} {value}" for name, value in run.report.applied.items())
        skipped = "; ".join(f"{name} {why}" for name, why in run.report.skipped.items())
        rows.append([
            run.speed, applied or "none", skipped or "none", str(run.videos),
            number(run.seconds_per_video, 3),
            number(exact.seconds_per_video / run.seconds_per_video),
            number(run.warm_up_s, 1),
            number(None if run.peak_memory is None else run.peak_memory / 2**30),
            number(achieved, 1), number(None if peak is None else 100 * achieved / peak, 1),
            "identical" if math.isinf(quality) else number(quality, 1),
            number(ssim(run.frames, exact.frames), 4),
        ])  # fmt: skip
    return markdown_table(header, rows)


SPEED_METHOD = """\
How it is measured: `exact` first, then each profile with its own pipeline (the family's
levers applied through `tasks.speed.apply_levers`): a warm-up call at 2 steps (it compiles
and hooks the caches), then the rows one per call through `tasks.render.render_rows`, the
same rows and seeds for every profile; *s/video* is rendering only, no encoding. *TFLOP/s*
and *MFU %* count the exact video's FLOPs for every profile, so a cache that skips steps
shows as a higher effective rate. *PSNR* and *SSIM* (11×11 Gaussian window) compare the
first row's uint8 frames with exact's. Random weights: a threshold cache (first-block)
skips by accident or not at all on them, so its ratio and PSNR here are not those of
trained weights; kernels, compiling and FP8 cost and save the same on any weights."""
