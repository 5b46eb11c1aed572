"""A model family's manifest rules: its defaults, its bounds, and errors that name it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.manifest import InvalidRow, RenderRow, parse_manifest, read_manifest
from tasks.rules import ManifestRules
from tests.factories import table

# Per-family rules

WAN = ManifestRules(
    family="Wan",
    num_frames=81,
    height=480,
    width=832,
    num_inference_steps=50,
    guidance_scale=5.0,
    fps=16,
    negative_prompt="blurry, static",
    max_frames=161,
    max_size=1280,
    size_multiple=16,
    frame_step=4,
    max_voxels=81 * 480 * 832,
    max_voxels_shape=(81, 480, 832),
)
LTX = ManifestRules(
    family="LTX",
    num_frames=121,
    height=512,
    width=768,
    num_inference_steps=40,
    guidance_scale=3.0,
    fps=24,
    max_frames=257,
    max_size=1280,
    size_multiple=32,
    frame_step=8,
    max_voxels=257 * 512 * 768,
)


def family_row(rules: ManifestRules, **cells: str) -> RenderRow | InvalidRow:
    columns = {"prompt": "a cat", **cells}
    data = table(list(columns), list(columns.values())).encode()
    manifest = parse_manifest(data, "test.csv", rules=rules)
    (row,) = [*manifest.rows, *manifest.invalid]
    return row


def test_empty_cells_take_the_family_defaults() -> None:
    row = family_row(WAN, negative_prompt="", num_frames="", height="")
    assert isinstance(row, RenderRow)
    assert (row.num_frames, row.height, row.width, row.fps) == (81, 480, 832, 16)
    assert (row.num_inference_steps, row.guidance_scale) == (50, 5.0)
    assert row.negative_prompt == "blurry, static"
    given = family_row(WAN, negative_prompt="text")
    assert isinstance(given, RenderRow)
    assert given.negative_prompt == "text"


@pytest.mark.parametrize(
    ("rules", "cells", "error"),
    [
        (
            WAN,
            {"num_frames": "80"},
            "`num_frames` must be 4k+1 in 1…161 for Wan (…, 77, 81, 85, …), got 80.",
        ),
        (WAN, {"num_frames": "0"}, "`num_frames` must be 4k+1 in 1…161 for Wan (1, 5, …), got 0."),
        (
            WAN,
            {"num_frames": "400", "height": "64", "width": "64"},
            "`num_frames` must be 4k+1 in 1…161 for Wan (…, 157, 161), got 400.",
        ),
        (WAN, {"num_frames": "many"}, "`num_frames` must be 4k+1 in 1…161 for Wan, got 'many'."),
        (
            WAN,
            {"height": "100"},
            "`height` must be a multiple of 16 in 64…1280 for Wan, got 100 (nearest: 96 or 112).",
        ),
        (
            WAN,
            {"width": "2000"},
            "`width` must be a multiple of 16 in 64…1280 for Wan, got 2000 (nearest: 1280).",
        ),
        (
            WAN,
            {"num_frames": "85"},
            "`num_frames` × `height` × `width` must be at most 32,348,160 for Wan "
            "(81 frames of 480×832), got 85×480×832 = 33,945,600.",
        ),
        (
            LTX,
            {"num_frames": "120"},
            "`num_frames` must be 8k+1 in 1…257 for LTX (…, 113, 121, 129, …), got 120.",
        ),
        (
            LTX,
            {"width": "700"},
            "`width` must be a multiple of 32 in 64…1280 for LTX, got 700 (nearest: 672 or 704).",
        ),
    ],
)
def test_family_rules_name_the_family_and_the_nearest_valid_values(
    rules: ManifestRules, cells: dict[str, str], error: str
) -> None:
    row = family_row(rules, **cells)
    assert isinstance(row, InvalidRow), row
    assert row.error == error


@pytest.mark.parametrize(
    ("rules", "cells"),
    [
        (WAN, {"num_frames": "1", "height": "1280", "width": "1280"}),
        (WAN, {"num_frames": "77", "height": "496", "width": "816"}),
        (LTX, {"num_frames": "257", "height": "64", "width": "1280"}),
        (LTX, {"num_frames": "9", "height": "1280", "width": "1280"}),
    ],
)
def test_family_rules_accept_their_edge_values(rules: ManifestRules, cells: dict[str, str]) -> None:
    row = family_row(rules, **cells)
    assert isinstance(row, RenderRow), row
    assert (str(row.num_frames), str(row.height), str(row.width)) == tuple(cells.values())


def test_read_manifest_takes_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("prompt,num_frames\na cat,16\n")
    assert isinstance(read_manifest(str(path)).rows[0], RenderRow)  # ModelScope: any count
    (bad,) = read_manifest(str(path), rules=WAN).invalid
    assert bad.error.startswith("`num_frames` must be 4k+1 in 1…161 for Wan")


def test_a_voxel_shape_must_match_the_voxel_cap() -> None:
    with pytest.raises(ValueError, match="must multiply to `max_voxels`"):
        ManifestRules(max_voxels=100, max_voxels_shape=(1, 10, 11))
