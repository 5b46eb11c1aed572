"""The process's settings that are not run parameters, each read from its environment
variable and described once here. A bad value is refused where it is used (one line
naming the variable, its value and the rule), never when a module is imported."""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.errors import SettingsError, first_line


class ProcessSettings(BaseSettings):
    """Where this process runs: who it is, what it shares with other machines."""

    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True
    )

    worker_name: str = Field(
        default="",
        validation_alias="WORKER_NAME",
        description=(
            "Who renders in this process, as results.json names it (`make worker` exports "
            "it to its runs); the host's name when unset."
        ),
    )
    shared_folder: bool = Field(
        default=False,
        validation_alias="T2V_SHARED_FOLDER",
        description=(
            "1 when every worker of a sharded run sees local manifests and destinations at "
            "the same path (a network mount); without it, sharded runs need s3:// locations."
        ),
    )
    code_repo: str = Field(
        default="",
        validation_alias="T2V_CODE_REPO",
        description=(
            "At `prefect deploy`: the git remote's name or URL whose commit workers clone "
            "and run; when unset, workers run the deploying folder."
        ),
    )


def settings() -> ProcessSettings:
    """The settings as the environment holds them now."""
    try:
        return ProcessSettings()
    except ValidationError as exc:
        error = exc.errors()[0]  # its location is the variable's name
        message = first_line(ValueError(error["msg"]))
        raise SettingsError(f"{error['loc'][0]}={error.get('input')!r}: {message}") from exc
