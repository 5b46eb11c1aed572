"""What every model family provides: how it is recognised, loaded, bounded and called.

A family module (`tasks/families/<name>.py`) subclasses `Family` and is listed in
`tasks/families/__init__.py`. Nothing outside a family module names a pipeline class,
a denoiser attribute (`unet`, `transformer`) or a token count.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tasks.manifest import RenderRow
from tasks.rules import ManifestRules
from tasks.speed.levers import SpeedSupport


@dataclass(frozen=True)
class PresetInfo:
    """A named model a user can pass as `--model`, as `t2v models` lists it."""

    name: str  # e.g. "wan2.1-1.3b"; "<name>-random" is derived for full-size presets
    repo: str | None  # Hugging Face repo id; None for presets built in code (tiny)
    parameters: str  # e.g. "1.3 B"
    vram_gb: float | None  # GPU memory to run it resident in bf16 at its native size
    licence: str
    variant: str | None = None  # the Hub's dtype variant of its weights, e.g. "fp16"


class Family(ABC):
    """One model family: its pipelines, its manifest rules, and how a batch is rendered."""

    name: ClassVar[str]  # "ModelScope", "Wan", "LTX-Video", "CogVideoX"
    pipeline_classes: ClassVar[frozenset[str]]  # `_class_name` values in model_index.json
    rules: ClassVar[ManifestRules]  # defaults and bounds of manifest rows
    token_limit: ClassVar[int]  # the text encoder's window; longer prompts are truncated
    denoiser_name: ClassVar[str]  # the pipeline attribute that runs every step
    presets: ClassVar[tuple[PresetInfo, ...]]  # full-size and tiny presets of the family
    speed: ClassVar[SpeedSupport]  # what its denoiser offers; its `fast` and `fastest` profiles

    def denoiser(self, pipe: Any) -> torch.nn.Module:
        """The module that runs every step: for attention processors, compile and FLOPs."""
        module: torch.nn.Module = getattr(pipe, self.denoiser_name)
        return module

    def component_dtypes(self, dtype: torch.dtype) -> dict[str, torch.dtype]:
        """Components that must load in another dtype than `dtype` (e.g. Wan's VAE in fp32)."""
        return {}

    def prepare(self, pipe: Any, device: torch.device) -> None:
        """Set-up a loaded pipeline needs on `device` before rendering (attention kernels)."""
        return  # most families' pipelines are ready as loaded

    @abstractmethod
    def build_tiny(self, seed: int = 0) -> Any:
        """A few-MB pipeline of real diffusers/transformers classes, on CPU in fp32."""

    @abstractmethod
    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """The exact architecture of full-size `preset`, random weights, built on `device`;
        with `blocks`, a slice at full width: that many transformer blocks and one layer of
        the text encoder (CPU benchmarks of the levers)."""

    def call_arguments(self, rows: Sequence[RenderRow]) -> dict[str, Any]:
        """The pipeline call's arguments for rows of one batch shape, but the generators
        and the output type."""
        first = rows[0]
        return {
            "prompt": [row.prompt for row in rows],
            "negative_prompt": [row.negative_prompt for row in rows],
            "height": first.height,
            "width": first.width,
            "num_frames": first.num_frames,
            "num_inference_steps": first.num_inference_steps,
            "guidance_scale": first.guidance_scale,
        }

    def generate(
        self, pipe: Any, rows: Sequence[RenderRow], generators: list[torch.Generator]
    ) -> torch.Tensor:
        """One pipeline call for rows of one batch shape: uint8 (batch, frames, h, w, 3)
        on the pipeline's device."""
        call = self.call_arguments(rows)
        return to_uint8(pipe(**call, generator=generators, output_type="pt").frames)

    def count_tokens(self, pipe: Any, prompt: str) -> int:
        """How many tokens the family's tokenizer makes of `prompt`, before truncation."""
        return len(pipe.tokenizer(prompt, truncation=False).input_ids)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[0, 1] float video (batch, frames, channels, h, w) to uint8 (batch, frames, h, w, 3),
    rounded as diffusers' video processor rounds."""
    pixels = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 1, 3, 4, 2)
