"""The model card's way of running a family, the GPU benchmark's baseline: its dtype, its
offload, its scheduler, and its output written as `export_to_video` writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.loading import quiet_libraries
from tasks.manifest import RenderRow
from tasks.presets import PRESETS, build_in_memory, resolve_model

EXPORT_TO_VIDEO_FPS = 10  # diffusers' export_to_video default
DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def baseline_pipeline(model: str, device: torch.device) -> Any:
    """The model card's set-up: its dtype, its scheduler, `enable_model_cpu_offload()`.

    Offload, per card: ModelScope's calls `enable_model_cpu_offload()`; CogVideoX's calls
    it too and names sequential offload and VAE slicing/tiling as further memory savers;
    Wan's and LTX-Video's diffusers snippets load to the GPU and diffusers' docs for both
    give model offload as the memory recipe. Model offload is used for all four: it keeps
    the call's shape and costs one host-device copy of each component per call, where
    sequential offload would copy every layer every step.
    """
    preset = PRESETS[model]
    family = preset.family
    quiet_libraries()
    dtype = baseline_dtype(model) if device.type == "cuda" else torch.float32
    pipe = build_in_memory(resolve_model(model), device, dtype).to(device=device, dtype=dtype)
    for name, component_dtype in family.component_dtypes(dtype).items():
        getattr(pipe, name).to(dtype=component_dtype)  # Wan's card loads its VAE in fp32
    family.follow_card(pipe)
    if device.type == "cuda":  # offload needs an accelerator; the dry run stays resident
        pipe.enable_model_cpu_offload(device=device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def baseline_dtype(model: str) -> torch.dtype:
    """The dtype the model card of `model`'s preset loads its pipeline in, on a GPU."""
    return PRESETS[model].info.card_dtype


def export_like_diffusers(
    frames: np.ndarray, row: RenderRow, folder: Path, fps: int = EXPORT_TO_VIDEO_FPS
) -> None:
    """`diffusers.utils.export_to_video` without the `imageio` package it needs.

    The same steps: float frames × 255 cast to uint8 (PIL frames are uint8 already),
    written by imageio's ffmpeg writer defaults (libx264, yuv420p, quality 5, 16-pixel
    macro blocks) at `fps`.
    """
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(folder / f"baseline-{row.id}.mp4"),
        (width, height),
        fps=fps,
        quality=5,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=16,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        pixels = frame if frame.dtype == np.uint8 else (frame * 255).astype(np.uint8)
        # imageio's ffmpeg plugin makes each frame contiguous before handing it on.
        writer.send(np.ascontiguousarray(pixels))
    writer.close()
