"""The run's parameters as annotated types: each one's type, bounds and description.

The flows' signatures, the `t2v render` options and the Prefect form all read them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, WithJsonSchema

from flows.form_schema import OpensOnValue
from storage.s3 import MAX_PRESIGN_EXPIRY
from tasks.budget import REFERENCE_WORK
from tasks.manifest import MAX_ROWS
from tasks.presets import PRESETS
from tasks.scoring import ScorerName
from tasks.speed import Speed
from tasks.speed.levers import ATTENTION_ALIASES, CACHES, COMPILES, QUANTIZATIONS

ManifestUri = Annotated[
    str,
    Field(
        min_length=1,
        description=(
            "Prompt CSV: a local path or s3://bucket/key.csv. {date} becomes the run's "
            "scheduled date (YYYY-MM-DD), e.g. s3://bucket/prompts/{date}.csv."
        ),
    ),
]
Destination = Annotated[
    str,
    Field(
        min_length=1,
        description=(
            "Folder or s3://bucket/prefix for the videos, results.csv, results.json and "
            "index.html. {date} becomes the run's scheduled date."
        ),
    ),
]
# Any string validates (a folder, a Hub repo id); the form offers the presets in a dropdown.
ModelName = Annotated[
    str,
    Field(min_length=1, description="A preset, a folder saved with save_pretrained, or org/repo."),
    WithJsonSchema(
        {
            "title": "model",
            "description": "A preset, a folder saved with save_pretrained, or a Hub repo org/name.",
            "anyOf": [
                # Prefect's form opens a string on the first branch typed "string".
                {"title": "preset", "type": "string", "enum": list(PRESETS)},
                {"title": "folder or Hub repo", "type": "string", "minLength": 1},
            ],
        }
    ),
]
Device = Annotated[
    Literal[
        "auto",
        "cpu",
        "cuda",
        "cuda:0",
        "cuda:1",
        "cuda:2",
        "cuda:3",
        "cuda:4",
        "cuda:5",
        "cuda:6",
        "cuda:7",
    ],
    Field(description="auto (CUDA when present), cpu, cuda (the first visible GPU) or cuda:N."),
]
BatchSize = Annotated[
    int, Field(ge=1, le=64, description="Compatible rows rendered per pipeline call.")
]
Force = Annotated[bool, Field(description="Render rows again even when their video exists.")]
Limit = Annotated[
    int | None,
    Field(ge=1, description="Process only the first N rows of the manifest."),
    OpensOnValue(),
]
MaxRows = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_ROWS,
        description="Refuse the run, before any model loads, if the manifest has more valid rows.",
    ),
]
MaxWork = Annotated[
    int,
    Field(
        ge=1,
        description=(
            "Refuse the run, before any model loads, if its rows add up to more frames × height "
            f"× width × steps (a 16-frame 256×256 video with 25 steps is {REFERENCE_WORK:,})."
        ),
    ),
]
AwsCredentialsBlock = Annotated[
    str | None,
    Field(
        min_length=1,
        description=(
            "Prefect block with AWS keys for s3:// locations: aws-credentials/NAME (an "
            "AwsCredentials block), secret/NAME (a Secret block whose JSON value holds "
            "aws_access_key_id and aws_secret_access_key, optionally aws_session_token), or "
            "NAME (the AwsCredentials block, else the Secret block, of that name); when unset, "
            "the worker's standard AWS chain (environment, ~/.aws, instance role)."
        ),
    ),
    OpensOnValue(),
]
S3Endpoint = Annotated[
    str | None,
    Field(
        pattern=r"^https?://",
        description=(
            "S3-compatible server for s3:// locations (http:// or https:// URL), passed to a "
            "sharded run's workers so that they reach the store the run checked; when unset, "
            "each worker's AWS_ENDPOINT_URL, else AWS."
        ),
    ),
]
RenderTimeoutScale = Annotated[
    float,
    Field(
        gt=0,
        le=1000,
        description=(
            "Multiplies each render's timeout, which grows with its rows, frames, size and "
            "steps; raise it on slow hardware. A render past it counts as hung."
        ),
    ),
]
PresignExpiry = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_PRESIGN_EXPIRY,
        description=(
            "Link the gallery's videos by presigned URLs valid this many seconds "
            "(s3:// destinations); relative links when unset."
        ),
    ),
    OpensOnValue(),
]

SpeedProfile = Annotated[
    Speed,
    Field(
        description=(
            "exact: the model card's recipe; fast: levers that keep the video close to exact "
            "(a conservative step cache, an exact attention kernel, compiling); fastest: more "
            "aggressive (FP8 where the GPU has it). `t2v models` lists each family's."
        )
    ),
]
AttentionLever = Annotated[
    str | None,
    Field(
        description=(
            f"Attention kernel ({'|'.join(ATTENTION_ALIASES)} or a diffusers backend name), "
            "over the speed profile's choice."
        )
    ),
    OpensOnValue(),
]
CacheLever = Annotated[
    str | None,
    Field(description=f"Step cache ({'|'.join(CACHES)}), over the speed profile's choice."),
    OpensOnValue(),
]
CompileLever = Annotated[
    str | None,
    Field(
        description=(
            f"Compile the denoiser ({'|'.join(COMPILES)}; 0 and 1 as off and full), over the "
            "speed profile's choice."
        )
    ),
    OpensOnValue(),
]
QuantizeLever = Annotated[
    str | None,
    Field(
        description=(
            f"Quantize the denoiser's weights ({'|'.join(QUANTIZATIONS)}, with torchao), over "
            "the speed profile's choice."
        )
    ),
    OpensOnValue(),
]
ImageRoot = Annotated[
    str | None,
    Field(
        min_length=1,
        description=(
            "A local folder start images may also come from; otherwise a local manifest's "
            "images stay inside its folder. A manifest in S3 never reaches local files."
        ),
    ),
]

ScoreName = Annotated[
    ScorerName,
    Field(
        description=(
            "Score each video against its prompt: clip (CLIP ViT-B/32 over a few frames, "
            "weights fetched on first use or by `t2v models pull clip`), tiny-clip (built "
            "in code, meaningless numbers, for tests), or none."
        )
    ),
]
ScoreThreshold = Annotated[
    float,
    Field(
        ge=0,
        le=100,
        description="A score under this (CLIP similarity × 100) flags the video `low_score`.",
    ),
]
