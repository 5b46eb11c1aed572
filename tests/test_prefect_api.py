"""A configured PREFECT_API_URL is checked for what only a Prefect API answers, within a
deadline for the whole check, before anything is written."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.factories import t2v_main

Answer = Callable[[BaseHTTPRequestHandler], None]


@contextlib.contextmanager
def _serving(answer: Answer) -> Iterator[str]:
    """An HTTP server on a free loopback port answering every GET with `answer`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with contextlib.suppress(OSError):
                answer(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def _body(text: str, content_type: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        data = text.encode()
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return answer


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    """A 200 whose body comes one byte every 2 s: no single read ever times out."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(2)


@pytest.mark.parametrize(
    "answer",
    [
        _body("<html><body>Welcome</body></html>", "text/html"),
        _body("{}", "application/json"),
        _body("true", "application/json"),  # /health alone is not enough
        _trickle,
    ],
    ids=["html", "empty-object", "health-only", "trickle"],
)
def test_a_server_that_is_not_a_prefect_api_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    answer: Answer,
) -> None:
    with _serving(answer) as url:
        monkeypatch.setenv("PREFECT_API_URL", url)
        out = tmp_path / "out"
        started = time.monotonic()
        code, stdout, stderr = t2v_main(
            capsys, "render", str(REPO / "examples/prompts.csv"), "--model", "tiny-random",
            "--out", str(out),
        )  # fmt: skip
        took = time.monotonic() - started
    assert code == 2, stderr
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert f"PREFECT_API_URL={url}" in stderr and "Prefect API" in stderr
    assert not out.exists()
    assert took < 30, f"{took:.0f} s to refuse"


def test_the_session_prefect_server_passes_the_check(prefect_api_url: str) -> None:
    from flows.prefect_api import check_api

    check_api(prefect_api_url)
