"""Output keys: stable across releases, so reruns find the videos of earlier releases."""

from __future__ import annotations

from tasks.manifest import RenderRow
from tasks.publish import output_key

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
