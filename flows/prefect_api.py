"""The Prefect API a `t2v render` talks to: the configured server, checked before anything
runs, or a temporary local one that lives and dies with this process."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
# Set by a user for `prefect server start`; a temporary server uses its own file instead.
DATABASE_URL_VARIABLES = frozenset(
    {"PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"}
)
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0
# A server still starting has no run to finish: it gets this long, then SIGKILL.
START_STOP_GRACE_S = 1.0
_PR_SET_PDEATHSIG = 1


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


TEMPORARY_DATABASE = "t2v-temporary.db"


def temporary_database() -> Path:
    """The SQLite file temporary servers keep their runs in: beside, never inside, the
    database `prefect server start` (`make server`) serves from the same PREFECT_HOME."""
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser() / TEMPORARY_DATABASE


class TemporaryServer:
    """A Prefect server on a free loopback port, for one `t2v render` with no configured API.

    Unlike Prefect's own temporary server, it runs in a session of its own, so the
    terminal's Ctrl-C reaches t2v alone (which then finishes the run through the server),
    and the kernel ends it when t2v dies, even by SIGKILL: no run leaves a server behind.
    Its runs go to a database of their own (`temporary_database`), so they never show up
    in a team's server.
    """

    def __init__(self) -> None:
        self.database = temporary_database()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self._process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads a pipe while the server runs, and a full one
        # would block it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self._stopping = False

    def start(self) -> None:
        import prefect

        command = [
            sys.executable, "-m", "uvicorn",
            "--app-dir", str(Path(prefect.__file__).parent.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "error", "--lifespan", "on",
        ]  # fmt: skip
        env = {
            **{k: v for k, v in os.environ.items() if k not in DATABASE_URL_VARIABLES},
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.database}",
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get(
                "PREFECT_SERVER_ANALYTICS_ENABLED", "false"
            ),
        }
        parent = os.getpid()
        self.database.parent.mkdir(parents=True, exist_ok=True)
        # Two servers creating (or migrating) one SQLite file at once fail; one at a time
        # they share it. The lock is the kernel's, so a killed t2v never leaves it held.
        with open(f"{self.database}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                start_new_session=True,
                preexec_fn=lambda: _die_with(parent),
            )
            self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.exit_code() is not None:
                    raise PrefectApiError(
                        f"the temporary Prefect server exited with status {self.exit_code()} "
                        f"while starting: {self._stderr_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/health").status_code == 200:
                        return
                time.sleep(0.1)
        self.stop()
        raise PrefectApiError(
            f"the temporary Prefect server did not start within {START_TIMEOUT_S:g} s"
        )

    def exit_code(self) -> int | None:
        """The server's exit status once it has ended, else None."""
        return None if self._process is None else self._process.poll()

    def died(self) -> bool:
        """True when the server ended without t2v asking it to."""
        return not self._stopping and self.exit_code() is not None

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._stderr.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "no output"


@contextlib.contextmanager
def temporary_server() -> Iterator[TemporaryServer]:
    server = TemporaryServer()
    try:
        with _ended_by_signals(server):
            server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def _ended_by_signals(server: TemporaryServer) -> Iterator[None]:
    """While the server starts, Ctrl-C or SIGTERM stop it, say so and end t2v: nothing has
    run yet, and the run's own handlers are not in place before it has started."""

    def end(signum: int, frame: object) -> None:
        server.stop(grace_s=START_STOP_GRACE_S)
        name = signal.Signals(signum).name
        print(
            f"t2v: interrupted by {name} while starting the temporary Prefect server; "
            "nothing was rendered",
            file=sys.stderr,
        )
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, end) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _die_with(parent: int) -> None:
    """In the server's process, before it runs: end with SIGTERM when t2v ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # t2v died before the line above took effect
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
