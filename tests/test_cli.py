"""`t2v`: what it says before any run starts, from `main([...])` in this process; what it
renders, as the real command in a subprocess (exit codes, messages, clean output)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from tests.conftest import REPO
from tests.factories import gallery_videos, t2v, t2v_main
from tests.mp4probe import probe_mp4
from tests.unsafe_models import custom_code_folder, pickle_only_folder

# The subprocess tests start Python, torch and Prefect afresh: seconds apiece.
slow = pytest.mark.slow


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths as someone typing in the repository gives them."""
    monkeypatch.chdir(REPO)


def render_demo(out: Path, *options: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`t2v render` of the demo manifest with the tiny model into `out`."""
    return t2v(
        "render", "examples/prompts.csv", "--model", "tiny-random", "--out", str(out), *options,
        env=env,
    )  # fmt: skip


def _assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "Error" not in stderr.replace("t2v: error:", "")


@pytest.mark.usefixtures("in_repo")
def test_models_lists_the_presets(capfd: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = t2v_main(capfd, "models")
    assert code == 0
    for name in ("ms-1.7b", "ms-1.7b-random", "tiny-random", "PATH"):
        assert name in stdout
    assert "Hugging Face cache" in stdout
    assert "speed: fast = cache first-block:0.05, compile full; fastest = " in stdout
    legacy = [line.split(": ", 1)[1] for line in stdout.splitlines() if "legacy: " in line]
    # ModelScope's two presets and its tiny one; no other family is deprecated upstream.
    assert len(legacy) == 3 and "pipelines/deprecated" in legacy[0]
    assert "use wan2.1-1.3b instead" in legacy[0]
    assert "wan2.2-5b  " in stdout and "native 1280×704, 121 frames at 24 fps" in stdout


@pytest.mark.usefixtures("in_repo")
def test_check_prints_every_row_error(capfd: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = t2v_main(capfd, "check", "examples/nasty.csv")
    assert code == 1
    lines = stdout.splitlines()
    assert any("`height`" in line for line in lines)
    assert any("`id`" in line for line in lines)
    assert lines[-1] == "examples/nasty.csv: 5 valid, 7 invalid for ModelScope"


@pytest.mark.usefixtures("in_repo")
def test_check_of_a_clean_manifest_exits_0(capfd: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = t2v_main(capfd, "check", "examples/prompts.csv")
    assert code == 0, stdout + stderr
    assert stdout.strip().endswith("8 valid, 0 invalid for ModelScope")


def test_check_names_the_extra_columns_it_carries(capfd: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = t2v_main(capfd, "check", str(REPO / "examples" / "prompts.csv"))
    assert code == 0
    assert stdout.splitlines()[0].endswith(
        "prompts.csv: t2v reads none of these columns and carries them to the results "
        "untouched: `campaign`"
    )


def test_check_reports_every_broken_column_of_a_row_and_invisible_prompts(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,prompt,height\n../x,a cat,100\nblank,\u200b\u2060\ufeff,64\n")
    code, stdout, _ = t2v_main(capfd, "check", str(manifest))
    assert code == 1
    assert stdout.splitlines() == [
        "row 1 ('../x'): `id` must be 1–128 ASCII letters, digits, '.', '_' or '-' starting "
        "with a letter or digit (a safe file name), got '../x'. `height` must be a multiple "
        "of 8 in 64…1024, got '100'.",
        "row 2 ('blank'): `prompt` must not be empty after trimming spaces and invisible "
        "characters, got '\\u200b\\u2060\\ufeff'.",
        f"{manifest}: 0 valid, 2 invalid for ModelScope",
    ]


def test_a_column_people_write_for_a_known_one_exits_2_naming_it(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("prompt,steps\na cat,4\n")
    for command in ("check", "render"):
        code, _, stderr = t2v_main(capfd, command, str(manifest), "--model", "tiny-random")
        assert code == 2
        assert stderr == (
            f"t2v: error: {manifest} has a column `steps`, which t2v does not read: rename it "
            "`num_inference_steps` to set that, or give it another name to keep it as an extra "
            "column.\n"
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "missing.csv"], "missing.csv"),
        (["render", "missing.csv", "--model", "tiny-random"], "missing.csv"),
        (["render", "examples/prompts.csv", "--model", "nope"], "unknown model 'nope'"),
        (["render", "examples/prompts.csv", "--model", "ms-1.7b"], "t2v models pull ms-1.7b"),
        (["render", "examples/prompts.csv", "--device", "tpu"], "--device='tpu'"),
        (["render", "m.csv", "--batch-size", "0"], "--batch-size='0'"),
        (["render", "examples/prompts.csv", "--out", "gs://bucket/x"], "unsupported location"),
        (["render", "examples/prompts.csv", "--max-rows", "100001"], "--max-rows='100001'"),
        (
            ["render", "examples/prompts.csv", "--cache", "first-block"],
            "use none|first-block:THRESHOLD|taylorseer[:INTERVAL]",
        ),
        (["render", "examples/prompts.csv", "--compile", "fastest"], "use off|regional|full|"),
        (["render", "examples/prompts.csv", "--attention", "flsh"], "use sdpa|flash|flash3|"),
    ],
)
@pytest.mark.usefixtures("in_repo")
def test_usage_errors_exit_2_with_one_line(
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    from huggingface_hub import constants

    # HF_HUB_CACHE as huggingface_hub read it when this process imported it.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    if args[0] == "render" and "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    code, _, stderr = t2v_main(capfd, *args)
    assert code == 2, stderr
    assert stderr.startswith("t2v: error: ")
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "out").exists()


@slow
def test_a_run_over_its_budget_exits_2_with_one_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # The real command: the budget is refused before Prefect starts (and the flow checks it too).
    out = tmp_path / "out"
    done = render_demo(out, "--max-rows", "5", env=cli_env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("t2v: error: ")
    assert "asks for 8 videos but a run may render at most 5" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["render", "m.csv", "--limit"], "--limit"), (["render"], "MANIFEST")],
)
def test_bad_arguments_exit_2_with_usage(
    capfd: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's own exit
        main(args)
    assert exited.value.code == 2
    stderr = capfd.readouterr().err
    assert stderr.startswith("usage: t2v render")
    assert message in stderr


@slow
def test_nasty_manifest_renders_good_rows_and_reports_bad_ones(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = t2v(
        "render", "examples/nasty.csv", "--model", "tiny-random", "--out", str(out), env=cli_env
    )
    assert done.returncode == 1, done.stderr
    _assert_clean(done.stderr)
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8-sig")))
    statuses = [row["status"] for row in rows]
    assert statuses.count("ok") >= 3 and statuses.count("invalid") >= 5
    assert len(list(out.glob("*.mp4"))) == statuses.count("ok")
    assert all(row["error"] for row in rows if row["status"] == "invalid")
    assert str(out / "results.csv") in done.stdout
    assert f"{statuses.count('ok')} ok" in done.stdout


@slow
def test_render_then_rerun(cli_env: dict[str, str], tmp_path: Path) -> None:
    first = render_demo(tmp_path / "out", "--limit", "3", env=cli_env)
    assert first.returncode == 0, first.stderr
    _assert_clean(first.stderr)
    # Said before rendering, once: a column meant as a setting is noticed in time.
    notice = "carries them to the results untouched: `campaign`"
    assert first.stderr.count(notice) == 1
    assert "3 ok" in first.stdout
    started = time.monotonic()
    second = render_demo(tmp_path / "out", "--limit", "3", env=cli_env)
    took = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert "3 skipped" in second.stdout
    # The summary tells the command's time (a temporary server's start included), and the
    # run's share of it; the gallery names no device and keeps each video's own date.
    said = re.search(r" in ([0-9.]+) s, ([0-9.]+) s of it the run \(", second.stdout)
    assert said, second.stdout
    assert float(said[2]) <= float(said[1]) <= took
    page = (tmp_path / "out" / "index.html").read_text()
    assert ", no video rendered in this run" in page and " on none" not in page
    runs = [video["run"] for video in gallery_videos(page)]
    assert len(runs) == 3 and None not in runs


@slow
def test_tiny_wan_renders_a_row_as_wide_as_its_rules_allow(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "wide.csv"
    manifest.write_text("prompt,num_frames,height,width,num_inference_steps\na kite,1,16,1280,1\n")
    done = t2v(
        "render", str(manifest), "--model", "tiny-wan", "--out", str(tmp_path / "out"),
        env=cli_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 ok" in done.stdout


@slow
def test_a_results_csv_fed_back_keeps_both_status_columns(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "again.csv"
    manifest.write_text(
        "prompt,num_frames,height,width,num_inference_steps,status,manifest_status\n"
        "a kite,2,64,64,1,failed,skipped\n"
    )
    done = t2v(
        "render", str(manifest), "--model", "tiny-random", "--out", str(tmp_path / "out"),
        env=cli_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = csv.DictReader((tmp_path / "out" / "results.csv").open(encoding="utf-8-sig"))
    assert (row["status"], row["manifest_status_2"], row["manifest_status"]) == (
        "ok",
        "failed",
        "skipped",
    )


@slow
def test_render_without_a_server_starts_a_temporary_one(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    del cli_env["PREFECT_API_URL"]
    del cli_env["PREFECT_SERVER_ANALYTICS_ENABLED"]
    cli_env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    out = tmp_path / "out"
    done = render_demo(out, "--limit", "2", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    assert "usage data" not in done.stderr
    _assert_clean(done.stderr)
    assert len(list(out.glob("*.mp4"))) == 2
    assert (out / "index.html").exists()


@pytest.mark.usefixtures("in_repo")
def test_a_folder_with_a_bad_model_index_exits_2_before_prefect_starts(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_index.json").write_text("[]")
    code, _, stderr = t2v_main(
        capfd, "render", "examples/prompts.csv", "--model", str(tmp_path / "model"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert stderr == (
        f"t2v: error: {tmp_path / 'model'}/model_index.json is not a pipeline's index (a JSON "
        "object with a `_class_name`): pass a folder saved with save_pretrained\n"
    )


@pytest.fixture
def unreachable_hub(tmp_path: Path) -> dict[str, str]:
    """An environment without network: the Hub's endpoint a closed local port, no offline
    mode, an empty Hugging Face cache."""
    from tests.prefect_stack import free_port

    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), OMP_NUM_THREADS="1")
    env.pop("HF_HUB_OFFLINE")
    return env


@slow
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["check", "examples/prompts.csv", "--model", "acme/video"], "acme/video's model_index"),
        (["models", "pull", "ms-1.7b"], "cannot download ali-vilab/text-to-video-ms-1.7b"),
        (["render", "examples/prompts.csv", "--model", "ms-1.7b"], "weights of ali-vilab"),
    ],
)
def test_an_unreachable_hub_is_said_at_once_with_what_works_offline(
    unreachable_hub: dict[str, str], tmp_path: Path, args: list[str], problem: str
) -> None:
    if args[0] == "render":
        args = [*args, "--out", str(tmp_path / "out")]
    started = time.monotonic()
    done = t2v(*args, env=unreachable_hub)
    # Starting Python and torch takes seconds; huggingface_hub's retries took 26 s.
    assert time.monotonic() - started < 15
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"t2v: error: {problem}")
    assert f"the Hugging Face Hub at {unreachable_hub['HF_ENDPOINT']} cannot be reached" in line
    assert "point HF_HUB_CACHE at it, and set HF_HUB_OFFLINE=1" in line
    assert "models pull ms-1.7b" not in line  # no advice that fails the same way


@pytest.mark.parametrize("kind", ["pickle", "code"])
@pytest.mark.usefixtures("in_repo")
def test_an_unsafe_model_folder_exits_2_before_rendering(
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_pipe: Any,
    kind: str,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # folder digests go here
    marker = tmp_path / "code-ran"
    folder = (
        pickle_only_folder(tmp_path / "model", tiny_pipe)
        if kind == "pickle"
        else custom_code_folder(tmp_path / "model", tiny_pipe, marker)
    )
    out = tmp_path / "out"
    code, _, stderr = t2v_main(
        capfd, "render", "examples/prompts.csv", "--model", str(folder), "--out", str(out)
    )
    assert code == 2, stderr
    assert stderr.startswith(f"t2v: error: {folder}")
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not marker.exists()
    assert not list(out.glob("*.mp4"))


@pytest.mark.parametrize(
    ("args", "variables", "message"),
    [
        (["--speed", "turbo"], {}, "--speed='turbo': Input should be 'exact', 'fast' or 'fastest'"),
        ([], {"T2V_QUANTIZE": "fp4"}, "T2V_QUANTIZE='fp4': quantize 'fp4' is not a quantization"),
    ],
)
def test_a_wrong_speed_setting_exits_2_with_one_line_naming_the_allowed_values(
    tmp_path: Path, args: list[str], variables: dict[str, str], message: str
) -> None:
    env = {**os.environ, **variables}
    out = tmp_path / "out"
    done = t2v("render", "examples/prompts.csv", "--out", str(out), *args, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("t2v: error: ")
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()


@slow
def test_render_fast_records_the_profile_and_the_levers_applied_and_skipped(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = tmp_path / "wan.csv"
    manifest.write_text(
        "id,prompt,seed,num_frames,height,width,num_inference_steps,fps\n"
        "a,a red kite over the sea,1,9,32,32,4,8\n"
        "b,a small boat in the rain,2,9,32,32,4,8\n"
    )
    done = t2v(
        "render", str(manifest), "--model", "tiny-wan", "--out", str(out), "--speed", "fast",
        env=cli_env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _assert_clean(done.stderr)
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8-sig")))
    assert [row["speed"] for row in rows] == ["fast", "fast"]
    assert list(rows[0])[list(rows[0]).index("sha256") + 1] == "speed"
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["speed"] == "fast"
    assert summary["speed_levers"] == {
        "Wan": {
            "applied": {"cache": "first-block:0.05", "compile": "regional"},
            "skipped": {"attention": "cudnn: the cudnn kernel needs CUDA"},
        }
    }
    for row in rows:
        assert probe_mp4(Path(row["output"])).frame_count == 9
