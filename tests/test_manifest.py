from __future__ import annotations

import pytest

from tasks.errors import ManifestError
from tasks.manifest import (
    MAX_ROWS,
    InvalidRow,
    Manifest,
    RenderRow,
    derived_seed,
    parse_manifest,
    read_manifest,
)


def parse(text: str, **kwargs: int) -> Manifest:
    return parse_manifest(text.encode("utf-8"), "test.csv", **kwargs)


def one_row(**cells: str) -> RenderRow | InvalidRow:
    """The single row of a manifest with a prompt and the given cells."""
    columns = {"prompt": "a cat", **cells}
    manifest = parse(",".join(columns) + "\n" + ",".join(columns.values()) + "\n")
    return (manifest.rows + manifest.invalid)[0]  # type: ignore[operator]


def test_defaults_fill_every_optional_column() -> None:
    row = one_row()
    assert row == RenderRow(
        line=1,
        id="row-1",
        prompt="a cat",
        negative_prompt="",
        seed=derived_seed("row-1"),
        num_frames=16,
        height=256,
        width=256,
        num_inference_steps=25,
        guidance_scale=9.0,
        fps=8,
    )


def test_derived_seed_is_stable_and_in_bounds() -> None:
    assert derived_seed("clip-1") == derived_seed("clip-1") != derived_seed("clip-2")
    assert derived_seed("clip-1") == 8116176167606840289
    assert 0 <= derived_seed("x") <= 2**63 - 1


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("seed", "0"),
        ("seed", str(2**63 - 1)),
        ("num_frames", "1"),
        ("num_frames", "128"),
        ("height", "64"),
        ("height", "1024"),
        ("width", "64"),
        ("width", "1024"),
        ("num_inference_steps", "1"),
        ("num_inference_steps", "150"),
        ("guidance_scale", "0"),
        ("guidance_scale", "30"),
        ("guidance_scale", "7.5"),
        ("fps", "1"),
        ("fps", "60"),
        ("num_frames", "16.0"),
    ],
)
def test_edge_values_are_accepted(column: str, value: str) -> None:
    cells = {column: value}
    if column in ("height", "width") and value == "1024":
        cells["num_frames"] = "8"
    row = one_row(**cells)
    assert isinstance(row, RenderRow), row
    assert getattr(row, column) == (float(value) if "." in value else int(value))


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("seed", "-1", "an integer in 0…9223372036854775807"),
        ("seed", str(2**63), "an integer in 0…9223372036854775807"),
        ("seed", "1.5", "an integer in 0…9223372036854775807"),
        ("num_frames", "0", "an integer in 1…128"),
        ("num_frames", "129", "an integer in 1…128"),
        ("num_frames", "1e1", "an integer in 1…128"),
        ("num_frames", "sixteen", "an integer in 1…128"),
        ("height", "56", "a multiple of 8 in 64…1024"),
        ("height", "1032", "a multiple of 8 in 64…1024"),
        ("height", "100", "a multiple of 8 in 64…1024"),
        ("width", "63", "a multiple of 8 in 64…1024"),
        ("num_inference_steps", "0", "an integer in 1…150"),
        ("num_inference_steps", "151", "an integer in 1…150"),
        ("guidance_scale", "-0.1", "a number in 0…30"),
        ("guidance_scale", "30.5", "a number in 0…30"),
        ("guidance_scale", "nan", "a number in 0…30"),
        ("guidance_scale", "inf", "a number in 0…30"),
        ("fps", "0", "an integer in 1…60"),
        ("fps", "61", "an integer in 1…60"),
    ],
)
def test_out_of_bound_values_name_column_value_and_rule(column: str, value: str, rule: str) -> None:
    row = one_row(**{column: value})
    assert isinstance(row, InvalidRow)
    assert row.error == f"`{column}` must be {rule}, got {value!r}."


def test_a_video_too_large_for_a_gpu_is_invalid() -> None:
    row = one_row(num_frames="128", height="1024", width="1024")
    assert isinstance(row, InvalidRow)
    assert "at most 16,777,216" in row.error
    assert "128×1024×1024" in row.error


@pytest.mark.parametrize(
    "row_id", ["../x", "a/b", "a\\b", ".hidden", "-dash", "x" * 129, "é", "a b", ".."]
)
def test_unsafe_ids_are_invalid(row_id: str) -> None:
    row = one_row(id=row_id)
    assert isinstance(row, InvalidRow)
    assert row.error.startswith("`id` must be 1–128 letters")
    assert repr(row_id[:57])[:-1] in row.error


@pytest.mark.parametrize("row_id", ["a", "A.b_c-1", "x" * 128, "2026-11-28.clip"])
def test_safe_ids_are_kept(row_id: str) -> None:
    row = one_row(id=row_id)
    assert isinstance(row, RenderRow)
    assert row.id == row_id


def test_text_columns_are_trimmed_and_bounded() -> None:
    assert one_row(prompt="  a dog  ").prompt == "a dog"  # type: ignore[union-attr]
    for column in ("prompt", "negative_prompt"):
        row = one_row(**{column: "y" * 2001})
        assert isinstance(row, InvalidRow)
        assert row.error == f"`{column}` must be at most 2,000 characters, got 2,001."
    assert isinstance(one_row(prompt="y" * 2000), RenderRow)


def test_empty_prompt_is_invalid() -> None:
    (row,) = parse("id,prompt\nquiet,   \n").invalid
    assert row.error == "`prompt` must not be empty."


def test_repeated_id_is_invalid_and_names_the_first_row() -> None:
    manifest = parse("id,prompt\na,one\nb,two\na,three\n")
    assert [row.id for row in manifest.rows] == ["a", "b"]
    assert manifest.invalid == [
        InvalidRow(3, "a", "`id` 'a' repeats the id of data row 1.", {"id": "a", "prompt": "three"})
    ]


def test_bom_odd_headers_quoted_newlines_and_extra_columns() -> None:
    data = (
        "\ufeff ID ,PROMPT, Seed ,Campaign,owner\r\n"
        'a,"line one,\r\nline two",5,spring,=cmd\r\n'
        "\r\n"
        "b,plain,,summer,\r\n"
    ).encode()
    manifest = parse_manifest(data, "odd.csv")
    assert manifest.extra_columns == ["Campaign", "owner"]
    first, second = manifest.rows
    assert first.prompt == "line one,\r\nline two"
    assert first.seed == 5
    assert first.extra == {"Campaign": "spring", "owner": "=cmd"}
    assert (second.line, second.id, second.extra["Campaign"]) == (2, "b", "summer")


def test_a_row_with_too_many_cells_is_invalid() -> None:
    manifest = parse("id,prompt\na,one,extra\n")
    assert manifest.invalid[0].error == "the row has 3 cells but the header names 2 columns."


def test_limit_keeps_the_first_rows() -> None:
    manifest = parse("prompt\none\ntwo\nthree\n", limit=2)
    assert [row.prompt for row in manifest.rows] == ["one", "two"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad.csv is empty"),
        (b"id,seed\na,1\n", "bad.csv has no `prompt` column (its header is 'id', 'seed')"),
        (b"prompt\n", "bad.csv has a header but no data rows"),
        (b"prompt\n\n\n", "bad.csv has a header but no data rows"),
        (b"prompt,Prompt\na,b\n", "bad.csv repeats the column 'prompt'"),
        (b"prompt\n\xff\xfe cat\n", "bad.csv is not UTF-8 text (byte 7 is 0xff)"),
        (b"prompt\na\x00b\n", "bad.csv holds a NUL character on line 2"),
        (b'prompt\n"unclosed\n', "bad.csv is not valid CSV"),
        (bytes(range(256)), "bad.csv is not UTF-8 text"),
    ],
)
def test_unusable_manifests_raise_one_sentence(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, "bad.csv")
    assert str(caught.value).startswith(message)


def test_too_many_rows_is_refused_before_validating_them_all() -> None:
    data = "prompt\n" + "a cat\n" * (MAX_ROWS + 1)
    with pytest.raises(ManifestError, match="more than 10,000 rows"):
        parse(data)
    assert len(parse(data, limit=MAX_ROWS).rows) == MAX_ROWS


def test_read_manifest_names_a_missing_file(tmp_path: object) -> None:
    with pytest.raises(Exception, match=r"missing\.csv"):
        read_manifest(f"{tmp_path}/missing.csv")


def test_the_nasty_example_reports_every_bad_row() -> None:
    manifest = read_manifest("examples/nasty.csv")
    assert [row.id for row in manifest.rows] == [
        "plain",
        "unicode-ok",
        "multi-line",
        "formula",
        "defaults",
    ]
    errors = {row.id: row.error for row in manifest.invalid}
    assert set(errors) == {
        "../escape", "tall", "no-frames", "nan-guidance", "plain", "empty-prompt", "huge"
    }  # fmt: skip
    assert errors["tall"] == "`height` must be a multiple of 8 in 64…1024, got '100'."
    assert manifest.extra_columns == ["Campaign"]
