"""The temporary Prefect server's own process: `python -m flows.serve_temporary PORT PARENT`.

It ends when t2v (PARENT) ends, keeps its runs in a database of its own beside, never
inside, the one `prefect server start` (`make server`) serves from the same PREFECT_HOME,
and creates or migrates that database one server at a time.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import IO

TEMPORARY_DATABASE = "t2v-temporary.db"
_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    port, parent = int(argv[0]), int(argv[1])
    _die_with(parent)
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    database = Path(get_current_settings().home).expanduser() / TEMPORARY_DATABASE
    database.parent.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{database}"
    refresh_global_settings_context()
    # Two servers creating (or migrating) one SQLite file at once fail; one at a time they
    # share it. The lock is the kernel's, so a killed server never leaves it held.
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        asyncio.run(_serve(port, lock))


async def _serve(port: int, lock: IO[str]) -> None:
    import uvicorn

    config = uvicorn.Config(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    fcntl.flock(lock, fcntl.LOCK_UN)  # started: the database is created and migrated
    await serving
    if not server.started:
        sys.exit(3)  # as uvicorn's own command does when a server fails to start


def _die_with(parent: int) -> None:
    """End with SIGTERM when t2v ends, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # t2v died before the line above took effect
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
