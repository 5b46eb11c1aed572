"""The real `t2v` command in a subprocess against moto's S3 server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.s3 import s3_client
from tests.conftest import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, prefect_records
from tests.factories import (
    MIXED_MANIFEST,
    S3_RESULT_FILES,
    put_manifest,
    s3_results,
    s3_versions,
    t2v,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_cli_env(cli_env: dict[str, str], s3_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, **s3_env}


def test_render_s3_to_s3_then_rerun_without_any_put(
    s3_bucket: str, s3_cli_env: dict[str, str], tmp_path: Path
) -> None:
    manifest, out = put_manifest(s3_bucket), f"s3://{s3_bucket}/renders"
    first = t2v("render", manifest, "--out", out, "--model", "tiny-random", env=s3_cli_env)
    assert first.returncode == 1, first.stderr  # the invalid row
    assert "3 ok, 0 skipped, 0 failed, 1 invalid" in first.stdout
    assert f"results: {out}/results.csv" in first.stdout
    videos = {row["output"].rsplit("/", 1)[-1] for row in s3_results(s3_bucket) if row["output"]}
    assert len(videos) == 3
    assert set(s3_versions(s3_bucket, "renders/")) == videos | S3_RESULT_FILES

    # The endpoint from the option alone, this time.
    endpoint = s3_cli_env.pop("AWS_ENDPOINT_URL")
    second = t2v(
        "render", manifest, "--out", out, "--model", "tiny-random", "--s3-endpoint", endpoint,
        env=s3_cli_env,
    )  # fmt: skip
    assert second.returncode == 1, second.stderr
    assert "0 ok, 3 skipped" in second.stdout
    versions = s3_versions(s3_bucket, "renders/")
    assert {key: versions[key] for key in videos} == dict.fromkeys(videos, 1)

    # Neither the secret nor, without presigned links, the key id shows anywhere.
    outputs = [first.stdout, first.stderr, second.stdout, second.stderr, *prefect_records()]
    for version in s3_client().list_object_versions(Bucket=s3_bucket)["Versions"]:
        body = (
            s3_client()
            .get_object(Bucket=s3_bucket, Key=version["Key"], VersionId=version["VersionId"])[
                "Body"
            ]
            .read()
        )
        outputs.append(body.decode("utf-8", errors="replace"))
    outputs += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert len(outputs) > 10
    for text in outputs:
        assert FAKE_SECRET_ACCESS_KEY not in text
        assert FAKE_ACCESS_KEY_ID not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "render",
                "MANIFEST",
                "--out",
                "s3://no-such-bucket/renders",
                "--model",
                "tiny-random",
            ],
            "t2v: error: cannot open s3://no-such-bucket/renders: "
            "bucket 'no-such-bucket' does not exist (NoSuchBucket)",
        ),
        (
            ["check", "s3://no-such-bucket/today.csv"],
            "t2v: error: cannot read s3://no-such-bucket/today.csv: "
            "bucket 'no-such-bucket' does not exist (NoSuchBucket)",
        ),
    ],
)
def test_a_missing_bucket_exits_2_with_one_line(
    s3_bucket: str, s3_cli_env: dict[str, str], args: list[str], message: str
) -> None:
    args = [put_manifest(s3_bucket) if arg == "MANIFEST" else arg for arg in args]
    done = t2v(*args, env=s3_cli_env)
    assert done.returncode == 2, done.stderr
    assert done.stderr == message + "\n"
    assert FAKE_SECRET_ACCESS_KEY not in done.stdout + done.stderr


def test_check_reads_a_manifest_from_s3(s3_bucket: str, s3_cli_env: dict[str, str]) -> None:
    endpoint = s3_cli_env.pop("AWS_ENDPOINT_URL")
    manifest = put_manifest(s3_bucket, text=MIXED_MANIFEST)
    done = t2v("check", manifest, "--s3-endpoint", endpoint, env=s3_cli_env)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[-1] == f"{manifest}: 3 valid, 1 invalid for ModelScope"
