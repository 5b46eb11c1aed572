"""FLOPs of one video (counted on a pipeline call of its family) and the dense bf16 peak of
a GPU."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from tasks.families import family_of
from tasks.manifest import RenderRow
from tasks.render_call import device_of

# Dense (no sparsity) bf16/fp16 tensor-core peaks in TFLOP/s, from the vendor data sheets;
# matched in this order against the CUDA device name.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),  # the H100's chip with more memory
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


@dataclass(frozen=True)
class VideoFlops:
    """FLOPs of one video: each denoising step (classifier-free guidance included) and the
    rest of the call (text encoding, VAE decoding)."""

    step: float
    rest: float
    steps: int

    @property
    def total(self) -> float:
        return self.step * self.steps + self.rest


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU, or None when the name is not in the table."""
    for prefix, peak in PEAK_TFLOPS:
        if prefix in device_name:
            return peak
    return None


def count_video_flops(pipe: Any, row: RenderRow) -> VideoFlops:
    """Count the family's own call (`Family.generate`) for `row` at 2 and at 3 steps: the
    difference is one step, the rest does not grow with steps. Two short calls instead of
    one at `row`'s steps, and no module named, so every family is counted alike. Not at 1
    step: LTX-Video's scheduler finds no step index in a 1-step schedule."""
    two = _flops(pipe, replace(row, num_inference_steps=2))
    three = _flops(pipe, replace(row, num_inference_steps=3))
    step = three - two
    return VideoFlops(step=step, rest=two - 2 * step, steps=row.num_inference_steps)


def _flops(pipe: Any, row: RenderRow) -> float:
    # FlopCounterMode's module tracker hooks the gradient of every module argument that
    # requires one, and fails on a parameter handed to a submodule (SANA-Video's
    # `scale_shift_table`) in inference mode; nothing here trains.
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.requires_grad_(False)
    generator = torch.Generator(device=device_of(pipe)).manual_seed(row.seed)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        family_of(pipe).generate(pipe, [row], [generator])
    return float(counter.get_total_flops())
