"""Cheap checks of a rendered video on the frames already in memory: no model, no GPU pass.

Thresholds are in levels of 255, measured on every `STRIDE`-th pixel of each row and
column (1 in 64 pixels, which keeps the checks far under 1 % of a render):

| flag | a frame or video is flagged when |
|---|---|
| `nan` | the pipeline's float output held a non-finite value (NaN, ±inf) |
| `black` | a frame's mean is under `BLACK_MEAN` |
| `uniform` | a frame not black varies by under `UNIFORM_STD` (standard deviation) in each colour |
| `frozen` | 2+ frames, and no two successive differ by `FROZEN_CHANGE` (mean absolute change) |
| `low_score` | a scorer ran (`--score`) and the video scored under its threshold |

A video holding NaN, or black or a single flat colour in every frame, is a render fault,
not a video: `Inspection.fault` says so in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

STRIDE = 8
BLACK_MEAN = 8.0
UNIFORM_STD = 2.0
FROZEN_CHANGE = 0.5

BLACK_OR_NAN = "the render produced black/NaN frames"


@dataclass(frozen=True)
class Inspection:
    """What the checks found in one video: its flags, a warning naming them, and the
    sentence that fails the row when the video is a render fault ("" when it is not)."""

    flags: tuple[str, ...]
    warning: str = ""
    fault: str = ""
    score: float | None = None  # when a scorer ran (tasks.scoring)

    def scored(self, score: float, threshold: float) -> Inspection:
        """This inspection with the video's score, flagged `low_score` under `threshold`."""
        if score >= threshold:
            return replace(self, score=score)
        low = f"low_score: {score:g} under {threshold:g}"
        warning = f"{self.warning}; {low}" if self.warning else f"flagged {low}"
        return replace(self, flags=(*self.flags, "low_score"), warning=warning, score=score)


def inspect_video(frames: np.ndarray, nonfinite: bool = False) -> Inspection:
    """Check uint8 frames (frames × height × width × RGB); `nonfinite` tells whether the
    float output they were converted from held NaN or infinity."""
    sample = frames[:, ::STRIDE, ::STRIDE].astype(np.float32)
    means = sample.mean(axis=(1, 2, 3))
    black = means < BLACK_MEAN
    flat = sample.std(axis=(1, 2)).max(axis=1) < UNIFORM_STD  # per colour channel
    uniform = flat & ~black
    changes = np.abs(np.diff(sample, axis=0)).mean(axis=(1, 2, 3))
    frozen = len(frames) > 1 and bool(changes.max() < FROZEN_CHANGE)
    count = len(frames)
    found = {
        "nan": "non-finite values in the decoded output" if nonfinite else "",
        "black": f"{black.sum()} of {count} frames near-black" if black.any() else "",
        "uniform": f"{uniform.sum()} of {count} frames near-uniform" if uniform.any() else "",
        "frozen": f"no change between frames above {FROZEN_CHANGE:g} levels" if frozen else "",
    }
    flags = tuple(flag for flag, why in found.items() if why)
    warning = "flagged " + "; ".join(f"{flag}: {found[flag]}" for flag in flags) if flags else ""
    # A constant decoder output (a zeroed or saturated VAE) is flat grey or another colour,
    # not only black: the same fault, and the flags tell which.
    fault = BLACK_OR_NAN if nonfinite or black.all() or flat.all() else ""
    return Inspection(flags, warning, fault)


@dataclass(frozen=True)
class Candidate:
    """One seed a row rendered, and what became of it: results.json lists each."""

    seed: int
    flags: tuple[str, ...] = ()
    score: float | None = None
    error: str = ""
    kept: bool = False
