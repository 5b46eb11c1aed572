"""The flow's parameters as one pydantic model, so the Prefect UI shows (and checks) a form."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from storage.s3 import MAX_PRESIGN_EXPIRY
from tasks.budget import DEFAULT_MAX_ROWS, DEFAULT_MAX_WORK, REFERENCE_WORK
from tasks.manifest import MAX_ROWS

DATE_PLACEHOLDER = "{date}"


class RenderRequest(BaseModel):
    """What to render, with which model, and where the videos go."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(
        "examples/prompts.csv",
        description=(
            "Prompt CSV: a local path or s3://bucket/key.csv. {date} becomes the run's "
            "scheduled date (YYYY-MM-DD), e.g. s3://bucket/prompts/{date}.csv."
        ),
        min_length=1,
    )
    destination: str = Field(
        "out",
        description=(
            "Folder or s3://bucket/prefix for the videos, results.csv, results.json and "
            "index.html. {date} becomes the run's scheduled date."
        ),
        min_length=1,
    )
    model: str = Field(
        "tiny-random",
        description="A preset (ms-1.7b, ms-1.7b-random, tiny-random) or a save_pretrained folder.",
        min_length=1,
    )
    device: str = Field(
        "auto",
        description="auto (CUDA when present), cpu, cuda or cuda:N.",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
    )
    batch_size: int = Field(
        4, description="Compatible rows rendered per pipeline call.", ge=1, le=64
    )
    force: bool = Field(False, description="Render rows again even when their video exists.")
    limit: int | None = Field(
        None, description="Process only the first N rows of the manifest.", ge=1
    )
    max_rows: int = Field(
        DEFAULT_MAX_ROWS,
        description="Refuse the run, before any model loads, if the manifest has more valid rows.",
        ge=1,
        le=MAX_ROWS,
    )
    max_work: int = Field(
        DEFAULT_MAX_WORK,
        description=(
            "Refuse the run, before any model loads, if its rows add up to more frames × height "
            f"× width × steps (a 16-frame 256×256 video with 25 steps is {REFERENCE_WORK:,})."
        ),
        ge=1,
    )
    aws_credentials_block: str | None = Field(
        None,
        description=(
            "Name of a Prefect Secret block whose JSON value holds aws_access_key_id and "
            "aws_secret_access_key (optionally aws_session_token) for s3:// locations; "
            "when unset, the worker's standard AWS chain (environment, ~/.aws, instance role)."
        ),
        min_length=1,
    )
    render_timeout_scale: float = Field(
        1.0,
        description=(
            "Multiplies each render's timeout, which grows with its rows, frames, size and "
            "steps; raise it on slow hardware. A render past it counts as hung."
        ),
        gt=0,
        le=1000,
    )
    presign_expiry: int | None = Field(
        None,
        description=(
            "Link the gallery's videos by presigned URLs valid this many seconds "
            "(s3:// destinations, at most 7 days); relative links when unset."
        ),
        ge=1,
        le=MAX_PRESIGN_EXPIRY,
    )

    @field_validator("presign_expiry")
    @classmethod
    def _presign_needs_s3(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not str(info.data.get("destination", "")).startswith("s3://"):
            raise ValueError("presigned links need an s3:// destination")
        return value

    def on_date(self, day: dt.date) -> RenderRequest:
        """This request with every {date} in the manifest and destination filled in."""
        stamp = day.isoformat()
        return self.model_copy(
            update={
                "manifest": self.manifest.replace(DATE_PLACEHOLDER, stamp),
                "destination": self.destination.replace(DATE_PLACEHOLDER, stamp),
            }
        )
