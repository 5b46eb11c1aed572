"""The configured Prefect API a `t2v render` talks to, checked before anything runs (with no
PREFECT_API_URL, it talks to a temporary server: `flows.temporary_server`)."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable

import httpx

from flows.errors import PrefectApiError

HEALTH_TIMEOUT_S = 5.0
CHECK_DEADLINE_S = 10.0
# What a Prefect server answers at these paths of its API, and other servers do not.
PREFECT_ANSWERS: dict[str, Callable[[object], bool]] = {
    "/health": lambda answer: answer is True,
    "/admin/version": lambda answer: isinstance(answer, str) and answer[:1].isdigit(),
}
FIX = "start it with `make server`, or unset PREFECT_API_URL to use a temporary local server"


def check_api(url: str) -> None:
    """Refuse, in one sentence, an API URL that does not answer as a Prefect server: its
    health is `true` and its version a version string, both within CHECK_DEADLINE_S."""
    answers: list[tuple[str, httpx.Response] | httpx.HTTPError] = []
    asking = threading.Thread(target=_ask_prefect, args=(url, answers), daemon=True)
    asking.start()
    asking.join(CHECK_DEADLINE_S)  # a server that trickles bytes never times out a read
    if not answers:
        raise PrefectApiError(
            f"the Prefect API at PREFECT_API_URL={url} gave no complete answer within "
            f"{CHECK_DEADLINE_S:g} s: {FIX}"
        )
    for answer in answers:
        if isinstance(answer, httpx.HTTPError):
            raise PrefectApiError(
                f"cannot reach the Prefect API at PREFECT_API_URL={url} ({_reason(answer)}): {FIX}"
            ) from answer
        _check_answer(url, *answer)


def _ask_prefect(url: str, answers: list[tuple[str, httpx.Response] | httpx.HTTPError]) -> None:
    base = url.rstrip("/")
    try:
        with httpx.Client(headers=_auth_headers(), timeout=HEALTH_TIMEOUT_S) as client:
            found = [(path, client.get(base + path)) for path in PREFECT_ANSWERS]
    except httpx.HTTPError as exc:
        answers.append(exc)
    else:
        answers.extend(found)


def _check_answer(url: str, path: str, response: httpx.Response) -> None:
    if response.status_code in (401, 403):
        raise PrefectApiError(
            f"the Prefect API at PREFECT_API_URL={url} refused t2v (HTTP "
            f"{response.status_code}): set PREFECT_API_AUTH_STRING (or PREFECT_API_KEY) as the "
            "server expects"
        )
    try:
        answered = response.json() if response.status_code == 200 else None
    except ValueError:
        answered = None
    if not PREFECT_ANSWERS[path](answered):
        shown = f"HTTP {response.status_code}" if answered is None else "not as Prefect does"
        raise PrefectApiError(
            f"PREFECT_API_URL={url} is not a Prefect API ({url.rstrip('/')}{path} answered "
            f"{shown}; the URL usually ends in /api): {FIX}"
        )


def _auth_headers() -> dict[str, str]:
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    if key := os.environ.get("PREFECT_API_KEY"):
        return {"Authorization": f"Bearer {key}"}
    return {}


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unknown"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {HEALTH_TIMEOUT_S:g} s"
    return type(exc).__name__
