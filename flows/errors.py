"""The run's and the command line's errors; the engine's are in `tasks.errors`."""

from __future__ import annotations

from tasks.errors import T2VError
from tasks.results import RunSummary, format_counts


class ParameterError(T2VError):
    """A parameter, or a `T2V_*` environment variable, breaks its rule."""


class PrefectApiError(T2VError):
    """The Prefect API cannot be used: unreachable, not a Prefect API, or refusing us."""


class CredentialsError(T2VError):
    """A credentials block is missing or malformed; the message never holds its value."""


class CodeError(T2VError):
    """A deployment's code cannot be recorded (`prefect deploy`) or fetched (a flow run)."""


class RowsFailedError(T2VError):
    """Some rows ended `failed` or `invalid`; raised after the results manifest is written.

    `stopped` says why rendering stopped early (a failed device, an interrupt), when it did.
    """

    def __init__(self, summary: RunSummary, stopped: str | None = None) -> None:
        message = f"{format_counts(summary.counts)}; see {summary.results}"
        if stopped:
            message = f"{stopped}; rendering stopped, rerun to resume; {message}"
        super().__init__(message)
        self.summary = summary
        self.stopped = stopped
