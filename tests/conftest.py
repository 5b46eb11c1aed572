"""Shared fixtures: an offline Prefect home, one test server per session, the tiny model."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Before Prefect is imported anywhere: a private home, no analytics, no Hub access.
_PREFECT_HOME = tempfile.mkdtemp(prefix="t2v-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
# The flow's and the CLI's default model is ms-1.7b, whose weights cannot be fetched here;
# T2V_MODEL changes that default, as it would for a user.
os.environ["T2V_MODEL"] = "tiny-random"
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by `make browser`
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium for Playwright, which never downloads a browser; required in CI."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing; `make browser` installs it")
    return CHROMIUM


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """One Prefect test server (SQLite in a temporary folder) for the whole session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        url = PREFECT_API_URL.value()
        assert url
        yield url


@pytest.fixture(scope="session")
def tiny_pipe() -> Any:
    """The process's cached tiny-random pipeline on CPU."""
    import torch

    from tasks.devices import get_pipeline
    from tasks.presets import resolve_model

    return get_pipeline(resolve_model("tiny-random"), torch.device("cpu"))


@pytest.fixture
def cli_env(tmp_path: Path, prefect_api_url: str) -> dict[str, str]:
    """Environment for a `t2v` subprocess that talks to the session's Prefect server."""
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=prefect_api_url,
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        TMPDIR=str(tmp_path),
    )
    return env


@pytest.fixture(scope="session")
def rendered_demo(
    prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Any]]:
    """examples/prompts.csv rendered by the flow once per session: (destination, results)."""
    import dataclasses
    import json

    from flows.parameters import RenderRequest
    from flows.render_flow import render_manifest
    from tasks.publish import ResultRow

    out = tmp_path_factory.mktemp("demo-out")
    render_manifest(
        **RenderRequest(
            manifest=str(REPO / "examples" / "prompts.csv"), destination=str(out)
        ).parameters()
    )
    names = {field.name for field in dataclasses.fields(ResultRow)}
    rows = json.loads((out / "results.json").read_text())["rows"]
    return out, [ResultRow(**{k: v for k, v in row.items() if k in names}) for row in rows]


# Fake credentials, distinctive enough to find if any output ever leaks them.
FAKE_ACCESS_KEY_ID = "AKIAT2VFAKEKEYID0001"
FAKE_SECRET_ACCESS_KEY = "t2vFAKEsecret+NeverInOutput/0123456789abc"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port for the session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The server's endpoint and fake credentials, set here and returned for subprocesses;
    the backend makes its default client afresh from them."""
    from storage.s3 import reset_client

    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,  # nothing from the machine's own AWS set-up
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    reset_client()
    yield env
    reset_client()


@pytest.fixture
def s3_bucket(s3_env: dict[str, str]) -> str:
    """A new versioned bucket on the server: each version of a key is one PUT that landed."""
    import uuid

    from storage.s3 import s3_client

    bucket = f"t2v-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    s3_client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def prefect_records() -> list[str]:
    """Everything the session's Prefect server shows about runs, as JSON: every log line,
    flow run (parameters included) and artifact, and every block as the API shows it to
    anyone who does not ask for secrets. Tests scan it for credentials."""
    from prefect import get_client

    records: list[str] = []
    with get_client(sync_client=True) as client:
        readers: list[Callable[..., list[Any]]] = [
            client.read_logs, client.read_flow_runs, client.read_artifacts
        ]  # fmt: skip
        for read in readers:
            offset = 0
            while page := read(limit=200, offset=offset):
                records.extend(item.model_dump_json() for item in page)
                offset += len(page)
        documents = client.read_block_documents(include_secrets=False)
        records.extend(document.model_dump_json() for document in documents)
    return records


@pytest.fixture
def gpu_slot(prefect_api_url: str) -> Iterator[Any]:
    """A Prefect tag concurrency limit `gpu` of one slot, for one test only."""
    from prefect import get_client
    from prefect.concurrency.services import _no_limits_cache

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
        # Prefect 3.9 remembers for 5 s that a tag had no limit when a task last ran here.
        _no_limits_cache.clear()
        try:
            yield client
        finally:
            client.delete_concurrency_limit_by_tag("gpu")
