"""`T2V_*` variables as the real `t2v` command reads them: a bad one is refused only where
it would be used, one line naming it; an option given wins over it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.factories import T2V, t2v, tiny_manifest


def _with(env: dict[str, str], **variables: str) -> dict[str, str]:
    return {**env, **variables}


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["render", "--help"]])
def test_a_bad_variable_does_not_stop_version_or_help(args: list[str]) -> None:
    env = _with(dict(os.environ), T2V_BATCH_SIZE="abc", T2V_PRESIGN_EXPIRY="60")
    done = subprocess.run(
        [*T2V, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_importing_the_flows_with_a_bad_variable_does_not_raise() -> None:
    # What `prefect deploy` and a worker do first.
    env = _with(dict(os.environ), T2V_BATCH_SIZE="abc", T2V_PRESIGN_EXPIRY="60")
    code = "import flows.render_flow, flows.sharded_flow, flows.shard_flow"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr


def test_render_with_a_bad_variable_exits_2_naming_it(tmp_path: Path) -> None:
    env = _with(dict(os.environ), T2V_BATCH_SIZE="abc")
    manifest = tiny_manifest(tmp_path, rows=1)
    done = t2v("render", str(manifest), "--out", str(tmp_path / "out"), env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("t2v: error: T2V_BATCH_SIZE='abc': ")
    assert "integer" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_option_wins_over_a_bad_variable(cli_env: dict[str, str], tmp_path: Path) -> None:
    manifest = tiny_manifest(tmp_path, rows=2)
    for size in ("2", "4"):  # 4 is also the built-in default
        done = t2v(
            "render", str(manifest), "--out", str(tmp_path / size), "--batch-size", size,
            env=_with(cli_env, T2V_BATCH_SIZE="abc"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "2 ok" in done.stdout


@pytest.mark.slow
def test_presign_expiry_from_a_variable_checks_the_destination_given(
    cli_env: dict[str, str], s3_env: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    manifest = tiny_manifest(tmp_path, rows=1)
    done = t2v(
        "render", str(manifest), "--out", f"s3://{s3_bucket}/p",
        env=_with({**cli_env, **s3_env}, T2V_PRESIGN_EXPIRY="60"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "presigned links need an s3:// destination" not in done.stderr
