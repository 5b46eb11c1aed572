"""FLOPs of one video (counted on the meta device) and the dense bf16 peak of a GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

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
    """FLOPs of one video: the UNet (classifier-free guidance doubles its batch) and the rest."""

    unet_step: float
    vae_decode: float
    text_encoder: float
    steps: int

    @property
    def total(self) -> float:
        return self.unet_step * self.steps + self.vae_decode + self.text_encoder


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU, or None when the name is not in the table."""
    for prefix, peak in PEAK_TFLOPS:
        if prefix in device_name:
            return peak
    return None


def count_video_flops(pipe: Any, height: int, width: int, frames: int, steps: int) -> VideoFlops:
    """Count FLOPs on meta-device copies of the pipeline's modules: no memory, no compute."""
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    channels = pipe.unet.config.in_channels
    latent = (channels, frames, height // scale, width // scale)
    tokens = pipe.tokenizer.model_max_length
    with torch.device("meta"), torch.inference_mode():
        unet = type(pipe.unet).from_config(pipe.unet.config)
        vae = type(pipe.vae).from_config(pipe.vae.config)
        text_encoder = type(pipe.text_encoder)(pipe.text_encoder.config)
        # Classifier-free guidance runs the UNet and text encoder on prompt and negative prompt.
        unet_step = _flops(
            unet,
            torch.randn(2, *latent),
            torch.tensor([999, 999]),
            encoder_hidden_states=torch.randn(2, tokens, pipe.unet.config.cross_attention_dim),
        )
        vae_decode = _flops(vae.decode, torch.randn(frames, channels, *latent[2:]))
        text = _flops(text_encoder, torch.zeros(2, tokens, dtype=torch.long))
    return VideoFlops(unet_step, vae_decode, text, steps)


def _flops(module: Any, *args: Any, **kwargs: Any) -> float:
    with FlopCounterMode(display=False) as counter:
        module(*args, **kwargs)
    return float(counter.get_total_flops())
