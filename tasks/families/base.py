"""What every model family provides: how it is recognised, loaded, bounded and called.

A family module (`tasks/families/<name>.py`) subclasses `Family` and is listed in
`tasks/families/__init__.py`. Nothing outside a family module names a pipeline class,
a denoiser attribute (`unet`, `transformer`) or a token count.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tasks.images import load_image
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
    card_dtype: torch.dtype = torch.bfloat16  # the dtype its model card loads it in


@dataclass(frozen=True)
class Decoded:
    """A batch's uint8 frames (batch, frames, h, w, 3) and, per video, whether the float
    output they came from held NaN or infinity, which the conversion would hide; for a
    family with sound, each video's waveform (batch, channels, samples) in [-1, 1]."""

    pixels: torch.Tensor
    nonfinite: torch.Tensor  # bool (batch,)
    sound: torch.Tensor | None = None
    sample_rate: int = 0  # of `sound`, in Hz


class Family(ABC):
    """One model family: its pipelines, its manifest rules, and how a batch is rendered."""

    name: ClassVar[str]  # "ModelScope", "Wan", "LTX-Video", "CogVideoX"
    pipeline_classes: ClassVar[frozenset[str]]  # `_class_name` values in model_index.json
    rules: ClassVar[ManifestRules]  # defaults and bounds of manifest rows
    token_limit: ClassVar[int]  # the text encoder's window; longer prompts are truncated
    denoiser_name: ClassVar[str]  # the pipeline attribute that runs every step
    presets: ClassVar[tuple[PresetInfo, ...]]  # full-size and tiny presets of the family
    speed: ClassVar[SpeedSupport]  # what its denoiser offers; its `fast` and `fastest` profiles
    # The diffusers class that renders rows with a start image over the same loaded
    # components; None where the family takes none (its rules' `image_columns` are empty).
    image_pipeline: ClassVar[str | None] = None
    # An image-to-video-only family (its rules' `required_images`): the family whose presets
    # render rows without an image, named in those rows' errors.
    text_family: ClassVar[str] = ""
    card_fps: ClassVar[int]  # the frame rate its model card's example writes videos at
    legacy: ClassVar[str] = ""  # for a family deprecated upstream: why, and what to use instead
    has_sound: ClassVar[bool] = False  # its pipeline returns a sound track with each video

    def rules_for(self, configs: Mapping[str, Mapping[str, Any]]) -> ManifestRules:
        """The rules of one checkpoint, from its components' config.json contents by
        component (`{"vae": {...}, "transformer": {...}}`); `rules` where all agree."""
        return self.rules

    def preset_configs(self, preset: str) -> dict[str, dict[str, Any]]:
        """The published configs of `preset` that `rules_for` reads, where they differ
        from the family's defaults."""
        return {}

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

    def follow_card(self, pipe: Any) -> None:
        """What the model card's example changes in a loaded pipeline (its scheduler), as
        the GPU benchmark's baseline runs it."""
        return  # most cards run the pipeline as loaded

    @abstractmethod
    def build_tiny(self, seed: int = 0) -> Any:
        """A few-MB pipeline of real diffusers/transformers classes, on CPU in fp32."""

    def build_tiny_preset(self, preset: str, seed: int = 0) -> Any:
        """The tiny pipeline of `preset`, a tiny preset of this family."""
        return self.build_tiny(seed)

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
    ) -> Decoded:
        """One pipeline call for rows of one batch shape: uint8 (batch, frames, h, w, 3)
        on the pipeline's device."""
        call = self.call_arguments(rows)
        if rows[0].image is not None:
            pipe, call = self.image_pipe(pipe), {**call, **self.image_arguments(rows)}
        return to_uint8(pipe(**call, generator=generators, output_type="pt").frames)

    def image_pipe(self, pipe: Any) -> Any:
        """`image_pipeline` over `pipe`'s own components and settings (`pipe` itself when it
        is one), as `from_pipe` builds it but leaving each component's dtype as loaded
        (`from_pipe` casts all to one dtype)."""
        import diffusers

        if self.image_pipeline is None:
            raise ValueError(f"`rows` have start images, which {self.name} cannot render.")
        if type(pipe).__name__ == self.image_pipeline:
            return pipe
        cls = getattr(diffusers, self.image_pipeline)
        expected, optional = cls._get_signature_keys(cls)
        shared = {name: getattr(pipe, name, None) for name in expected}
        settings = {name: pipe.config[name] for name in optional if name in pipe.config}
        image_pipe = cls(
            **{n: v for n, v in shared.items() if v is not None or n in optional}, **settings
        )
        image_pipe.set_progress_bar_config(disable=True)
        return image_pipe

    def image_arguments(self, rows: Sequence[RenderRow]) -> dict[str, Any]:
        """The image pipeline's image arguments: each row's start image at the row's size."""
        return {
            "image": [
                load_image(row.image, row.width, row.height, row.image_fit)
                for row in rows
                if row.image is not None
            ]
        }

    def count_tokens(self, pipe: Any, prompt: str) -> int:
        """How many tokens the family's tokenizer makes of `prompt`, before truncation."""
        return len(pipe.tokenizer(prompt, truncation=False).input_ids)


def to_uint8(frames: torch.Tensor) -> Decoded:
    """[0, 1] float video (batch, frames, channels, h, w) to uint8 (batch, frames, h, w, 3),
    rounded as diffusers' video processor rounds."""
    pixels = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Decoded(pixels.permute(0, 1, 3, 4, 2), nonfinite(frames))


def nonfinite(batch: torch.Tensor) -> torch.Tensor:
    """Whether each item of `batch` (its first dimension) holds NaN or ±inf: one sum, which
    is not finite if any value is not, instead of a boolean mask the size of the batch."""
    return ~batch.flatten(1).sum(dim=1, dtype=torch.float32).isfinite()
