"""Output keys: stable across releases, so reruns find the videos of earlier releases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tasks.images import StartImage
from tasks.keys import output_key
from tasks.manifest import RenderRow
from tests.factories import ROW

# Literal keys computed by the release that introduced this test. A change here renames
# every video already rendered: each would be rendered again on the next nightly run.
GOLDEN = [
    (
        RenderRow(
            line=1, id="clip", prompt="a cat", negative_prompt="", seed=1, num_frames=8,
            height=64, width=64, num_inference_steps=4, guidance_scale=9.0, fps=8,
        ),
        "tiny-random",
        "clip-97b447e607a5.mp4",
    ),
    (
        RenderRow(
            line=2, id="sunset-02", prompt="A sunset over the sea, 猫 🎬",
            negative_prompt="blurry, low quality", seed=9223372036854775807, num_frames=16,
            height=256, width=256, num_inference_steps=25, guidance_scale=9, fps=8,
        ),
        "ali-vilab/text-to-video-ms-1.7b@0123456789abcdef0123456789abcdef01234567",
        "sunset-02-fc9b3f34e4f4.mp4",
    ),
    (
        RenderRow(
            line=3, id="row-3", prompt='"quoted", comma\nnewline', negative_prompt="", seed=0,
            num_frames=128, height=1024, width=512, num_inference_steps=150,
            guidance_scale=7.5, fps=60, extra={"Campaign": "spring"},
        ),
        "folder:" + "ab" * 32,
        "row-3-f7450e420ee9.mp4",
    ),
]  # fmt: skip


def test_output_keys_of_earlier_releases_stay_byte_for_byte() -> None:
    assert [output_key(row, model) for row, model, _ in GOLDEN] == [key for *_, key in GOLDEN]


def test_output_key_is_stable_and_readable() -> None:
    key = output_key(ROW, "tiny-random")
    assert key == output_key(ROW, "tiny-random")
    assert key.startswith("clip-") and key.endswith(".mp4") and len(key) == len("clip-") + 16


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a dog"},
        {"negative_prompt": "blurry"},
        {"seed": 2},
        {"num_frames": 16},
        {"height": 128},
        {"width": 128},
        {"num_inference_steps": 5},
        {"guidance_scale": 7.5},
        {"fps": 12},
    ],
)
def test_every_render_parameter_changes_the_key(change: dict[str, object]) -> None:
    assert output_key(replace(ROW, **change), "m") != output_key(ROW, "m")  # type: ignore[arg-type]


def test_the_model_changes_the_key_but_position_and_extras_do_not() -> None:
    assert output_key(ROW, "a") != output_key(ROW, "b")
    same = replace(ROW, line=7, extra={"Campaign": "autumn"})
    assert output_key(same, "a") == output_key(ROW, "a")


def test_a_start_image_counts_by_its_bytes_and_fit_never_its_path() -> None:
    image = replace(ROW, image=StartImage("/job/a.png", "aa" * 32))
    assert output_key(image, "m") != output_key(ROW, "m")
    renamed = replace(image, image=StartImage("s3://b/renamed.png", "aa" * 32))
    assert output_key(renamed, "m") == output_key(image, "m")
    repainted = replace(image, image=StartImage("/job/a.png", "bb" * 32))
    assert output_key(repainted, "m") != output_key(image, "m")
    assert output_key(replace(image, image_fit="contain"), "m") != output_key(image, "m")
    last = replace(image, last_image=StartImage("/job/z.png", "cc" * 32))
    assert output_key(last, "m") != output_key(image, "m")


def test_fit_alone_does_not_change_a_text_rows_key() -> None:
    assert output_key(replace(ROW, image_fit="contain"), "m") == output_key(ROW, "m")


def test_candidates_and_their_scorer_change_the_key_and_one_candidate_does_not() -> None:
    assert output_key(ROW, "m", scorer="clip") == output_key(ROW, "m")
    three = replace(ROW, candidates=3)
    assert output_key(three, "m") != output_key(ROW, "m")
    assert output_key(three, "m") != output_key(replace(ROW, candidates=4), "m")
    assert output_key(three, "m", scorer="clip") != output_key(three, "m")
    assert output_key(three, "m", scorer="clip") != output_key(three, "m", scorer="tiny-clip")
