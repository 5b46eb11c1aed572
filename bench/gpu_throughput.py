"""GPU throughput of t2v-batch against the model card's way of running a model family.

Measures, in one process: the baseline (the model card's recipe: the family's dtype,
`enable_model_cpu_offload()`, one prompt per call, the pipeline's own output written like
`export_to_video`), then t2v-batch's engine (`tasks.render.render_rows` and
`tasks.encode.encode_mp4`, encoding in the background as the flow does) at each batch
size, and optionally with `torch.compile`. Both use a `<name>-random` preset, the exact
architecture with random weights: no download, and the same FLOPs as the real model, at the
family's native size, frames and steps unless told otherwise. Results go to the section
`gpu_throughput/<model>` of bench/RESULTS.md. With `--speed`, it measures the speed
profiles instead (bench/gpu_speed.py), into the section `gpu_speed/<model>`.

A CUDA machine with Python, torch, transformers and accelerate needs no .venv: the engine
imports no Prefect, and the wheels it lacks (diffusers, imageio-ffmpeg with its ffmpeg,
torchao for FP8) come from `make bench-wheels`, run where pip can download, into `.whl/`:

    make bench-wheels                                  # where pip can download
    make bench-gpu BENCH_MODEL=wan2.1-1.3b-random      # on the CUDA machine, with .whl/
    make bench-gpu-speed BENCH_MODEL=wan2.1-1.3b-random

`--dry-run` runs the same code on CPU with the family's tiny preset in seconds (what the
tests run).
"""

from __future__ import annotations

import gc
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.card_baseline import (
    DTYPE_NAMES,
    baseline_dtype,
    baseline_pipeline,
    export_like_diffusers,
)
from bench.flops import VideoFlops, count_video_flops, peak_tflops
from bench.gpu_settings import Settings, batched_rows, bench_rows, parse_settings
from bench.gpu_speed import SPEED_METHOD, ProfileRun, measure_speeds, speed_table
from bench.report import MISSING, environment, markdown_table, number, write_section
from bench.steady import Contender, busy_inside_render, run_loop
from tasks.devices import get_pipeline, resolve_device
from tasks.encode import encode_mp4
from tasks.families import family_of
from tasks.manifest import RenderRow
from tasks.presets import ModelRef, resolve_model
from tasks.render import render_rows
from tasks.render_call import FailedRender, RenderOutcome


@dataclass(frozen=True)
class Measurement:
    label: str
    batch_size: int
    videos: int
    wall_s: float
    render_s: float
    busy_in_render: float
    peak_memory: int | None  # bytes; None off CUDA

    @property
    def seconds_per_video(self) -> float:
        return self.wall_s / self.videos

    @property
    def videos_per_minute(self) -> float:
        return 60 * self.videos / self.wall_s

    @property
    def device_busy(self) -> float:
        """Share of the wall the device computes: time in render × busy share inside it."""
        return self.render_s / self.wall_s * self.busy_in_render


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    device = resolve_device(settings.device)
    model = resolve_model(settings.model)
    if settings.speeds:
        rows = bench_rows(settings, settings.videos)
        # Compiling takes minutes on CPU, even for a tiny model: a dry run renders uncompiled.
        runs = measure_speeds(model, device, settings.speeds, rows, not settings.dry_run)
        flops = count_video_flops(get_pipeline(model, device), rows[0])
        section = speed_section(settings, device, flops, runs)
    else:
        with tempfile.TemporaryDirectory(prefix="t2v-bench-") as scratch:
            results = [measure_baseline(settings, device, Path(scratch))]
            # The baseline's pipeline is garbage now; give its memory back before the engine's.
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            # Counted before `measure_engine` compiles the engine's pipeline in place.
            flops = count_video_flops(get_pipeline(model, device), bench_rows(settings, 1)[0])
            results += measure_engine(settings, device, Path(scratch))
        section = results_section(settings, device, flops, results)
    write_section(settings.out, section_name(settings), section)
    print(section)
    return 0


def section_name(settings: Settings) -> str:
    """Each model's table has a section of its own, so runs of several models all stay."""
    kind = "gpu_speed" if settings.speeds else "gpu_throughput"
    return f"{kind}/{settings.requested}"


def measure_baseline(settings: Settings, device: torch.device, scratch: Path) -> Measurement:
    """The model card's recipe, one prompt at a time, with a pipeline of its own."""
    family = settings.family
    pipe = baseline_pipeline(settings.model, device)

    def render(batch: Sequence[RenderRow]) -> list[np.ndarray]:
        # The pipeline's own output type: float arrays (ModelScope, Wan) or PIL images.
        call = family.call_arguments(batch[:1])
        if batch[0].image is not None:  # a model that renders from images only
            call |= family.image_arguments(batch[:1])
        video = pipe(**call).frames[0]
        return [
            video if isinstance(video, np.ndarray) else np.stack([np.asarray(f) for f in video])
        ]

    save = partial(export_like_diffusers, fps=family.card_fps)
    contender = Contender("baseline (model card)", 1, render, save, False)
    return measure(contender, bench_rows(settings, settings.baseline_videos), scratch, device)


def measure_engine(settings: Settings, device: torch.device, scratch: Path) -> list[Measurement]:
    """t2v-batch at each batch size, then compiled at the fastest one for each mode asked."""
    model = resolve_model(settings.model)
    results = []
    for batch_size in settings.batch_sizes:
        contender = _engine(f"t2v-batch b={batch_size}", model, device, batch_size)
        results.append(measure(contender, batched_rows(settings, batch_size), scratch, device))
    fastest = max(results, key=lambda m: m.videos_per_minute).batch_size
    for mode in settings.compile_modes:
        # Module.compile wraps the denoiser's original forward again, so modes do not stack.
        pipe = get_pipeline(model, device)
        family_of(pipe).denoiser(pipe).compile(mode=mode)
        contender = _engine(f"t2v-batch b={fastest} compile={mode}", model, device, fastest)
        results.append(measure(contender, batched_rows(settings, fastest), scratch, device))
    return results


def _engine(label: str, model: ModelRef, device: torch.device, batch_size: int) -> Contender:
    def render(batch: Sequence[RenderRow]) -> list[np.ndarray]:
        return [_frames(outcome) for outcome in render_rows(model, str(device), batch).outcomes]

    return Contender(label, batch_size, render, _encode, True)


def _frames(outcome: RenderOutcome) -> np.ndarray:
    if isinstance(outcome, FailedRender):
        raise RuntimeError(f"row {outcome.row.id} failed: {outcome.error}")
    return outcome.frames


def _encode(frames: np.ndarray, row: RenderRow, folder: Path) -> None:
    # The benchmark encodes the same rows again for every contender; keep the last one.
    path = folder / f"{row.id}.mp4"
    path.unlink(missing_ok=True)
    encode_mp4(frames, row.fps, path)


def measure(
    contender: Contender, rows: list[RenderRow], scratch: Path, device: torch.device
) -> Measurement:
    """Warm up on one batch, time the steady loop, then profile one render call."""
    first = rows[: contender.batch_size]
    # Warm-up: cuDNN's algorithm choice, the allocator's growth, compilation.
    contender.render(first)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = run_loop(contender, rows, scratch)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    busy = busy_inside_render(contender, first, str(device))
    print(f"{contender.label}: {times.wall_s / len(rows):.3f} s/video", file=sys.stderr)
    return Measurement(
        contender.label, contender.batch_size, len(rows), times.wall_s, times.render_s, busy, peak
    )


def results_section(
    settings: Settings, device: torch.device, flops: VideoFlops, results: list[Measurement]
) -> str:
    """The markdown section: what ran where, the table, and how each column is measured."""
    peak = _peak(settings, device)
    baseline = results[0]
    header = [
        "engine", "batch", "videos", "s/video", "videos/min", "× baseline",
        "peak GPU GiB", "in render %", "device busy %", "TFLOP/s", "MFU %",
    ]  # fmt: skip
    rows = []
    for m in results:
        achieved = flops.total * m.videos / m.wall_s / 1e12
        rows.append([
            m.label, str(m.batch_size), str(m.videos), number(m.seconds_per_video, 3),
            number(m.videos_per_minute, 1),
            number(m.videos_per_minute / baseline.videos_per_minute),
            number(None if m.peak_memory is None else m.peak_memory / 2**30),
            number(100 * m.render_s / m.wall_s, 1), number(100 * m.device_busy, 1),
            number(achieved, 1), number(None if peak is None else 100 * achieved / peak, 1),
        ])  # fmt: skip
    dtype = "fp32" if device.type != "cuda" else DTYPE_NAMES[baseline_dtype(settings.model)]
    return "\n\n".join([
        *_preamble(settings, device, flops, "GPU throughput", "bench-gpu"),
        f"Baseline: {dtype}, one prompt per call, the pipeline's own output"
        + (", `enable_model_cpu_offload()`" if device.type == "cuda" else " (no offload on CPU)")
        + f", written at {settings.family.card_fps} fps.",
        markdown_table(header, rows),
        METHOD,
    ])  # fmt: skip


def speed_section(
    settings: Settings, device: torch.device, flops: VideoFlops, runs: list[ProfileRun]
) -> str:
    """The `--speed` section: what ran where, a row per profile, how it is measured."""
    uncompiled = " A dry run renders every profile uncompiled." if settings.dry_run else ""
    return "\n\n".join([
        *_preamble(settings, device, flops, "GPU speed profiles", "bench-gpu-speed"),
        speed_table(runs, flops, _peak(settings, device)),
        SPEED_METHOD + uncompiled,
    ])  # fmt: skip


def _preamble(
    settings: Settings, device: torch.device, flops: VideoFlops, title: str, target: str
) -> list[str]:
    """The title (marked in a dry run), the environment, and the shape and FLOPs of a video."""
    family = settings.family
    peak = _peak(settings, device)
    heading = f"## {title}: {settings.requested}"
    if settings.dry_run:
        heading += (
            f" — DRY RUN on CPU with {settings.model}, not a result\n\n"
            "**The GPU table has not been measured yet.** This table only shows the shape of "
            f"the real one; run `make {target} BENCH_MODEL={settings.requested}` on a CUDA "
            "machine (module docstring of bench/gpu_throughput.py) to replace this section."
        )
    return [
        heading,
        environment(torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"),
        f"{settings.model} ({family.name}), {settings.height}×{settings.width}, "
        f"{settings.frames} frames, {settings.steps} steps, guidance "
        f"{settings.rules.guidance_scale:g}. One video: {flops.total / 1e12:.3g} TFLOP "
        f"({flops.step / 1e12:.3g} per step with guidance; text encoding and decoding "
        f"{flops.rest / 1e12:.3g}); peak {MISSING if peak is None else f'{peak:g}'} TFLOP/s "
        "dense bf16.",
    ]


def _peak(settings: Settings, device: torch.device) -> float | None:
    if settings.peak_tflops:
        return settings.peak_tflops
    return peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


METHOD = """\
How it is measured: each row warms up on one batch, then renders and encodes all its
videos; the wall ends when the last MP4 is written. t2v-batch encodes in two background
threads while the next batch renders (as the flow does); the baseline renders and writes
one video after the other. *in render %*: share of the wall inside render calls (the part
that holds the GPU). *device busy %*: that share × the share of one profiled render call
covered by GPU kernels and copies (torch.profiler; on CPU, by torch operators). *peak
GPU GiB*: `torch.cuda.max_memory_allocated`. *TFLOP/s*: FLOPs of one video (counted with
`torch.utils.flop_counter.FlopCounterMode` around the family's pipeline call for one row at
2 and 3 steps, extrapolated to the row's steps; on CPU fused attention is not counted)
× videos / wall; *MFU %*: that over the GPU's dense bf16 peak. The baseline writes with
`imageio_ffmpeg.write_frames` and the settings of `export_to_video`, which needs the
`imageio` package, not a dependency here."""


if __name__ == "__main__":
    sys.exit(main())
