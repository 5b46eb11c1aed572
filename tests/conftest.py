"""Shared fixtures: an offline Prefect home, one test server per session, the tiny model."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before Prefect is imported anywhere: a private home, no analytics, no Hub access.
_PREFECT_HOME = tempfile.mkdtemp(prefix="t2v-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parent.parent


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

    from tasks.models import get_pipeline, resolve_model

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
        RenderRequest(manifest=str(REPO / "examples" / "prompts.csv"), destination=str(out))
    )
    names = {field.name for field in dataclasses.fields(ResultRow)}
    rows = json.loads((out / "results.json").read_text())["rows"]
    return out, [ResultRow(**{k: v for k, v in row.items() if k in names}) for row in rows]
