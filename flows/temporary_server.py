"""The temporary Prefect server of a `t2v render` with no PREFECT_API_URL.

It is launched first thing, before t2v imports torch, so that it boots while t2v imports
its code and checks its input, and is waited for only when the run needs it. Hence this
module imports nothing but the standard library until then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0
# A server still starting has no run to finish: it gets this long, then SIGKILL.
START_STOP_GRACE_S = 1.0
# Set by a user for `prefect server start`; a temporary server uses its own file instead.
DATABASE_URL_VARIABLES = frozenset(
    {"PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"}
)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TemporaryServer:
    """A Prefect server on a free loopback port, for one `t2v render`.

    Unlike Prefect's own temporary server, it runs in a session of its own, so the
    terminal's Ctrl-C reaches t2v alone (which then finishes the run through the server),
    and the kernel ends it when t2v dies, even by SIGKILL: no run leaves a server behind.
    Its runs go to a database of their own (`flows.serve_temporary`), so they never show
    up in a team's server. Until it is ready, Ctrl-C or SIGTERM stop it and end t2v.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self._process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads a pipe while the server runs, and a full one
        # would block it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self._stopping = False
        self._handlers: dict[int, Any] = {}

    def launch(self) -> None:
        """Start the server's process and return at once; `wait_until_ready` waits for it."""
        env = {
            **{k: v for k, v in os.environ.items() if k not in DATABASE_URL_VARIABLES},
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get(
                "PREFECT_SERVER_ANALYTICS_ENABLED", "false"
            ),
        }
        self._handlers = {sig: signal.signal(sig, self._end_t2v) for sig in STOP_SIGNALS}
        command = [sys.executable, "-m", "flows.serve_temporary", str(self.port), str(os.getpid())]
        self._process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )

    def wait_until_ready(self) -> None:
        """Wait until the server answers; then signals go back to their handlers."""
        import httpx

        from flows.errors import PrefectApiError

        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            with httpx.Client(timeout=2.0) as client:
                while time.monotonic() < deadline:
                    if self.exit_code() is not None:
                        raise PrefectApiError(
                            f"the temporary Prefect server exited with status "
                            f"{self.exit_code()} while starting: {self._stderr_tail()}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(self.url + "/health").status_code == 200:
                            return
                    time.sleep(0.05)
        finally:
            self._restore_signals()
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
        self._restore_signals()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._stderr.close()

    def _end_t2v(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C or SIGTERM before the run started: nothing has run, and the run's own
        handlers are not in place yet."""
        self.stop(grace_s=START_STOP_GRACE_S)
        name = signal.Signals(signum).name
        print(
            f"t2v: interrupted by {name} before the run started; nothing was rendered",
            file=sys.stderr,
        )
        os._exit(128 + signum)

    def _restore_signals(self) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers = {}

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "no output"


@contextlib.contextmanager
def temporary_server() -> Iterator[TemporaryServer]:
    """A server launched now and stopped on the way out, however t2v leaves."""
    server = TemporaryServer()
    try:
        server.launch()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def server_for(argv: Sequence[str]) -> Iterator[TemporaryServer | None]:
    """The temporary server a `t2v` command line will run on, launched now; None for any
    other command, or with PREFECT_API_URL set. Used before the command line is parsed: an
    option that turns out invalid stops the server again, a second after its launch."""
    commands = [word for word in argv if not word.startswith("-")]
    if commands[:1] != ["render"] or os.environ.get("PREFECT_API_URL"):
        yield None
        return
    with temporary_server() as server:
        yield server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
