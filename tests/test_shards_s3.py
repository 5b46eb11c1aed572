"""A sharded run reaches the store its parent checked: the S3 endpoint travels with the
shards, and the parent's own checks use the credentials block it passes them. Workers here
have no AWS settings at all, as a fresh GPU box would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli import EXIT_OK
from tests.conftest import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from tests.prefect_stack import Server, make, running_server, running_worker
from tests.test_shards import _manifest

# One server, workers and S3 for the module: its tests share one process under xdist.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("shards_s3")]
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="module")
def bare_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A deployed server and one gpu worker whose environment holds no AWS keys, endpoint
    or config; the server's environment (and so the parent's) holds none either."""
    folder = tmp_path_factory.mktemp("bare")
    with running_server(folder) as server:
        for name in AWS_VARIABLES:
            server.env.pop(name, None)
        server.env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        server.env["AWS_DEFAULT_REGION"] = "us-east-1"
        subprocess.run(make(server.project, "deploy"), env=server.env, check=True)
        with running_worker(server, folder / "w1.log", "w1"):
            yield server


def _secret_block(server: Server) -> str:
    keys = {
        "aws_access_key_id": FAKE_ACCESS_KEY_ID,
        "aws_secret_access_key": FAKE_SECRET_ACCESS_KEY,
    }
    name = f"keys-{uuid.uuid4().hex[:8]}"
    script = (
        "import json, sys\nfrom prefect.blocks.system import Secret\n"
        "Secret(value=sys.argv[2]).save(sys.argv[1])\n"
    )
    command = [sys.executable, "-c", script, name, json.dumps(keys)]
    subprocess.run(command, env=server.env, check=True, capture_output=True)
    return name


def _bucket(endpoint: str, manifest: str) -> str:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=FAKE_ACCESS_KEY_ID, aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
    )  # fmt: skip
    bucket = f"t2v-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="prompts.csv", Body=manifest.encode())
    return bucket


def test_shards_reach_the_parents_endpoint_with_the_block_it_names(
    bare_worker: Server, s3_server: str, tmp_path: Path
) -> None:
    bucket = _bucket(s3_server, _manifest(4))
    block = _secret_block(bare_worker)
    command = [
        sys.executable, "-m", "flows.cli", "render", f"s3://{bucket}/prompts.csv",
        "--out", f"s3://{bucket}/out", "--model", "tiny-random", "--shards", "2",
        "--batch-size", "1", "--s3-endpoint", s3_server, "--aws-credentials-block", block,
    ]  # fmt: skip
    done = subprocess.run(command, env=bare_worker.env, capture_output=True, text=True, timeout=400)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert "4 rows: 4 ok" in done.stdout


def test_check_reads_an_s3_manifest_with_the_block_it_names(
    bare_worker: Server, s3_server: str
) -> None:
    bucket = _bucket(s3_server, _manifest(2))
    block = _secret_block(bare_worker)
    command = [
        sys.executable, "-m", "flows.cli", "check", f"s3://{bucket}/prompts.csv",
        "--model", "tiny-random", "--s3-endpoint", s3_server, "--aws-credentials-block", block,
    ]  # fmt: skip
    done = subprocess.run(command, env=bare_worker.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert "2 valid, 0 invalid" in done.stdout


def test_a_block_without_a_server_is_one_line(s3_server: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", *AWS_VARIABLES)}
    command = [
        sys.executable, "-m", "flows.cli", "render", "s3://bucket/prompts.csv",
        "--model", "tiny-random", "--s3-endpoint", s3_server, "--aws-credentials-block", "keys",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "t2v: error: --aws-credentials-block keys needs PREFECT_API_URL: blocks are kept by "
        "a Prefect server"
    ]
