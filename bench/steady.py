"""A steady-state render-and-encode loop, timed, and how busy the device is while it renders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import numpy as np
import torch

from tasks.manifest import RenderRow

# Renders one batch of rows into uint8 videos (frames × height × width × RGB), one per row.
Render = Callable[[Sequence[RenderRow]], list[np.ndarray]]
# Writes one row's video to an MP4 in the given folder.
Save = Callable[[np.ndarray, RenderRow, Path], None]
ENCODE_WORKERS = 2  # the flow publishes up to RENDER_WINDOW batches at once


@dataclass(frozen=True)
class Contender:
    """One way of turning rows into MP4 files."""

    label: str
    batch_size: int
    render: Render
    save: Save
    overlap: bool  # encode in the background while the next batch renders, as the flow does


@dataclass(frozen=True)
class LoopTimes:
    wall_s: float
    render_s: float  # inside `render` calls: the part of the wall that holds the device


def run_loop(contender: Contender, rows: Sequence[RenderRow], scratch: Path) -> LoopTimes:
    """Render every row batch by batch and save each video; the wall ends when all are saved."""
    render_s = 0.0
    with ThreadPoolExecutor(ENCODE_WORKERS) as pool:
        started = perf_counter()
        saving: list[Future[None]] = []
        for start in range(0, len(rows), contender.batch_size):
            batch = rows[start : start + contender.batch_size]
            before = perf_counter()
            videos = contender.render(batch)
            render_s += perf_counter() - before
            for video, row in zip(videos, batch, strict=True):
                if contender.overlap:
                    saving.append(pool.submit(contender.save, video, row, scratch))
                else:
                    contender.save(video, row, scratch)
        for future in saving:
            future.result()
        wall_s = perf_counter() - started
    return LoopTimes(wall_s, render_s)


def busy_inside_render(contender: Contender, batch: Sequence[RenderRow], device: str) -> float:
    """Share of one render call during which the device runs work, from torch.profiler.

    On CUDA that is the union of kernel and copy intervals; on CPU, of torch operator
    intervals (there, time outside operators is Python and pipeline overhead).
    """
    from torch._C._profiler import _ExperimentalConfig
    from torch.profiler import DeviceType, ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    activity, kind = (
        (ProfilerActivity.CUDA, DeviceType.CUDA) if cuda else (ProfilerActivity.CPU, DeviceType.CPU)
    )
    # The engine renders in a thread of its own (tasks.render's watchdog); the profiler
    # records operators of the calling thread only unless told otherwise (torch >= 2.7).
    try:
        config = _ExperimentalConfig(profile_all_threads=True)
    except TypeError:
        config = _ExperimentalConfig()
    with profile(activities=[activity], experimental_config=config) as profiler:
        started = perf_counter()
        contender.render(batch)
        wall_us = (perf_counter() - started) * 1e6
    intervals = [
        (event.time_range.start, event.time_range.end)
        for event in profiler.events()
        if event.device_type == kind and not event.is_user_annotation
    ]
    return min(1.0, covered(intervals) / wall_us)


def covered(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of intervals: nested or overlapping work counts once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
