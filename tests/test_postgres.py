"""`make server` on PostgreSQL, as a server many workers share should run: Debian's
postgresql started by `make postgres`, and a sharded render through it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from flows.cli import EXIT_OK
from tests.conftest import REPO
from tests.prefect_stack import flow_runs, free_port, make, running_server, running_worker
from tests.test_shards import _bucket, _finish, _manifest, _render, _results, _s3_env

pytestmark = pytest.mark.slow


def _psql(url_port: int, query: str) -> str:
    command = ["psql", "-h", "127.0.0.1", "-p", str(url_port), "-U", "prefect", "-d", "prefect"]
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*as_owner, *command, "-tAc", query],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_a_sharded_run_through_a_server_on_postgresql(tmp_path: Path, s3_server: str) -> None:
    # The cluster's folder must be reachable by the `postgres` user: not under pytest's 0700 tmp.
    cluster = Path(tempfile.mkdtemp(prefix="t2v-postgres-"))
    cluster.chmod(0o755)
    port = free_port()
    postgres = make(REPO, "-s", "postgres", f"PG_DATA={cluster}/data", f"PG_PORT={port}")
    started = subprocess.run(postgres, capture_output=True, text=True, check=True)
    url = started.stdout.strip().splitlines()[-1]
    assert url == f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    try:
        database = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": url}
        with running_server(tmp_path, database) as server:
            server.env.update(_s3_env(s3_server))
            deploy = make(server.project, "deploy")
            subprocess.run(deploy, env=server.env, check=True, capture_output=True)
            bucket = _bucket(server, _manifest(6))
            since = time.time()
            with (
                running_worker(server, tmp_path / "w1.log", "w1"),
                running_worker(server, tmp_path / "w2.log", "w2"),
            ):
                render = _render(server, bucket, "--shards", "3", "--batch-size", "1")
                code, output = _finish(render, 300)
            assert code == EXIT_OK, output
            assert "6 rows: 6 ok" in output
            rows = _results(server, bucket)["rows"]
            assert {row["status"] for row in rows} == {"ok"}
            shards = [r for r in flow_runs(server, "shard") if r.created.timestamp() >= since]
            assert len(shards) == 3
        # The server kept its state in PostgreSQL, none in a SQLite file.
        assert not list((tmp_path / "prefect-home").glob("*.db"))
        assert int(_psql(port, "SELECT count(*) FROM flow_run")) >= 4  # the parent, 3 shards
    finally:
        subprocess.run([*make(REPO, "-s", f"PG_DATA={cluster}/data"), "postgres-stop"], check=False)
        shutil.rmtree(cluster, ignore_errors=True)
