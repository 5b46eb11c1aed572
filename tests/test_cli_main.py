"""`t2v` in-process through `main([...])`: what a user sees before any run starts."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from flows.cli import main
from tasks.columns import KNOWN_COLUMNS
from tests.conftest import REPO
from tests.factories import t2v_main
from tests.processes import free_port


def test_help_shows_an_example_the_columns_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["render", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "t2v render examples/prompts.csv --model tiny-random" in text
    listed = text.split("manifest columns")[1].split("exit codes")[0]
    for column in KNOWN_COLUMNS:  # image rows' and candidates' columns too
        assert re.search(rf"\b{column}\b", listed), column
    for code in ("0  every row", "1  at least one row", "2  nothing rendered", "130"):
        assert code in text
    assert "$T2V_BATCH_SIZE" in text


def test_the_readme_synopsis_names_every_render_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    options = set(re.findall(r"--[a-z0-9-]+", capsys.readouterr().out)) - {"--help"}
    synopsis = (REPO / "README.md").read_text().split("## Command line")[1].split("```")[1]
    assert options <= set(re.findall(r"--[a-z0-9-]+", synopsis)), options


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("t2v 0.")


def test_an_unreachable_prefect_api_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    out = tmp_path / "out"
    started = time.monotonic()
    code, stdout, stderr = t2v_main(
        capsys, "render", str(REPO / "examples/prompts.csv"), "--model", "tiny-random",
        "--out", str(out),
    )  # fmt: skip
    assert code == 2
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert f"cannot reach the Prefect API at PREFECT_API_URL={url}" in stderr
    assert "make server" in stderr and "unset PREFECT_API_URL" in stderr
    assert not out.exists()
    assert time.monotonic() - started < 30


def test_a_url_that_is_not_a_prefect_api_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefect_api_url: str,
) -> None:
    wrong = prefect_api_url.removesuffix("/api") + "/nothing-here"
    monkeypatch.setenv("PREFECT_API_URL", wrong)
    code, _, stderr = t2v_main(
        capsys, "render", str(REPO / "examples/prompts.csv"), "--model", "tiny-random",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert stderr.count("\n") == 1, stderr
    assert f"PREFECT_API_URL={wrong} is not a Prefect API" in stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_t2v_variable_is_named_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T2V_BATCH_SIZE", "lots")
    code, _, stderr = t2v_main(capsys, "render", str(REPO / "examples/prompts.csv"))
    assert code == 2
    assert stderr.startswith("t2v: error: T2V_BATCH_SIZE='lots': ")
    assert stderr.count("\n") == 1


def test_t2v_variables_set_the_defaults_and_options_override_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from flows.cli_options import request_from_options

    monkeypatch.setenv("T2V_BATCH_SIZE", "3")
    monkeypatch.setenv("T2V_DESTINATION", "s3://bucket/nightly")
    from_env = request_from_options(argparse.Namespace(manifest="m.csv"))
    assert (from_env.batch_size, from_env.destination) == (3, "s3://bucket/nightly")
    given = request_from_options(argparse.Namespace(manifest="m.csv", batch_size="5"))
    assert (given.batch_size, given.destination) == (5, "s3://bucket/nightly")


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("/dev/null", "is not a folder"),
        ("{file}", "is not a folder"),
        ("s3:/bucket/renders", "s3:/bucket/renders"),
        ("s3://bucket/out/../x", "s3://bucket/out/../x"),
        ("{manifest_folder}", "would overwrite the manifest"),
    ],
)
def test_a_bad_destination_is_refused_before_prefect_starts_or_anything_renders(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    destination: str,
    message: str,
) -> None:
    # No PREFECT_API_URL: a temporary server would start, seconds later, if the check
    # came after it; the refusal comes first.
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    manifest_folder = tmp_path / "selfout"
    manifest_folder.mkdir()
    manifest = manifest_folder / "results.csv"
    manifest.write_text((REPO / "examples/prompts.csv").read_text())
    destination = destination.format(file=a_file, manifest_folder=manifest_folder)
    before = manifest.read_bytes()
    started = time.monotonic()
    code, stdout, stderr = t2v_main(
        capsys, "render", str(manifest), "--model", "tiny-random", "--out", destination
    )
    assert (code, stdout) == (2, "")
    assert stderr.startswith("t2v: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert manifest.read_bytes() == before
    assert a_file.read_text() == "not a folder"
    assert not list(tmp_path.rglob("*.mp4"))
    assert time.monotonic() - started < 30


def test_output_piped_into_a_reader_that_stops_early_ends_quietly() -> None:
    """`t2v models | head -1`: the reader closes the pipe after one line."""
    import subprocess
    import sys

    t2v = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "models"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert t2v.stdout is not None and t2v.stderr is not None
    t2v.stdout.readline()
    t2v.stdout.close()
    stderr = t2v.stderr.read()
    t2v.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
