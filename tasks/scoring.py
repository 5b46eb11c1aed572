"""How well a video shows its prompt: CLIP text–image similarity over a few of its frames.

`clip` is OpenAI's ViT-B/32 CLIP through transformers' `CLIPModel` (151 M parameters,
~0.6 GB), its weights fetched on first use or by `t2v models pull clip`; `tiny-clip` is a
CLIP of 54 thousand random weights built in code, for tests and offline trials (its
numbers mean nothing). A scorer is loaded once per process and device, like a pipeline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tasks.hub import hub_snapshot, pull

ScorerName = Literal["none", "clip", "tiny-clip"]
SCORER_REPOS = {"clip": "openai/clip-vit-base-patch32"}
SCORER_REVISION = "main"
# Cosine similarity × 100, as CLIPScore (Hessel et al., 2021) reports it. ViT-B/32 gives a
# caption that matches its image about 30; under 20 is rarely a picture of the prompt.
DEFAULT_SCORE_THRESHOLD = 20.0
SAMPLED_FRAMES = 4
# CLIP's image normalisation (transformers.image_utils.OPENAI_CLIP_MEAN and _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Scoring:
    """The run's scorer and the score under which a video is flagged `low_score`."""

    name: ScorerName
    threshold: float = DEFAULT_SCORE_THRESHOLD


class Scorer:
    """A CLIP model and its tokenizer on one device."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.image_size = int(model.config.vision_config.image_size)

    def score(self, prompt: str, frames: np.ndarray) -> float:
        """100 × the cosine similarity of `prompt` and `SAMPLED_FRAMES` evenly spaced frames
        (uint8, frames × height × width × RGB), averaged over the frames."""
        picked = np.linspace(0, len(frames) - 1, min(SAMPLED_FRAMES, len(frames))).round()
        images = self._pixels(torch.from_numpy(frames[picked.astype(int)]))
        text = self.tokenizer(
            [prompt], padding=True, truncation=True, max_length=self._text_window(),
            return_tensors="pt",
        ).to(self.device)  # fmt: skip
        with torch.inference_mode():
            # transformers 5 returns the projected embeddings as the pooler output.
            image_embeds = self.model.get_image_features(pixel_values=images).pooler_output
            text_embeds = self.model.get_text_features(**text).pooler_output
        similarity = torch.nn.functional.cosine_similarity(image_embeds, text_embeds)
        return round(100 * float(similarity.float().mean()), 2)

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC frames to CLIP's input: shorter side resized, centre-cropped, normalised."""
        images = frames.to(self.device).permute(0, 3, 1, 2).float() / 255
        height, width = images.shape[-2:]
        scale = self.image_size / min(height, width)
        size = (
            max(self.image_size, round(height * scale)),
            max(self.image_size, round(width * scale)),
        )
        images = torch.nn.functional.interpolate(images, size=size, mode="bicubic", antialias=True)
        top, left = (size[0] - self.image_size) // 2, (size[1] - self.image_size) // 2
        images = images[..., top : top + self.image_size, left : left + self.image_size]
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return ((images - mean) / std).to(self.model.dtype)

    def _text_window(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)


_lock = threading.Lock()
_scorers: dict[tuple[str, str], Scorer] = {}


def get_scorer(name: ScorerName, device: torch.device) -> Scorer:
    """The process's scorer `name` on `device`, loaded on first use."""
    key = (name, str(device))
    with _lock:
        if key not in _scorers:
            _scorers[key] = Scorer(*_load(name), device)
        return _scorers[key]


def _load(name: ScorerName) -> tuple[Any, Any]:
    from transformers import CLIPModel, CLIPTokenizer

    from tasks.families.modelscope import CLIP_MAX_TOKENS
    from tasks.families.parts import byte_tokenizer

    if name == "tiny-clip":
        return tiny_clip(), byte_tokenizer(CLIP_MAX_TOKENS)
    folder = hub_snapshot(SCORER_REPOS[name], SCORER_REVISION, None, name)
    return CLIPModel.from_pretrained(folder), CLIPTokenizer.from_pretrained(folder)


def pull_scorer(name: str) -> Path:
    """`t2v models pull clip`: the scorer's files into the Hugging Face cache."""
    return pull(SCORER_REPOS[name], SCORER_REVISION, None, name)


def tiny_clip(seed: int = 0) -> Any:
    """A two-layer CLIP of random weights over a byte vocabulary, 32×32 images."""
    from transformers import CLIPConfig, CLIPModel

    from tasks.families.modelscope import CLIP_MAX_TOKENS
    from tasks.families.parts import byte_tokenizer

    layers = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={
            **layers,
            "num_hidden_layers": 2,
            "vocab_size": len(byte_tokenizer(CLIP_MAX_TOKENS).get_vocab()),
            "max_position_embeddings": CLIP_MAX_TOKENS,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**layers, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config)
