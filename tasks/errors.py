"""t2v-batch's exception tree; every error is raised `from` the library error behind it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from storage.errors import StorageError, T2VError

if TYPE_CHECKING:
    from tasks.render import RenderOutcome

__all__ = [
    "DeviceFailedError",
    "ManifestError",
    "ModelLoadError",
    "RenderError",
    "RowError",
    "StorageError",
    "T2VError",
    "first_line",
]


class ManifestError(T2VError):
    """The manifest as a whole cannot be used: unreadable, not CSV, no `prompt` column, no rows."""


class RowError(T2VError):
    """One manifest row breaks a rule; the rest of the manifest is unaffected."""


class ModelLoadError(T2VError):
    """The requested model or device cannot be loaded."""


class RenderError(T2VError):
    """A render failed for the rows it was given."""


class DeviceFailedError(RenderError):
    """The device cannot be used again by this process: a fatal CUDA error, or a render that
    hung. Retrying in the process is futile; a rerun, in a fresh process, resumes.

    `reason` says what happened to the device; `outcomes` holds each row of the batch:
    rendered before the failure, or failed.
    """

    def __init__(self, message: str, reason: str, outcomes: Sequence[RenderOutcome]) -> None:
        super().__init__(message)
        self.reason = reason
        self.outcomes = list(outcomes)

    # Prefect pickles a failed task's exception when it persists results.
    def __reduce__(self) -> tuple[type[DeviceFailedError], tuple[str, str, list[RenderOutcome]]]:
        return type(self), (str(self), self.reason, self.outcomes)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
