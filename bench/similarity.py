"""How close a video's frames are to a reference video's: PSNR and SSIM over uint8 frames."""

from __future__ import annotations

import math

import numpy as np
import torch

# Wang et al. 2004: an 11×11 Gaussian window of deviation 1.5; K1 0.01 and K2 0.03 of 255.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2
FRAMES_PER_CHUNK = 8  # bounds the float copies of long, large videos


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of uint8 frames against the reference; inf if equal."""
    error = np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255**2 / error)


def ssim(frames: np.ndarray, reference: np.ndarray) -> float:
    """Mean structural similarity of uint8 frames (frames × height × width × RGB) against the
    reference, over every frame, channel and window position; 1.0 if equal."""
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    line = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    window = torch.outer(line, line) / line.sum() ** 2
    weight = window.expand(3, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, weight, groups=3)

    total, count = 0.0, 0
    for start in range(0, len(frames), FRAMES_PER_CHUNK):
        x, y = (
            torch.from_numpy(video[start : start + FRAMES_PER_CHUNK]).permute(0, 3, 1, 2).double()
            for video in (frames, reference)
        )
        mean_x, mean_y = blur(x), blur(y)
        var_x = blur(x * x) - mean_x**2
        var_y = blur(y * y) - mean_y**2
        covariance = blur(x * y) - mean_x * mean_y
        values = ((2 * mean_x * mean_y + C1) * (2 * covariance + C2)) / (
            (mean_x**2 + mean_y**2 + C1) * (var_x + var_y + C2)
        )
        total += float(values.sum())
        count += values.numel()
    return total / count
