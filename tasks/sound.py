"""A video's sound track: a float waveform and its sample rate, written as 16-bit PCM WAV
for ffmpeg to encode beside the frames."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # publishing, which encodes, runs where torch is not imported
    import torch


@dataclass(frozen=True)
class Sound:
    """A waveform (channels × samples, float in [-1, 1]) at `sample_rate` Hz."""

    waveform: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        if self.waveform.ndim != 2 or self.waveform.shape[1] < 1:
            raise ValueError(
                f"`waveform` has to be (channels, samples) but is {self.waveform.shape}."
            )
        if self.sample_rate < 1:
            raise ValueError(f"`sample_rate` has to be positive but is {self.sample_rate}.")


def write_wav(sound: Sound, path: Path) -> None:
    """`sound` as a 16-bit PCM WAV file at `path`, channels interleaved."""
    samples = np.round(np.clip(sound.waveform, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[0])
        out.setsampwidth(2)
        out.setframerate(sound.sample_rate)
        out.writeframes(np.ascontiguousarray(samples.T).tobytes())


def sound_tracks(
    waveforms: torch.Tensor | None, sample_rate: int, count: int
) -> list[Sound | None]:
    """Each of a batch's `count` videos' sound from its waveforms (batch × channels ×
    samples); None for each where the family makes none."""
    if waveforms is None:
        return [None] * count
    return [Sound(waveform, sample_rate) for waveform in waveforms.cpu().numpy()]
