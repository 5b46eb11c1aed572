"""t2v-batch's exception tree; every error is raised `from` the library error behind it."""

from __future__ import annotations

from storage.errors import StorageError, T2VError

__all__ = [
    "BudgetError",
    "DeviceFailedError",
    "EncodeError",
    "ManifestError",
    "ModelLoadError",
    "RenderError",
    "RowError",
    "SettingsError",
    "ShardError",
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
    """The device cannot be used again by this process: a fatal CUDA error. Retrying in the
    process is futile; a rerun, in a fresh process, resumes. It never leaves the render
    module: a batch reports it as its `BatchResult.device_failure`."""


class BudgetError(T2VError):
    """A run asks for more videos, or more rendering work, than its budget allows."""


class EncodeError(T2VError):
    """ffmpeg could not turn frames into an MP4."""


class SettingsError(T2VError):
    """An environment variable of the process's settings (tasks/settings.py) breaks its rule."""


class ShardError(T2VError):
    """A sharded run cannot go on: a location its workers cannot share, a worker whose
    weights differ from the ones the run planned with."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
