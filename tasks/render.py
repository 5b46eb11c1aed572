"""Render micro-batches of compatible rows: one pipeline call, one generator per row.

What batching promises. Each row has a generator of its own, so its noise never depends on
its batch-mates; but batched matmuls and convolutions sum in another order, so its frames
equal the frames of the row rendered alone within a tolerance, not bit for bit. Measured on
CPU in fp32 with tiny-random, batches of 2, 4 and 8 against each row alone: at most 1 level
of 255 apart, on at most 0.01 % of values (8 frames of 64x64 at 3 steps, and 16 frames of
128x128 at 10 steps); tests/test_render.py holds each family to its tolerance. H.264 turns
a 1-level difference into up to 14 levels in decoded frames and into other MP4 bytes, so:
the output key hashes the model and the row's parameters, never its batch; the sha256 a
result records is that of the bytes stored; and a stored video is never compared by bytes
with a new render of its row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.budget import work
from tasks.errors import DeviceFailedError, RenderError, first_line
from tasks.manifest import RenderRow
from tasks.models import (
    CLIP_MAX_TOKENS,
    ModelRef,
    device_failure,
    device_lock,
    get_pipeline,
    mark_device_failed,
    quiet_diffusers,
)

BatchShape = tuple[int, int, int, int, float]


@dataclass(frozen=True)
class RenderedVideo:
    """One row's frames (uint8, frames × height × width × RGB) and what rendering it cost."""

    row: RenderRow
    frames: np.ndarray
    render_s: float
    warning: str = ""


@dataclass(frozen=True)
class FailedRender:
    row: RenderRow
    error: str


RenderOutcome = RenderedVideo | FailedRender


def batch_shape(row: RenderRow) -> BatchShape:
    """Rows that share this tuple can go through one pipeline call."""
    return (row.height, row.width, row.num_frames, row.num_inference_steps, row.guidance_scale)


def plan_batches(rows: Iterable[RenderRow], batch_size: int) -> list[list[RenderRow]]:
    """Group compatible rows, keeping input order inside and across groups, in chunks."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` has to be at least 1 but is {batch_size}.")
    groups: dict[BatchShape, list[RenderRow]] = {}
    for row in rows:
        groups.setdefault(batch_shape(row), []).append(row)
    return [
        group[start : start + batch_size]
        for group in groups.values()
        for start in range(0, len(group), batch_size)
    ]


# A render that runs longer than its timeout is taken as hung. The timeout grows with the
# work, rows × frames × height × width × steps (in megapixel-steps), at a rate per device
# type, and never goes under a floor. The rates are ten times what the largest preset
# (ms-1.7b, ≈ 9.5 TFLOP per megapixel-step with guidance) needs on slow hardware of the
# type: a T4-class GPU (≈ 25 TFLOP/s achieved), a CPU at ≈ 0.5 TFLOP/s. The CUDA floor also
# covers a first render that compiles the UNet (T2V_COMPILE). Slow hardware, or
# max-autotune compiling, raises them all with the flow's `render_timeout_scale`
# (`t2v render --render-timeout-scale`, default $T2V_RENDER_TIMEOUT_SCALE).
@dataclass(frozen=True)
class TimeoutRule:
    floor_s: float
    s_per_megapixel_step: float


RENDER_TIMEOUTS = {"cuda": TimeoutRule(900.0, 4.0), "cpu": TimeoutRule(600.0, 200.0)}


def render_timeout(rows: Sequence[RenderRow], device_type: str, scale: float = 1.0) -> float:
    """Seconds after which a render of `rows` on a device of `device_type` counts as hung."""
    rule = RENDER_TIMEOUTS[device_type]
    megapixel_steps = sum(work(row) for row in rows) / 1e6
    return scale * max(rule.floor_s, rule.s_per_megapixel_step * megapixel_steps)


def not_rendered(reason: str) -> str:
    """The error of a row left unrendered because its device failed earlier in the process."""
    return f"not rendered: the device failed earlier in this process ({reason}); rerun to resume"


def render_rows(
    model: ModelRef, device: str, rows: Sequence[RenderRow], timeout_scale: float = 1.0
) -> list[RenderOutcome]:
    """Render one micro-batch of `model` on `device`, holding the device only while rendering.

    Raises DeviceFailedError, with every row's outcome, when a fatal CUDA error or a hung
    render leaves the device unusable by this process, and from then on at once.
    """
    pipe = get_pipeline(model, torch.device(device))
    target = pipe.unet.device
    timeout_s = render_timeout(rows, target.type, timeout_scale)
    with device_lock(target):
        reason = device_failure(target)
        if reason is not None:
            raise _device_failed(not_rendered(reason), reason, rows, [])
        return _render_watched(pipe, rows, timeout_s)


def _render_watched(pipe: Any, rows: Sequence[RenderRow], timeout_s: float) -> list[RenderOutcome]:
    """Render in a thread of its own, and give up on it after `timeout_s`.

    A thread stuck in a CUDA call can be neither interrupted nor joined: it is a daemon, so
    that it does not keep the process from exiting, and the device is marked failed, so
    that nothing else in the process waits behind it or shares the pipeline with it.
    """
    outcomes: list[RenderOutcome] = []
    errors: list[BaseException] = []

    def render() -> None:
        try:
            _render_splitting_on_oom(pipe, rows, outcomes)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            errors.append(exc)

    worker = threading.Thread(target=render, name="t2v-render", daemon=True)
    worker.start()
    worker.join(timeout_s)
    device = pipe.unet.device
    if worker.is_alive():
        reason = f"render timed out after {timeout_s:g} s"
        mark_device_failed(device, reason)
        raise _device_failed(reason, reason, rows, list(outcomes))
    if not errors:
        return outcomes
    error = errors[0]
    if isinstance(error, DeviceFailedError):
        mark_device_failed(device, error.reason)
        raise _device_failed(str(error), error.reason, rows, outcomes) from error
    raise error


def _device_failed(
    error: str, reason: str, rows: Sequence[RenderRow], finished: Sequence[RenderOutcome]
) -> DeviceFailedError:
    """The failure with every row's outcome: those finished before it, the rest failed."""
    done = {outcome.row.line for outcome in finished}
    failed = [FailedRender(row, error) for row in rows if row.line not in done]
    return DeviceFailedError(error, reason, [*finished, *failed])


def _render_splitting_on_oom(
    pipe: Any, rows: Sequence[RenderRow], outcomes: list[RenderOutcome], split: bool = False
) -> None:
    """Append each row's outcome. On CUDA out-of-memory, render each half alone; a single
    row that still runs out is failed. Once split, another render error fails only its own
    rows, so that the task's retry never renders rows again."""
    try:
        outcomes.extend(render_batch(pipe, rows))
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
    _render_splitting_on_oom(pipe, rows[:half], outcomes, split=True)
    _render_splitting_on_oom(pipe, rows[half:], outcomes, split=True)


def render_batch(pipe: Any, rows: Sequence[RenderRow]) -> list[RenderedVideo]:
    """One pipeline call for rows of one `batch_shape`; frames equal rendering each row alone."""
    # 1. Check inputs
    shapes = {batch_shape(row) for row in rows}
    if len(shapes) != 1:
        raise ValueError(f"`rows` have to share one batch shape but have {sorted(shapes)}.")
    height, width, num_frames, steps, guidance = shapes.pop()
    device = pipe.unet.device
    started = time.perf_counter()
    # 2. One generator per row, so a row's noise does not depend on its batch-mates
    generators = [torch.Generator(device=device).manual_seed(row.seed) for row in rows]
    # 3. Denoise in one call, keeping latents, so decoding can be sized to memory
    try:
        with torch.inference_mode(), quiet_diffusers():
            latents = pipe(
                prompt=[row.prompt for row in rows],
                negative_prompt=[row.negative_prompt for row in rows],
                height=height,
                width=width,
                num_frames=num_frames,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
                output_type="latent",
            ).frames
            # 4. Decode and convert to uint8 on the device, so only bytes cross to the host
            videos = decode_to_uint8(pipe, latents)
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
            raise DeviceFailedError(reason, reason, []) from exc
        raise RenderError(f"render of {len(rows)} row(s) failed: {message}") from exc
    elapsed = (time.perf_counter() - started) / len(rows)
    warnings = truncation_warnings(pipe.tokenizer, rows)
    return [
        RenderedVideo(row, video, elapsed, warning)
        for row, video, warning in zip(rows, videos, warnings, strict=True)
    ]


def decode_to_uint8(pipe: Any, latents: torch.Tensor, frames_per_chunk: int = 16) -> np.ndarray:
    """VAE-decode (batch, channels, frames, h, w) latents chunk by chunk into uint8 RGB video."""
    batch, channels, num_frames, height, width = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * num_frames, channels, height, width)
    flat = flat / pipe.vae.config.scaling_factor
    chunks = [
        _to_uint8(pipe.vae.decode(flat[start : start + frames_per_chunk]).sample)
        for start in range(0, flat.shape[0], frames_per_chunk)
    ]
    frames = torch.cat(chunks).cpu().numpy()
    return frames.reshape(batch, num_frames, *frames.shape[1:])


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] NCHW images to uint8 NHWC, as diffusers' image processor rounds them."""
    pixels = (images.float() / 2 + 0.5).clamp(0, 1)
    return (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def truncation_warnings(tokenizer: Any, rows: Sequence[RenderRow]) -> list[str]:
    """A warning for each prompt past CLIP's token window, which the pipeline truncates."""
    warnings = []
    for row in rows:
        tokens = len(tokenizer(row.prompt, truncation=False).input_ids)
        warnings.append(
            f"prompt is {tokens} tokens; rendered from its first {CLIP_MAX_TOKENS}"
            if tokens > CLIP_MAX_TOKENS
            else ""
        )
    return warnings
