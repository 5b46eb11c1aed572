"""The checks every family's tiny preset passes, as diffusers' pipeline tests run one
mixin over every pipeline: one build per seed, batched equals one by one, a manifest
validated by the family's rules rendered and encoded to a playable MP4, and the same
model saved to a folder and loaded through `--model PATH` (by its model_index.json, as a
folder nobody here made would be); a preset that takes start images renders each row from
its own, and an image-to-video-only preset gets one in every row. Family-specific checks
are in test_family_<name>.py."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.devices import get_pipeline
from tasks.encode import encode_mp4
from tasks.families import FAMILIES
from tasks.images import StartImage
from tasks.manifest import RenderRow, parse_manifest, read_manifest
from tasks.presets import PRESETS, preset_rules, resolve_model
from tasks.render import render_rows
from tasks.render_call import FailedRender, RenderedVideo, RenderOutcome, render_batch
from tests.factories import render_row
from tests.mp4probe import probe_mp4

TINY = sorted(name for name, preset in PRESETS.items() if preset.info.repo is None)
TAKE_IMAGES = [name for name in TINY if "image" in preset_rules(PRESETS[name]).image_columns]
# The image columns each row must fill for the preset (image-to-video-only models).
REQUIRED = {name: preset_rules(PRESETS[name]).required_images for name in TINY}
# 9 frames is 4k+1 and 8k+1; 64 a multiple of every family's size step, and its smallest size.
MANIFEST = (
    "id,prompt,num_frames,height,width,num_inference_steps,fps,image,last_image\n"
    "a,a red kite over the sea,9,64,96,2,8,{image},{last_image}\n"
    "b,a small boat in the rain,9,64,96,2,8,{image},{last_image}\n"
)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StartImage]:
    """Two start images wider than the rows (12:5), each a ramp that crops show."""
    folder = tmp_path_factory.mktemp("images")
    found = {}
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 60, 200))):
        ramp = np.linspace(0.3, 1.0, 120)[None, :, None] * np.array(colour)[None, None, :]
        path = folder / f"{name}.png"
        Image.fromarray(np.repeat(ramp, 50, axis=0).astype(np.uint8), "RGB").save(path)
        found[name] = StartImage(str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def as_needed(preset: str, row: RenderRow, image: StartImage) -> RenderRow:
    """`row`, with `image` in each image column `preset` needs that it leaves empty."""
    missing = [column for column in REQUIRED[preset] if getattr(row, column) is None]
    return replace(row, **dict.fromkeys(missing, image))


def _videos(model: str, preset: str, image: StartImage) -> list[RenderedVideo]:
    ref = resolve_model(model)
    folder = Path(image.uri).parent
    cells = {column: Path(image.uri).name for column in REQUIRED[preset]}
    (folder / "m.csv").write_text(MANIFEST.format(**{"image": "", "last_image": "", **cells}))
    manifest = read_manifest(str(folder / "m.csv"), rules=ref.rules)
    assert not manifest.invalid, manifest.invalid
    result = render_rows(ref, "cpu", manifest.rows)
    assert result.device_failure is None
    assert not [o for o in result.outcomes if isinstance(o, FailedRender)], result.outcomes
    return [o for o in result.outcomes if isinstance(o, RenderedVideo)]


def test_every_family_has_a_tiny_preset() -> None:
    assert {PRESETS[name].family.name for name in TINY} == {f.name for f in FAMILIES}


@pytest.mark.parametrize("preset", TINY)
def test_a_tiny_preset_renders_a_manifest_to_playable_mp4s(
    preset: str, tmp_path: Path, pictures: dict[str, StartImage]
) -> None:
    videos = _videos(preset, preset, pictures["red"])
    assert [video.row.id for video in videos] == ["a", "b"]
    for video in videos:
        assert video.frames.shape == (9, 64, 96, 3) and video.frames.dtype == np.uint8
        path = tmp_path / f"{video.row.id}.mp4"
        encode_mp4(video.frames, video.row.fps, path)
        probe = probe_mp4(path)
        assert (probe.codec, probe.pix_fmt) == ("h264", "yuv420p")
        assert (probe.width, probe.height) == (96, 64)
        assert (probe.frame_count, probe.fps, probe.faststart) == (9, 8.0, True)


@pytest.mark.parametrize("preset", TINY)
@pytest.mark.parametrize("variant", [None, "fp16"])
def test_a_saved_folder_renders_through_model_path_like_its_preset(
    preset: str, variant: str | None, tmp_path: Path, pictures: dict[str, StartImage]
) -> None:
    pipe = get_pipeline(resolve_model(preset), torch.device("cpu"))
    folder = tmp_path / preset
    # Many models ship their weights only as a dtype variant (`*.fp16.safetensors`).
    pipe.save_pretrained(folder, variant=variant)
    ref = resolve_model(str(folder))
    assert ref.family is PRESETS[preset].family
    assert ref.rules == preset_rules(PRESETS[preset])
    from_folder = _videos(str(folder), preset, pictures["red"])
    from_preset = _videos(preset, preset, pictures["red"])
    assert ref.variant == variant
    for saved, built in zip(from_folder, from_preset, strict=True):
        assert np.array_equal(saved.frames, built.frames)


@pytest.mark.parametrize("preset", TINY)
def test_two_builds_with_one_seed_are_identical(preset: str) -> None:
    family = PRESETS[preset].family
    first, second = (family.build_tiny_preset(preset, seed=3) for _ in range(2))
    for name in first.components:
        module = getattr(first, name)
        if isinstance(module, torch.nn.Module):
            for (key, a), b in zip(
                module.state_dict().items(),
                getattr(second, name).state_dict().values(),
                strict=True,
            ):
                assert torch.equal(a, b), f"{name}.{key}"


@pytest.mark.parametrize("preset", TINY)
def test_a_batch_gives_the_frames_of_each_row_rendered_alone(
    preset: str, pictures: dict[str, StartImage]
) -> None:
    pipe = get_pipeline(resolve_model(preset), torch.device("cpu"))
    rows = [
        render_row(1, height=64, width=64),
        render_row(2, height=64, width=64, negative_prompt="blurry", prompt="x", seed=2**63 - 1),
        render_row(3, height=64, width=64),
    ]
    batched = render_batch(pipe, [as_needed(preset, row, pictures["red"]) for row in rows])
    assert not np.array_equal(frames_of(batched[0]), frames_of(batched[2]))
    assert_each_as_alone(pipe, batched)


@pytest.mark.parametrize("preset", TAKE_IMAGES)
def test_each_row_of_a_batch_renders_from_its_own_start_image(
    preset: str, pictures: dict[str, StartImage]
) -> None:
    pipe = get_pipeline(resolve_model(preset), torch.device("cpu"))
    red, blue = pictures["red"], pictures["blue"]
    rows = [
        render_row(1, height=64, width=96, image=red),
        render_row(2, height=64, width=96, image=blue, image_fit="contain"),
        render_row(3, height=64, width=96, image=red),
        render_row(4, height=64, width=96, image=blue, seed=1),
    ]
    batched = render_batch(pipe, [as_needed(preset, row, blue) for row in rows])
    # One seed and prompt, another image: another video.
    assert not np.array_equal(frames_of(batched[0]), frames_of(batched[3]))
    assert_each_as_alone(pipe, batched)


def frames_of(outcome: RenderOutcome) -> np.ndarray:
    assert isinstance(outcome, RenderedVideo), outcome
    return outcome.frames


def assert_each_as_alone(pipe: Any, batched: list[RenderOutcome]) -> None:
    for video in batched:
        alone = render_batch(pipe, [video.row])[0]
        # Batched matmuls sum in another order. Measured on every family: at most one
        # level of 255, on fewer than 0.01 % of the values; a batch of one is exact.
        difference = np.abs(frames_of(video).astype(int) - frames_of(alone).astype(int))
        assert difference.max() <= 1
        assert (difference > 0).mean() < 0.001


def _extreme_rows(preset: str) -> list[str]:
    """Manifest rows at the edges of what the preset's rules accept, with its fewest steps:
    the most frames at the smallest size, and the largest height and width each at the fewest."""
    rules = preset_rules(PRESETS[preset])
    step = rules.size_multiple
    low, high = -(-rules.min_size // step) * step, rules.max_size // step * step
    most = rules.max_frames - (rules.max_frames - 1) % rules.frame_step
    # A video between a first and a last frame has at least the frame after the first.
    few = rules.frame_step + 1 if "last_image" in rules.required_images else 1
    steps = rules.min_inference_steps
    return [
        f"{most},{low},{low},{steps}",
        f"{few},{low},{high},{steps}",
        f"{few},{high},{low},{steps}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "row"), [(preset, row) for preset in TINY for row in _extreme_rows(preset)]
)
def test_a_tiny_preset_renders_every_shape_its_rules_accept(
    preset: str, row: str, pictures: dict[str, StartImage]
) -> None:
    manifest = parse_manifest(
        f"prompt,num_frames,height,width,num_inference_steps\na kite,{row}\n".encode(),
        "m.csv",
        rules=replace(preset_rules(PRESETS[preset]), required_images=()),
    )
    assert not manifest.invalid, manifest.invalid
    rows = [as_needed(preset, row, pictures["blue"]) for row in manifest.rows]
    result = render_rows(resolve_model(preset), "cpu", rows)
    (video,) = result.outcomes
    assert isinstance(video, RenderedVideo), video
    frames, height, width, _ = map(int, row.split(","))
    assert video.frames.shape == (frames, height, width, 3)
