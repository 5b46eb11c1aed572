"""A manifest header's columns: misspelled known columns refused, extra ones kept, a cap."""

from __future__ import annotations

import time

import pytest

from tasks.columns import MAX_COLUMNS, carried_notice
from tasks.errors import ManifestError
from tests.factories import parse, table

# Columns that look like known ones (issue 12): refused, never silently extra


@pytest.mark.parametrize(
    ("column", "known"),
    [
        ("sead", "seed"),
        ("seeds", "seed"),
        ("num_frame", "num_frames"),
        ("negative-prompt", "negative_prompt"),
        ("Num Frames", "num_frames"),
        ("NUM-FRAMES", "num_frames"),
        ("heigth", "height"),  # two letters swapped: one edit
        ("widht", "width"),
        ("guidance scale", "guidance_scale"),
        ("num_inference_step", "num_inference_steps"),
        ("fp", "fps"),
        ("ids", "id"),
    ],
)
def test_a_column_that_looks_like_a_known_one_stops_the_manifest(column: str, known: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse(table(["prompt", column], ["a cat", "7"]))
    assert str(caught.value) == (
        f"test.csv has a column `{column}` that looks like `{known}`: rename it `{known}`, "
        f"or give it a name further from `{known}` to keep it as an extra column."
    )


@pytest.mark.parametrize(
    ("column", "known"),
    [
        ("steps", "num_inference_steps"),
        ("Num Steps", "num_inference_steps"),
        ("frames", "num_frames"),
        ("n_frames", "num_frames"),
        ("video_length", "num_frames"),
        ("cfg", "guidance_scale"),
        ("CFG-Scale", "guidance_scale"),
        ("guidance", "guidance_scale"),
        ("negative", "negative_prompt"),
        ("frame rate", "fps"),
        ("random_seed", "seed"),
        ("W", "width"),
    ],
)
def test_a_name_people_write_for_a_known_column_is_refused_with_the_real_name(
    column: str, known: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse(table(["prompt", column], ["a cat", "7"]))
    assert str(caught.value) == (
        f"test.csv has a column `{column}`, which t2v does not read: rename it `{known}` "
        "to set that, or give it another name to keep it as an extra column."
    )


def test_an_alias_next_to_its_known_column_is_an_extra_column() -> None:
    manifest = parse(
        table(["prompt", "caption", "steps", "num_inference_steps"], ["a", "b", "c", "4"])
    )
    assert manifest.extra_columns == ["caption", "steps"]
    assert manifest.rows[0].num_inference_steps == 4


def test_a_caption_column_without_a_prompt_column_is_named() -> None:
    with pytest.raises(ManifestError, match="did you mean its column `Caption`"):
        parse(table(["id", "Caption"], ["a", "a cat"]))


def test_the_notice_names_the_extra_columns_and_counts_the_rest() -> None:
    assert carried_notice([]) == ""
    assert carried_notice(["Campaign", "owner"]) == (
        "t2v reads none of these columns and carries them to the results untouched: "
        "`Campaign`, `owner`"
    )
    many = carried_notice([f"c{n}" for n in range(1_012)])
    assert many.endswith("`c8`, `c9` and 1,002 more")


def test_a_known_column_in_odd_case_and_spaces_is_used() -> None:
    row = parse(table(["prompt", "Num_Frames ", " SEED"], ["a cat", "8", "3"])).rows[0]
    assert (row.num_frames, row.seed) == (8, 3)


@pytest.mark.parametrize(
    "column",
    [
        *("notes", "category", "tags", "owner", "priority", "comment", "url", "lang"),
        *("Campaign", "title", "style", "model", "x", "prompt_2"),
    ],
)
def test_common_extra_columns_are_carried_through(column: str) -> None:
    manifest = parse(table(["prompt", column], ["a cat", "v"]))
    assert manifest.extra_columns == [column]
    assert manifest.rows[0].extra == {column: "v"}


def test_a_lookalike_of_a_column_the_header_has_is_an_extra_column() -> None:
    # `seeds` next to `seed` is deliberate; spelled like `num_frames` up to '-' it is not.
    manifest = parse(
        table(["prompt", "seed", "seeds", "uid", "ad", "id"], ["a cat", "1", "2", "u", "v", "a"])
    )
    assert manifest.extra_columns == ["seeds", "uid", "ad"]
    with pytest.raises(ManifestError, match="a column `Num-Frames` that looks like `num_frames`"):
        parse(table(["prompt", "num_frames", "Num-Frames"], ["a cat", "1", "2"]))


def test_a_misspelled_prompt_column_is_named() -> None:
    with pytest.raises(ManifestError) as caught:
        parse(table(["id", "promt"], ["a", "a cat"]))
    assert str(caught.value) == (
        "test.csv has no `prompt` column: did you mean its column `promt`? Rename it `prompt`."
    )


# A cap on the header


def test_a_header_with_too_many_columns_is_refused_quickly() -> None:
    started = time.perf_counter()
    with pytest.raises(ManifestError) as caught:
        parse(",".join(["prompt", *(f"c{n}" for n in range(200_000))]) + "\na\n")
    assert str(caught.value) == (
        "test.csv has 200,001 columns in its header, more than the 10,000 a manifest may have."
    )
    # Checking the widest header allowed is linear too; quadratic checks took minutes.
    header = ["prompt", *(f"col{n}" for n in range(MAX_COLUMNS - 1))]
    assert parse(",".join(header) + "\na\n").extra_columns == header[1:]
    assert time.perf_counter() - started < 20


def test_common_words_near_image_stay_extra_columns() -> None:
    # Campaign manifests carry `stage`, `page` or `age`: two edits from `image`, they are
    # other words, not misspellings; `images` and `imgae` are one edit away.
    columns = ["prompt", "stage", "page", "age", "usage", "fit"]
    manifest = parse(table(columns, ["a cat", "1", "2", "3", "4", "slim"]))
    assert manifest.extra_columns == columns[1:]
    for typo in ("images", "imgae"):
        with pytest.raises(ManifestError, match=f"`{typo}` that looks like `image`"):
            parse(table(["prompt", typo], ["a cat", "a.png"]))
