"""Run logs a person can read: expected failures in one line, tracebacks only for bugs."""

from __future__ import annotations

import logging

from tasks.errors import T2VError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _ExpectedFailures(logging.Filter):
    """Drops the traceback from records about our own errors (a bad manifest, missing
    weights, failed rows): their message already says what and why."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], T2VError):
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = _ExpectedFailures()


def keep_expected_failures_to_one_line() -> None:
    """Install the filter on Prefect's run loggers (once, however often it is called)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
