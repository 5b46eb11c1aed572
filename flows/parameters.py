"""The run's request: its parameters validated together, their defaults and `T2V_*` variables.

The flow's signature (so the Prefect UI shows one form field per parameter, and a
deployment overrides them one by one), the `t2v render` options and the `T2V_*`
environment variables that change the defaults all come from here; each parameter's
type, bounds and description are in `flows.parameter_types`.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.errors import ParameterError
from flows.form_schema import with_bounds
from flows.parameter_types import (
    AttentionLever,
    AwsCredentialsBlock,
    BatchSize,
    CacheLever,
    CompileLever,
    Destination,
    Device,
    Force,
    ImageRoot,
    Limit,
    ManifestUri,
    MaxRows,
    MaxWork,
    ModelName,
    PresignExpiry,
    QuantizeLever,
    RenderTimeoutScale,
    S3Endpoint,
    ScoreName,
    ScoreThreshold,
    SpeedProfile,
)
from tasks.budget import DEFAULT_MAX_ROWS, DEFAULT_MAX_WORK
from tasks.errors import first_line
from tasks.families import Family
from tasks.scoring import DEFAULT_SCORE_THRESHOLD, Scoring
from tasks.speed import Levers, resolve_levers
from tasks.speed.levers import PARSERS

DATE_PLACEHOLDER = "{date}"
ENV_PREFIX = "T2V_"


class RenderRequest(BaseSettings):
    """What to render, with which model, and where the videos go.

    Fields left out take their `T2V_<NAME>` environment variable, else the default here.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    manifest: ManifestUri = "examples/prompts.csv"
    destination: Destination = "out"
    model: ModelName = "ms-1.7b"
    device: Device = "auto"
    batch_size: BatchSize = 4
    force: Force = False
    limit: Limit = None
    max_rows: MaxRows = DEFAULT_MAX_ROWS
    max_work: MaxWork = DEFAULT_MAX_WORK
    aws_credentials_block: AwsCredentialsBlock = None
    s3_endpoint: S3Endpoint = None
    render_timeout_scale: RenderTimeoutScale = 1.0
    presign_expiry: PresignExpiry = None
    speed: SpeedProfile = "exact"
    attention: AttentionLever = None
    cache: CacheLever = None
    compile: CompileLever = None
    quantize: QuantizeLever = None
    image_root: ImageRoot = None
    score: ScoreName = "none"
    score_threshold: ScoreThreshold = DEFAULT_SCORE_THRESHOLD

    @field_validator("attention", "cache", "compile", "quantize")
    @classmethod
    def _lever(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else PARSERS[str(info.field_name)](value)

    @field_validator("presign_expiry")
    @classmethod
    def _presign_needs_s3(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not str(info.data.get("destination", "")).startswith("s3://"):
            raise ValueError("presigned links need an s3:// destination")
        return value

    def on_date(self, day: Callable[[], dt.date]) -> RenderRequest:
        """This request with every {date} in the manifest and destination filled in with
        `day()`, asked for only where there is one."""
        if DATE_PLACEHOLDER not in self.manifest + self.destination:
            return self
        stamp = day().isoformat()
        return self.model_copy(
            update={
                "manifest": self.manifest.replace(DATE_PLACEHOLDER, stamp),
                "destination": self.destination.replace(DATE_PLACEHOLDER, stamp),
            }
        )

    def scoring(self) -> Scoring | None:
        """The scorer each video goes through, if any."""
        return None if self.score == "none" else Scoring(self.score, self.score_threshold)

    def levers(self, family: Family) -> Levers:
        """The speed levers for `family`: its profile, each lever set here over it."""
        return resolve_levers(
            family.speed,
            self.speed,
            attention=self.attention,
            cache=self.cache,
            compile=self.compile,
            quantize=self.quantize,
        )

    def parameters(self) -> dict[str, Any]:
        """The flow's keyword arguments for this request."""
        return self.model_dump()

    def shard_parameters(self) -> dict[str, Any]:
        """The parameters a sharded run passes on to each shard's run."""
        return self.model_dump(exclude=set(PARENT_ONLY))


# What the parent of a sharded run applies before any shard starts (the rows to read, the
# run's budget, the gallery's links): its shards do not take them.
PARENT_ONLY = frozenset({"limit", "max_rows", "max_work", "presign_expiry"})


def build_request(option: Callable[[str], str] = str, **values: Any) -> RenderRequest:
    """A validated request, values left out taken from `T2V_*` variables; one sentence
    naming the parameter (as `option` spells it) or the variable that breaks its rule."""
    try:
        return RenderRequest(**values)
    except ValidationError as exc:
        raise ParameterError(_first_error(exc, values, option)[1]) from exc


def request_from(arguments: Mapping[str, Any]) -> RenderRequest:
    """The request a flow's arguments make: every parameter as given, a parameter the flow
    does not take at its built-in default; no variable is read (the flow's signature did)."""
    values = {
        name: arguments.get(name, field.default)
        for name, field in RenderRequest.model_fields.items()
    }
    return build_request(**values)


def defaults() -> RenderRequest:
    """The defaults in force: each valid `T2V_*` variable over the built-in default. A bad
    variable is left out, so that importing a flow or `t2v --help` never fails on one;
    `build_request` refuses it where its parameter is not given."""
    return _defaults_and_errors()[0]


def variable_errors() -> list[str]:
    """A sentence for each `T2V_*` variable of a run parameter that breaks its rule."""
    return _defaults_and_errors()[1]


def _defaults_and_errors() -> tuple[RenderRequest, list[str]]:
    fallback: dict[str, Any] = {}
    errors: list[str] = []
    while True:
        try:
            return RenderRequest(**fallback), errors
        except ValidationError as exc:
            name, message = _first_error(exc, fallback, str)
            if name in fallback:  # a built-in default cannot break a rule; a bug if it does
                raise
            fallback[name] = RenderRequest.model_fields[name].default
            errors.append(message)


def _first_error(
    exc: ValidationError, values: Mapping[str, Any], option: Callable[[str], str]
) -> tuple[str, str]:
    """The field of the first error, and a sentence naming where its value came from."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    given = values.get(name, error.get("input"))
    source = option(name) if name in values else f"{ENV_PREFIX}{name.upper()}"
    message = first_line(ValueError(error["msg"])).removeprefix("Value error, ")
    return name, f"{source}={given!r}: {message}"


F = TypeVar("F", bound=Callable[..., Any])


def describe_parameters(fn: F) -> F:
    """Give `fn` an `Args:` section made of the request's field descriptions: Prefect's
    form takes each parameter's description from the flow's docstring."""
    lines = [
        f"    {name}: {with_bounds(field)}" for name, field in RenderRequest.model_fields.items()
    ]
    fn.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\nArgs:\n" + "\n".join(lines)
    return fn


# The flows' signatures' defaults: the environment as it was when they were imported.
DEFAULTS = defaults()
