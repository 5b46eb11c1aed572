"""The checks every family's tiny preset passes, as diffusers' pipeline tests run one
mixin over every pipeline: one build per seed, batched equals one by one, a manifest
validated by the family's rules rendered and encoded to a playable MP4, and the same
model saved to a folder and loaded through `--model PATH` (by its model_index.json, as a
folder nobody here made would be). Family-specific checks are in test_family_<name>.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.devices import get_pipeline
from tasks.encode import encode_mp4
from tasks.families import FAMILIES
from tasks.manifest import parse_manifest
from tasks.presets import PRESETS, resolve_model
from tasks.render import FailedRender, RenderedVideo, render_batch, render_rows
from tests.factories import render_row
from tests.mp4probe import probe_mp4

TINY = sorted(name for name, preset in PRESETS.items() if preset.info.repo is None)
# 9 frames is 4k+1 and 8k+1; 64 a multiple of every family's size step, and its smallest size.
MANIFEST = (
    "id,prompt,num_frames,height,width,num_inference_steps,fps\n"
    "a,a red kite over the sea,9,64,96,2,8\n"
    "b,a small boat in the rain,9,64,96,2,8\n"
)


def _videos(model: str) -> list[RenderedVideo]:
    ref = resolve_model(model)
    manifest = parse_manifest(MANIFEST.encode(), "m.csv", rules=ref.family.rules)
    assert not manifest.invalid, manifest.invalid
    result = render_rows(ref, "cpu", manifest.rows)
    assert result.device_failure is None
    assert not [o for o in result.outcomes if isinstance(o, FailedRender)], result.outcomes
    return [o for o in result.outcomes if isinstance(o, RenderedVideo)]


def test_there_is_one_tiny_preset_per_family() -> None:
    assert sorted(PRESETS[name].family.name for name in TINY) == sorted(f.name for f in FAMILIES)


@pytest.mark.parametrize("preset", TINY)
def test_a_tiny_preset_renders_a_manifest_to_playable_mp4s(preset: str, tmp_path: Path) -> None:
    videos = _videos(preset)
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
    preset: str, variant: str | None, tmp_path: Path
) -> None:
    pipe = get_pipeline(resolve_model(preset), torch.device("cpu"))
    folder = tmp_path / preset
    # Many models ship their weights only as a dtype variant (`*.fp16.safetensors`).
    pipe.save_pretrained(folder, variant=variant)
    ref = resolve_model(str(folder))
    assert ref.family is PRESETS[preset].family
    from_folder = _videos(str(folder))
    from_preset = _videos(preset)
    assert ref.variant == variant
    for saved, built in zip(from_folder, from_preset, strict=True):
        assert np.array_equal(saved.frames, built.frames)


@pytest.mark.parametrize("preset", TINY)
def test_two_builds_with_one_seed_are_identical(preset: str) -> None:
    family = PRESETS[preset].family
    first, second = family.build_tiny(seed=3), family.build_tiny(seed=3)
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
def test_a_batch_gives_the_frames_of_each_row_rendered_alone(preset: str) -> None:
    pipe = get_pipeline(resolve_model(preset), torch.device("cpu"))
    rows = [
        render_row(1, height=64, width=64),
        render_row(2, height=64, width=64, negative_prompt="blurry", prompt="x", seed=2**63 - 1),
        render_row(3, height=64, width=64),
    ]
    batched = render_batch(pipe, rows)
    assert not np.array_equal(batched[0].frames, batched[2].frames)
    for video in batched:
        alone = render_batch(pipe, [video.row])[0]
        # Batched matmuls sum in another order. Measured on every family: at most one
        # level of 255, on fewer than 0.01 % of the values; a batch of one is exact.
        difference = np.abs(video.frames.astype(int) - alone.frames.astype(int))
        assert difference.max() <= 1
        assert (difference > 0).mean() < 0.001


def _extreme_rows(preset: str) -> list[str]:
    """Manifest rows at the edges of what the preset's rules accept, with its fewest steps:
    the most frames at the smallest size, and the largest height and width each at one frame."""
    rules = PRESETS[preset].family.rules
    step = rules.size_multiple
    low, high = -(-rules.min_size // step) * step, rules.max_size // step * step
    most = rules.max_frames - (rules.max_frames - 1) % rules.frame_step
    steps = rules.min_inference_steps
    return [f"{most},{low},{low},{steps}", f"1,{low},{high},{steps}", f"1,{high},{low},{steps}"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "row"), [(preset, row) for preset in TINY for row in _extreme_rows(preset)]
)
def test_a_tiny_preset_renders_every_shape_its_rules_accept(preset: str, row: str) -> None:
    manifest = parse_manifest(
        f"prompt,num_frames,height,width,num_inference_steps\na kite,{row}\n".encode(),
        "m.csv",
        rules=PRESETS[preset].family.rules,
    )
    assert not manifest.invalid, manifest.invalid
    result = render_rows(resolve_model(preset), "cpu", manifest.rows)
    (video,) = result.outcomes
    assert isinstance(video, RenderedVideo), video
    frames, height, width, _ = map(int, row.split(","))
    assert video.frames.shape == (frames, height, width, 3)
