"""A configured Prefect server, watched while `t2v render` runs on it.

Prefect's client tries each call six times over about a minute once it has reached a
server, so a run whose server stopped would stall for minutes at every call. A server that
has answered nothing for `GONE_AFTER_S` is gone: t2v then ends the run itself
(`flows.salvage`).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

GONE_AFTER_S = 3.0
CHECK_EVERY_S = 0.5
# A busy server may be slow to answer: only a server silent this long counts as silent.
CHECK_TIMEOUT_S = 5.0
# What a proxy answers for a server behind it that is down.
PROXY_ERRORS = frozenset({502, 503, 504})


class ServerWatch:
    """Asks `api_url`'s health endpoint every `CHECK_EVERY_S` in a daemon thread."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._gone = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="t2v-server-watch", daemon=True)

    def start(self) -> ServerWatch:
        self._thread.start()
        return self

    def gone(self) -> bool:
        """Whether the server has answered nothing for `GONE_AFTER_S` seconds."""
        return self._gone.is_set()

    def confirms_gone(self) -> bool:
        """Whether a run that just failed lost its server: at once False if the server
        answers, else whether it stays silent long enough to count as gone."""
        if answers(self.api_url):
            return False
        return self._gone.wait(GONE_AFTER_S + CHECK_TIMEOUT_S + CHECK_EVERY_S)

    def _watch(self) -> None:
        failing_since: float | None = None
        while True:
            asked = time.monotonic()
            if answers(self.api_url):
                failing_since = None
            else:
                failing_since = asked if failing_since is None else failing_since
                if time.monotonic() - failing_since >= GONE_AFTER_S:
                    self._gone.set()
                    return
            time.sleep(max(0.0, CHECK_EVERY_S - (time.monotonic() - asked)))


def answers(api_url: str) -> bool:
    """Whether a server answers at `api_url` at all: a refusal (no credentials) answers too."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=CHECK_TIMEOUT_S):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code not in PROXY_ERRORS
    except (OSError, ValueError):
        return False
