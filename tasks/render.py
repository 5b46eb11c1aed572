"""Render micro-batches of compatible rows: one pipeline call, one generator per row."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.errors import RenderError, first_line
from tasks.manifest import RenderRow
from tasks.models import CLIP_MAX_TOKENS, ModelRef, device_lock, get_pipeline, quiet_diffusers

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


def render_rows(model: ModelRef, device: str, rows: Sequence[RenderRow]) -> list[RenderOutcome]:
    """Render one micro-batch of `model` on `device`, holding the device only while rendering."""
    return _render_splitting_on_oom(get_pipeline(model, torch.device(device)), rows)


def _render_splitting_on_oom(pipe: Any, rows: Sequence[RenderRow]) -> list[RenderOutcome]:
    """On CUDA out-of-memory, render each half alone; a single row that still fails is failed."""
    try:
        with device_lock(pipe.unet.device):
            return list(render_batch(pipe, rows))
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        if len(rows) == 1:
            return [FailedRender(rows[0], f"out of GPU memory: {first_line(exc)}")]
        half = len(rows) // 2
        return _render_splitting_on_oom(pipe, rows[:half]) + _render_splitting_on_oom(
            pipe, rows[half:]
        )


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
        raise RenderError(f"render of {len(rows)} row(s) failed: {first_line(exc)}") from exc
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
