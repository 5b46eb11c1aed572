"""Render micro-batches of compatible rows: one pipeline call, one generator per row.

A row's frames match its frames rendered alone within the tolerance `tasks.batching` states.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.batching import batch_shape, render_timeout
from tasks.devices import device_failure, device_turns, get_pipeline, mark_device_failed
from tasks.errors import DeviceFailedError, RenderError, first_line
from tasks.families import family_of
from tasks.interrupt import INTERRUPTED, stop_requested
from tasks.manifest import RenderRow
from tasks.presets import ModelRef
from tasks.quality import Candidate, inspect_video
from tasks.scoring import Scorer, Scoring, get_scorer
from tasks.sound import Sound, sound_tracks
from tasks.speed import EXACT, Levers
from tasks.speed.apply import reset_step_cache
from tasks.start_images import read_start_images


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


@dataclass(frozen=True)
class BatchResult:
    """Every row's outcome, in the batch's order, and why the device failed, if it did:
    then nothing else in this process may render on it, and a rerun resumes. `started` and
    `ended` (time.time()) bound the batch's hold on the device; 0 when it never held it."""

    outcomes: list[RenderOutcome]
    device_failure: str | None = None
    started: float = 0.0
    ended: float = 0.0


def not_rendered(reason: str) -> str:
    """The error of a row left unrendered because its device failed earlier in the process."""
    return f"not rendered: the device failed earlier in this process ({reason}); rerun to resume"


# How often a render's watcher looks for a stop request.
STOP_POLL_S = 0.1


def render_rows(
    model: ModelRef,
    device: str,
    rows: Sequence[RenderRow],
    timeout_scale: float = 1.0,
    levers: Levers = EXACT,
    ticket: int | None = None,
    scoring: Scoring | None = None,
) -> BatchResult:
    """Render one micro-batch of `model` on `device`, holding the device only while rendering,
    once the renders queued before `ticket` (tasks.devices.DeviceTurns) have had their turn.

    A fatal CUDA error or a hung render leaves the device unusable by this process: the
    result says why, and every later call renders nothing. Once a stop is requested
    (tasks.interrupt), a render in flight is abandoned and none starts.
    """
    try:
        if stop_requested():
            return _interrupted(rows, [])
        pipe = get_pipeline(model, torch.device(device), levers)
        target = device_of(pipe)
        scorer = None if scoring is None else (get_scorer(scoring.name, target), scoring.threshold)
        unreadable = [FailedRender(row, error) for row, error in read_start_images(rows)]
        ready = [row for row in rows if row.line not in {f.row.line for f in unreadable}]
        if not ready:
            return BatchResult(list(unreadable))
        timeout_s = render_timeout(ready, target.type, timeout_scale)
        with device_turns(target).turn(ticket):
            started = time.time()
            if (reason := device_failure(target)) is not None:
                result = _device_failed(not_rendered(reason), reason, ready, [])
            elif stop_requested():  # asked while this batch waited for the device
                result = _interrupted(ready, [])
            else:
                result = _render_watched(pipe, ready, timeout_s, scorer)
            position = {row.line: n for n, row in enumerate(rows)}
            outcomes = sorted([*result.outcomes, *unreadable], key=lambda o: position[o.row.line])
            return dataclasses.replace(
                result, outcomes=outcomes, started=started, ended=time.time()
            )
    finally:
        if ticket is not None:  # a render that never took its turn lets the later ones go
            device_turns(device).leave(ticket)


# The process's scorer and the score under which a video is flagged `low_score`.
ScoreBy = tuple[Scorer, float] | None


def _render_watched(
    pipe: Any, rows: Sequence[RenderRow], timeout_s: float, scorer: ScoreBy = None
) -> BatchResult:
    """Render in a thread of its own; give up on it after `timeout_s`, or at once when a
    stop is requested.

    A thread stuck in a CUDA call can be neither interrupted nor joined: it is a daemon, so
    that it does not keep the process from exiting. After a timeout the device is marked
    failed, so that nothing else in the process waits behind it or shares the pipeline with
    it; after a stop request no render starts anyway.
    """
    outcomes: list[RenderOutcome] = []
    errors: list[BaseException] = []

    def render() -> None:
        try:
            _render_splitting_on_oom(pipe, rows, outcomes, scorer)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            errors.append(exc)

    worker = threading.Thread(target=render, name="t2v-render", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout_s
    while True:
        worker.join(min(STOP_POLL_S, max(0.0, deadline - time.monotonic())))
        if not worker.is_alive():
            break
        if stop_requested():
            return _interrupted(rows, list(outcomes))
        if time.monotonic() >= deadline:
            reason = f"render timed out after {timeout_s:g} s"
            mark_device_failed(device_of(pipe), reason)
            return _device_failed(reason, reason, rows, list(outcomes))
    if not errors:
        return BatchResult(outcomes)
    error = errors[0]
    if isinstance(error, DeviceFailedError):
        mark_device_failed(device_of(pipe), str(error))
        return _device_failed(str(error), str(error), rows, outcomes)
    raise error


def _interrupted(rows: Sequence[RenderRow], finished: Sequence[RenderOutcome]) -> BatchResult:
    """The rows finished before a stop request, and the rest failed as interrupted."""
    done = {outcome.row.line for outcome in finished}
    rest = [FailedRender(row, INTERRUPTED) for row in rows if row.line not in done]
    return BatchResult([*finished, *rest])


def _device_failed(
    error: str, reason: str, rows: Sequence[RenderRow], finished: Sequence[RenderOutcome]
) -> BatchResult:
    """The failure with every row's outcome: those finished before it, the rest failed."""
    done = {outcome.row.line for outcome in finished}
    failed = [FailedRender(row, error) for row in rows if row.line not in done]
    return BatchResult([*finished, *failed], reason)


def _render_splitting_on_oom(
    pipe: Any,
    rows: Sequence[RenderRow],
    outcomes: list[RenderOutcome],
    scorer: ScoreBy = None,
    split: bool = False,
) -> None:
    """Append each row's outcome. On CUDA out-of-memory, render each half alone; a single
    row that still runs out is failed. Once split, another render error fails only its own
    rows, so that the task's retry never renders rows again."""
    try:
        outcomes.extend(map(as_asked, render_batch(pipe, rows, scorer)))
        return
    except torch.cuda.OutOfMemoryError as exc:
        error = f"out of GPU memory: {first_line(exc)}"
    except DeviceFailedError:
        raise
    except RenderError as exc:
        if not split:
            raise
        outcomes.extend(FailedRender(row, str(exc)) for row in rows)
        return
    # Only past the except block are the failed attempt's traceback, and the activations
    # its frames hold, gone, so that the allocator can give their memory back.
    torch.cuda.empty_cache()
    if len(rows) == 1:
        outcomes.append(FailedRender(rows[0], error))
        return
    half = len(rows) // 2
    _render_splitting_on_oom(pipe, rows[:half], outcomes, scorer, split=True)
    _render_splitting_on_oom(pipe, rows[half:], outcomes, scorer, split=True)


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
