"""One pipeline call for a micro-batch of compatible rows, one generator per row, and what
each row's video came out as.

A row's frames match its frames rendered alone within the tolerance `tasks.batching` states.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.batching import batch_shape
from tasks.errors import DeviceFailedError, RenderError, first_line
from tasks.families import family_of
from tasks.manifest import RenderRow
from tasks.quality import Candidate, inspect_video
from tasks.scoring import Scorer
from tasks.sound import Sound, sound_tracks
from tasks.speed.apply import reset_step_cache


@dataclass(frozen=True)
class RenderedVideo:
    """One row's frames (uint8, frames × height × width × RGB), its sound where the family
    makes one, what rendering it cost, and what the quality checks flagged."""

    row: RenderRow
    frames: np.ndarray
    render_s: float
    warning: str = ""
    flags: tuple[str, ...] = ()
    score: float | None = None  # when a scorer ran
    candidates: tuple[Candidate, ...] = ()  # every seed rendered, when the row asked for several
    sound: Sound | None = None


@dataclass(frozen=True)
class FailedRender:
    row: RenderRow
    error: str


RenderOutcome = RenderedVideo | FailedRender


# The process's scorer and the score under which a video is flagged `low_score`.
ScoreBy = tuple[Scorer, float] | None


def as_asked(outcome: RenderOutcome) -> RenderOutcome:
    """The outcome, or a failure where a video's frames are not the row's count and size (a
    pipeline that rounds a size down): t2v never reports a video it did not render."""
    if isinstance(outcome, FailedRender):
        return outcome
    row, (frames, height, width) = outcome.row, outcome.frames.shape[:3]
    if (frames, height, width) == (row.num_frames, row.height, row.width):
        return outcome
    return FailedRender(
        row,
        f"the model rendered {frames} frames of {width}×{height}, not the row's "
        f"{row.num_frames} of {row.width}×{row.height}: its checkpoint takes other sizes "
        "than its family's rules",
    )


def render_batch(
    pipe: Any, rows: Sequence[RenderRow], scorer: ScoreBy = None
) -> list[RenderOutcome]:
    """One pipeline call for rows of one `batch_shape`; frames as rendering each row alone,
    within the tolerance `tasks.batching` states. A row whose frames the quality
    checks find to be a render fault (black, NaN) fails; `scorer` scores the others."""
    # 1. Check inputs
    shapes = {batch_shape(row) for row in rows}
    if len(shapes) != 1:
        raise ValueError(f"`rows` have to share one batch shape but have {sorted(shapes)}.")
    family = family_of(pipe)
    started = time.perf_counter()
    # 2. One generator per row, so a row's noise does not depend on its batch-mates
    device = device_of(pipe)
    generators = [torch.Generator(device=device).manual_seed(row.seed) for row in rows]
    reset_step_cache(family.denoiser(pipe))
    # 3. One pipeline call, the family's way, to uint8 frames on the device
    try:
        with torch.inference_mode():
            decoded = family.generate(pipe, rows, generators)
            videos, nonfinite = decoded.pixels.cpu().numpy(), decoded.nonfinite.tolist()
            sounds = sound_tracks(decoded.sound, decoded.sample_rate, len(rows))
    except torch.cuda.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError) as exc:
        message = first_line(exc)
        if "CUDA error" in message and "out of memory" in message:
            # cudaMalloc outside PyTorch's allocator (cuBLAS or cuDNN workspaces) says so.
            raise torch.cuda.OutOfMemoryError(message) from exc
        if "CUDA error" in message:
            # An illegal access, a device-side assert, a launch failure...: the process's
            # CUDA context is unusable afterwards; only a fresh process can go on.
            reason = f"the GPU hit a fatal error: {message}"
            raise DeviceFailedError(reason) from exc
        raise RenderError(f"render of {len(rows)} row(s) failed: {message}") from exc
    elapsed = (time.perf_counter() - started) / len(rows)
    warnings = truncation_warnings(pipe, rows)
    outcomes: list[RenderOutcome] = []
    for row, video, bad, warning, sound in zip(
        rows, videos, nonfinite, warnings, sounds, strict=True
    ):
        found = inspect_video(video, bad)
        if found.fault:
            outcomes.append(FailedRender(row, found.fault))
            continue
        if scorer is not None:
            found = found.scored(scorer[0].score(row.prompt, video), scorer[1])
        warned = "; ".join(text for text in (warning, found.warning) if text)
        outcomes.append(
            RenderedVideo(row, video, elapsed, warned, found.flags, found.score, sound=sound)
        )
    return outcomes


def device_of(pipe: Any) -> torch.device:
    """Where the pipeline computes: under model CPU offload its weights wait on the CPU,
    but every component runs on the GPU its hooks move it to."""
    return torch.device(pipe._execution_device)


def truncation_warnings(pipe: Any, rows: Sequence[RenderRow]) -> list[str]:
    """A warning for each prompt past the text encoder's window, which the pipeline truncates."""
    family = family_of(pipe)
    warnings = []
    for row in rows:
        tokens = family.count_tokens(pipe, row.prompt)
        warnings.append(
            f"prompt is {tokens} tokens; rendered from its first {family.token_limit}"
            if tokens > family.token_limit
            else ""
        )
    return warnings
