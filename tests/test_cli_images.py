"""`t2v render` of a manifest mixing text rows and image rows under tiny-ltx, whose weights
render both, as the real command in a subprocess."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO
from tests.factories import gallery_videos, t2v, t2v_main, table

COLUMNS = ["id", "prompt", "image", "image_fit", "num_frames", "height", "width",
           "num_inference_steps", "fps"]  # fmt: skip
SHAPE = ["9", "64", "96", "2", "8"]


def rows_of(out: Path) -> dict[str, dict[str, str]]:
    with (out / "results.csv").open(encoding="utf-8-sig") as results:
        return {row["id"]: row for row in csv.DictReader(results)}


def test_the_example_image_manifest_is_valid_for_tiny_ltx_and_not_for_modelscope(
    capfd: pytest.CaptureFixture[str],
) -> None:
    example = str(REPO / "examples" / "image_prompts.csv")
    code, out, _ = t2v_main(capfd, "check", example, "--model", "tiny-ltx")
    assert (code, out.splitlines()[-1]) == (0, f"{example}: 3 valid, 0 invalid for LTX-Video")
    code, out, _ = t2v_main(capfd, "check", example, "--model", "tiny-random")
    assert code == 1 and "ltx-video, tiny-ltx, cogvideox-5b-i2v, tiny-cogvideox-i2v)" in out


@pytest.mark.parametrize(
    ("example", "model", "valid"),
    [
        ("image_prompts.csv", "tiny-wan2.2-ti2v", "3 valid, 0 invalid for Wan"),
        ("image_prompts.csv", "tiny-cogvideox-i2v", "2 valid, 1 invalid for CogVideoX I2V"),
        ("first_last_frames.csv", "tiny-wan-flf2v", "2 valid, 0 invalid for Wan I2V"),
        ("first_last_frames.csv", "tiny-wan-i2v", "0 valid, 2 invalid for Wan I2V"),
    ],
)
def test_the_example_image_manifests_are_checked_against_what_each_model_takes(
    capfd: pytest.CaptureFixture[str], example: str, model: str, valid: str
) -> None:
    path = str(REPO / "examples" / example)
    _, out, _ = t2v_main(capfd, "check", path, "--model", model)
    assert out.splitlines()[-1] == f"{path}: {valid}"


def test_models_says_which_presets_take_start_images(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = t2v_main(capfd, "models")
    lines = out.splitlines()
    images = {
        lines[n - 3].split()[0]: line.strip()
        for n, line in enumerate(lines)
        if line.strip().startswith("images: ")
    }
    assert code == 0
    assert images["tiny-ltx"] == "images: takes `image`; rows without one render as text"
    assert images["wan2.2-5b"] == images["tiny-ltx"]
    assert images["cogvideox-5b-i2v"] == "images: takes `image`; every row needs `image`"
    assert images["tiny-wan-flf2v"] == (
        "images: takes `image`, `last_image`; every row needs `image`, `last_image`"
    )
    assert "wan2.1-14b" not in images and "tiny-random" not in images


@pytest.mark.slow
def test_the_first_last_frame_example_renders_offline(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    example = str(REPO / "examples" / "first_last_frames.csv")
    done = t2v("render", example, "--model", "tiny-wan-flf2v", "--out", str(tmp_path), env=cli_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 ok, 0 skipped, 0 failed, 0 invalid" in done.stdout
    assert len(list(tmp_path.glob("*.mp4"))) == 2


@pytest.mark.slow
def test_text_and_image_rows_render_in_one_run_and_keys_follow_the_images_bytes(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    job = tmp_path / "job"
    (job / "shots").mkdir(parents=True)
    Image.new("RGB", (96, 64), (220, 40, 40)).save(job / "shots" / "red.png")
    Image.new("RGB", (48, 64), (40, 40, 220)).save(job / "shots" / "blue.jpg", quality=90)
    (job / "shots" / "notes.png").write_text("not a picture")
    (tmp_path / "outside.png").write_bytes((job / "shots" / "red.png").read_bytes())

    def manifest(red: str) -> str:
        rows = [
            ["text", "a cat runs", "", "", *SHAPE],
            ["red", "a red sun", red, "", *SHAPE],
            ["blue", "a blue sea", "shots/blue.jpg", "contain", *SHAPE],
            ["fake", "a fox", "shots/notes.png", "", *SHAPE],
            ["escape", "a fox", "../outside.png", "", *SHAPE],
        ]
        (job / "m.csv").write_text(table(COLUMNS, *rows))
        return str(job / "m.csv")

    out = tmp_path / "out"
    args = ["--model", "tiny-ltx", "--out", str(out), "--batch-size", "4"]
    done = t2v("render", manifest("shots/red.png"), *args, env=cli_env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "3 ok, 0 skipped, 0 failed, 2 invalid" in done.stdout
    rows = rows_of(out)
    assert {row["id"]: row["status"] for row in rows.values()} == {
        "text": "ok", "red": "ok", "blue": "ok", "fake": "invalid", "escape": "invalid",
    }  # fmt: skip
    assert rows["red"]["image"] == str((job / "shots" / "red.png").resolve())
    assert len(rows["red"]["image_sha256"]) == 64
    assert (rows["text"]["image"], rows["text"]["image_sha256"]) == ("", "")
    assert rows["fake"]["error"] == "`image` 'shots/notes.png' is not an image that can be read."
    assert "must stay inside the manifest's folder" in rows["escape"]["error"]
    assert len(list(out.glob("*.mp4"))) == 3
    page = (out / "index.html").read_text()
    images = [video["start_image"] for video in gallery_videos(page) if video["start_image"]]
    assert len(images) == 2 and all(
        (out / image).read_bytes()[:2] == b"\xff\xd8" for image in images
    )

    # A renamed image is the same image: its row is not rendered again.
    (job / "shots" / "red.png").rename(job / "shots" / "renamed.png")
    again = t2v("render", manifest("shots/renamed.png"), *args, env=cli_env)
    assert "0 ok, 3 skipped, 0 failed, 2 invalid" in again.stdout, again.stdout + again.stderr
