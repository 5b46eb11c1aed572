"""Reading a manifest: rows with defaults filled in, one error per bad row, and the
errors that refuse a manifest as a whole."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest

from tasks.errors import ManifestError
from tasks.manifest import (
    MAX_ROWS,
    InvalidRow,
    RenderRow,
    parse_manifest,
    read_header,
    read_manifest,
)
from tasks.manifest_row import derived_seed
from tasks.rules import DOCUMENTED_RULES
from tests.factories import parse, table

SEED_RULE = "an integer in 0…9223372036854775807"


def one_row(**cells: str) -> RenderRow | InvalidRow:
    """The single row of a manifest with a prompt and the given cells."""
    columns = {"prompt": "a cat", **cells}
    manifest = parse(table(list(columns), list(columns.values())))
    rows: list[RenderRow | InvalidRow] = [*manifest.rows, *manifest.invalid]
    (row,) = rows
    return row


def shown(text: str) -> str:
    """A cell as errors quote it: its repr, cut to 57 characters and '...' past 60."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def error_of(**cells: str) -> str:
    row = one_row(**cells)
    assert isinstance(row, InvalidRow), row
    return row.error


# Defaults and the derived seed


def test_defaults_fill_every_optional_column() -> None:
    assert one_row() == RenderRow(
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


def test_empty_cells_take_the_defaults() -> None:
    columns = ["id", "negative_prompt", "seed", "num_frames", "height", "width"]
    columns += ["num_inference_steps", "guidance_scale", "fps"]
    row = one_row(**dict.fromkeys(columns, ""))
    assert row == one_row()


def test_derived_seed_is_stable_and_in_bounds() -> None:
    expected = int.from_bytes(hashlib.sha256(b"clip-1").digest()[:8], "big") & (2**49 - 1)
    assert derived_seed("clip-1") == expected == 126689131785185
    assert derived_seed("clip-1") != derived_seed("clip-2")
    assert all(0 <= derived_seed(f"row-{n}") < 2**49 for n in range(1000))
    row = one_row(id="clip-1")
    assert isinstance(row, RenderRow)
    assert row.seed == expected


# Bounds: edge values accepted, values just outside refused with column, value and rule


@pytest.mark.parametrize(
    ("column", "text", "value"),
    [
        ("seed", "0", 0),
        ("seed", str(2**63 - 1), 2**63 - 1),  # exact: not rounded through a float
        ("seed", "9007199254740993.0", 9007199254740993),
        ("num_frames", "1", 1),
        ("num_frames", "128", 128),
        ("num_frames", "16.0", 16),  # an integral decimal is an integer
        ("num_frames", "+16", 16),
        ("num_frames", " 16 ", 16),
        ("height", "64", 64),
        ("height", "1024", 1024),
        ("width", "64", 64),
        ("width", "1024", 1024),
        ("num_inference_steps", "1", 1),
        ("num_inference_steps", "150", 150),
        ("guidance_scale", "0", 0.0),
        ("guidance_scale", "30", 30.0),
        ("guidance_scale", "7.5", 7.5),
        ("guidance_scale", ".5", 0.5),
        ("guidance_scale", "1e1", 10.0),  # a number column takes exponents
        ("fps", "1", 1),
        ("fps", "60", 60),
        ("candidates", "1", 1),
        ("candidates", "8", 8),
    ],
)
def test_edge_values_are_accepted(column: str, text: str, value: float) -> None:
    cells = {column: text}
    if column in ("height", "width"):
        cells["num_frames"] = "8"  # keep 1024-wide videos inside the per-row budget
    row = one_row(**cells)
    assert isinstance(row, RenderRow), row
    assert getattr(row, column) == value
    assert type(getattr(row, column)) is type(value)


@pytest.mark.parametrize(
    ("column", "text", "rule"),
    [
        ("seed", "-1", SEED_RULE),
        ("seed", str(2**63), SEED_RULE),
        ("seed", "1.5", SEED_RULE),
        ("num_frames", "0", "an integer in 1…128"),
        ("num_frames", "129", "an integer in 1…128"),
        ("num_frames", "16.5", "an integer in 1…128"),
        ("num_frames", "1e1", "an integer in 1…128"),  # an integer column takes no exponent
        ("num_frames", "sixteen", "an integer in 1…128"),
        ("num_frames", "1_6", "an integer in 1…128"),  # int() would take it
        ("num_frames", "١٦", "an integer in 1…128"),  # so would it these Arabic-Indic digits
        ("num_frames", "0x10", "an integer in 1…128"),
        ("height", "56", "a multiple of 8 in 64…1024"),
        ("height", "1032", "a multiple of 8 in 64…1024"),
        ("height", "100", "a multiple of 8 in 64…1024"),
        ("width", "56", "a multiple of 8 in 64…1024"),
        ("width", "1032", "a multiple of 8 in 64…1024"),
        ("width", "63", "a multiple of 8 in 64…1024"),
        ("num_inference_steps", "0", "an integer in 1…150"),
        ("num_inference_steps", "151", "an integer in 1…150"),
        ("guidance_scale", "-0.1", "a number in 0…30"),
        ("guidance_scale", "30.001", "a number in 0…30"),
        ("guidance_scale", "nan", "a number in 0…30"),
        ("guidance_scale", "NaN", "a number in 0…30"),
        ("guidance_scale", "inf", "a number in 0…30"),
        ("guidance_scale", "-Infinity", "a number in 0…30"),
        ("guidance_scale", "1e999", "a number in 0…30"),
        ("guidance_scale", "7,5", "a number in 0…30"),
        ("fps", "0", "an integer in 1…60"),
        ("fps", "61", "an integer in 1…60"),
        ("candidates", "0", "an integer in 1…8"),
        ("candidates", "9", "an integer in 1…8"),
    ],
)
def test_out_of_bound_values_name_column_value_and_rule(column: str, text: str, rule: str) -> None:
    assert error_of(**{column: text}) == f"`{column}` must be {rule}, got {text!r}."


def test_a_huge_number_is_refused_with_its_value_cut_short() -> None:
    text = "9" * 5000  # int() itself refuses strings past 4,300 digits
    assert error_of(seed=text) == f"`seed` must be {SEED_RULE}, got {shown(text)}."


def test_the_per_row_budget_allows_64_frames_of_512x512() -> None:
    assert DOCUMENTED_RULES.max_voxels == 64 * 512 * 512
    assert isinstance(one_row(num_frames="64", height="512", width="512"), RenderRow)
    assert isinstance(one_row(num_frames="16", height="1024", width="1024"), RenderRow)
    assert error_of(num_frames="65", height="512", width="512") == (
        "`num_frames` × `height` × `width` must be at most 16,777,216 (64 frames of 512×512), "
        "got 65×512×512 = 17,039,360."
    )


def test_text_columns_are_trimmed_and_bounded() -> None:
    row = one_row(prompt="  a dog\non two lines  ", negative_prompt=" blurry ")
    assert isinstance(row, RenderRow)
    assert (row.prompt, row.negative_prompt) == ("a dog\non two lines", "blurry")
    assert isinstance(one_row(prompt="y" * 2000, negative_prompt="n" * 2000), RenderRow)
    for column in ("prompt", "negative_prompt"):
        assert error_of(**{column: "y" * 2001}) == (
            f"`{column}` must be at most 2,000 characters, got 2,001 characters: "
            f"{shown('y' * 2001)}."
        )


@pytest.mark.parametrize(
    "prompt",
    [
        *("", "   ", "\t\n", "\u00a0\u00a0"),
        # Zero-width, joiners and other format characters, fillers, and mixes with spaces.
        *("\u200b", "\u200c\u200d", "\u2060", "\ufeff", " \u200b \u00ad "),
        *("\u3164", "\u2800\u2800", "\u180e", "\u202e\u200e", "\ufe0f"),
    ],
)
def test_a_prompt_with_nothing_visible_is_invalid(prompt: str) -> None:
    assert error_of(id="quiet", prompt=prompt) == (
        "`prompt` must not be empty after trimming spaces and invisible characters, "
        f"got {prompt!r}."
    )


@pytest.mark.parametrize("prompt", ["a\u200bcat", "\u200bcat", "🦊", "猫", "\u00a0."])
def test_a_prompt_with_a_visible_character_is_valid(prompt: str) -> None:
    assert isinstance(one_row(prompt=prompt), RenderRow)


# Ids


@pytest.mark.parametrize(
    "row_id",
    ["../x", "a/b", "a\\b", "/etc/passwd", "..", ".hidden", "-dash", "_x", "x" * 129, "é", "a b"],
)
def test_unsafe_ids_are_invalid(row_id: str) -> None:
    assert error_of(id=row_id) == (
        "`id` must be 1–128 ASCII letters, digits, '.', '_' or '-' starting with a letter "
        f"or digit (a safe file name), got {shown(row_id)}."
    )


# The id pattern allows '..' inside an id ("a..b"): no separator and no leading '.'
# means it can never be a path component of its own.
@pytest.mark.parametrize("row_id", ["a", "A.b_c-1", "x" * 128, "2026-11-28.clip", "a..b", "row-7"])
def test_safe_ids_are_kept(row_id: str) -> None:
    row = one_row(id=row_id)
    assert isinstance(row, RenderRow)
    assert row.id == row_id


def test_a_repeated_id_is_invalid_and_names_the_earlier_row() -> None:
    manifest = parse("id,prompt\na,one\nb,two\na,three\n")
    assert [row.id for row in manifest.rows] == ["a", "b"]
    assert manifest.invalid == [
        InvalidRow(
            3,
            "a",
            "`id` must be unique in the manifest, got 'a', which data row 1 already has.",
            {"id": "a", "prompt": "three"},
        )
    ]


def test_an_id_stays_taken_by_an_earlier_row_that_is_invalid() -> None:
    manifest = parse("id,prompt,height\na,one,100\na,two,64\n")
    assert manifest.rows == []
    assert manifest.invalid[1].error.startswith("`id` must be unique in the manifest, got 'a'")


def test_a_default_id_collides_with_the_same_explicit_id() -> None:
    manifest = parse("id,prompt\nrow-2,one\n,two\n")
    assert [row.id for row in manifest.rows] == ["row-2"]
    assert manifest.invalid[0].id == "row-2"
    assert "which data row 1 already has" in manifest.invalid[0].error


# Every broken column of a row in one error, in the documented column order


@pytest.mark.parametrize(
    ("cells", "columns"),
    [
        ({"prompt": "", "id": "../x", "height": "100"}, ["prompt", "id", "height"]),
        ({"id": "../x", "negative_prompt": "n" * 2001}, ["id", "negative_prompt"]),
        ({"seed": "-1", "num_frames": "0"}, ["seed", "num_frames"]),
        ({"height": "100", "width": "100", "fps": "0"}, ["height", "width", "fps"]),
        (
            {"num_inference_steps": "0", "guidance_scale": "nan", "fps": "0"},
            ["num_inference_steps", "guidance_scale", "fps"],
        ),
        ({"prompt": "a\x00b", "seed": "x"}, ["prompt", "seed"]),
    ],
)
def test_a_row_reports_every_broken_column(cells: dict[str, str], columns: list[str]) -> None:
    error = error_of(**cells)
    sentences = re.split(r"(?<=\.) (?=`)", error)
    assert [re.findall(r"^`(\w+)`", sentence)[0] for sentence in sentences] == columns


def test_a_row_too_large_is_reported_with_its_other_problems() -> None:
    error = error_of(id="../x", num_frames="128", height="1024", width="1024")
    assert error.startswith("`id` must be 1–128 ASCII letters")
    assert error.endswith("got 128×1024×1024 = 134,217,728.")


def test_a_repeated_id_is_reported_before_bad_numbers() -> None:
    manifest = parse("id,prompt,height\na,one,64\na,two,100\n")
    assert manifest.invalid[0].error.startswith("`id` must be unique")


def test_an_invalid_row_keeps_its_raw_cells_and_id() -> None:
    manifest = parse(
        table(
            [" Prompt ", "ID", "Height", "Campaign"],
            [" a dog ", " clip-1 ", " 100 ", "=x"],
            ["a cat", "", "100"],  # short: missing cells are empty
        )
    )
    first, second = manifest.invalid
    assert first.id == "clip-1"
    assert first.cells == {
        "prompt": " a dog ",
        "id": " clip-1 ",
        "height": " 100 ",
        "Campaign": "=x",
    }
    assert first.error == "`height` must be a multiple of 8 in 64…1024, got '100'."
    assert second.id == "row-2"
    assert second.cells == {"prompt": "a cat", "id": "", "height": "100", "Campaign": ""}


def test_a_row_with_more_cells_than_columns_is_invalid() -> None:
    manifest = parse("id,prompt\na,one,surplus\n")
    assert manifest.invalid == [
        InvalidRow(
            1,
            "a",
            "the row must have at most 2 cells, one per column of the header, got 3.",
            {"id": "a", "prompt": "one"},
        )
    ]


def test_a_short_row_takes_defaults_for_its_missing_cells() -> None:
    row = parse("prompt,id,seed,Campaign\na cat\n").rows[0]
    assert (row.id, row.seed, row.extra) == ("row-1", derived_seed("row-1"), {"Campaign": ""})


# CSV shape: BOM, headers, quoting, blank lines, extra columns


def test_bom_odd_headers_quoted_newlines_blank_lines_and_extra_columns() -> None:
    data = (
        "\ufeff\r\n"
        " ID ,PROMPT, Seed ,Campaign,owner,NUM_Frames\r\n"
        'a,"line one, with a comma\r\nline two ""quoted""",5,spring,=cmd,8\r\n'
        "\r\n"
        ",,,,,\r\n"
        "  \r\n"
        "b,plain,,summer,,\r\n"
    ).encode()
    manifest = parse_manifest(data, "odd.csv")
    assert manifest.extra_columns == ["Campaign", "owner"]
    assert manifest.invalid == []
    first, second = manifest.rows
    assert first.prompt == 'line one, with a comma\r\nline two "quoted"'
    assert (first.seed, first.num_frames) == (5, 8)
    assert first.extra == {"Campaign": "spring", "owner": "=cmd"}
    assert (second.line, second.id, second.extra) == (2, "b", {"Campaign": "summer", "owner": ""})


def test_row_numbers_count_data_rows_not_file_lines() -> None:
    manifest = parse('prompt\n"one\ntwo"\n\nthree\n')
    assert [(row.line, row.id) for row in manifest.rows] == [(1, "row-1"), (2, "row-2")]


def test_unicode_prompts_and_formula_looking_cells_are_kept_as_written() -> None:
    manifest = parse(table(["prompt", "negative_prompt"], ["=1+1 雪の中のキツネ 🦊", "@SUM(A1)"]))
    row = manifest.rows[0]
    assert (row.prompt, row.negative_prompt) == ("=1+1 雪の中のキツネ 🦊", "@SUM(A1)")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            b"prompt\ncaf\xe9 at night\n",
            "`prompt` must be UTF-8 text, got the byte 0xe9 at character 4: "
            "save the manifest as UTF-8 CSV.",
        ),
        (
            b"prompt,campaign\na cat,\xff\xfe spring\n",
            "`campaign` must be UTF-8 text, got the byte 0xff at character 1: "
            "save the manifest as UTF-8 CSV.",
        ),
        (b"prompt\na\x00b\n", "`prompt` must not hold a NUL character, got one at character 2."),
        (
            b"prompt,seed\na cat,1\x002\n",
            "`seed` must not hold a NUL character, got one at character 2.",
        ),
    ],
)
def test_a_row_with_bad_bytes_or_nul_is_invalid_alone(data: bytes, error: str) -> None:
    manifest = parse_manifest(data + b"a good dog\n", "test.csv")
    assert [row.prompt for row in manifest.rows] == ["a good dog"]
    (bad,) = manifest.invalid
    assert (bad.line, bad.error) == (1, error)
    # Its raw cells stay writable as UTF-8, with U+FFFD where each bad byte or NUL was.
    assert "\ufffd" in "".join(bad.cells.values())
    "".join(bad.cells.values()).encode("utf-8")


def test_an_id_with_a_bad_byte_is_shown_with_a_replacement_character() -> None:
    manifest = parse_manifest(b"id,prompt\nclip\xe9,a cat\n", "test.csv")
    assert manifest.invalid[0].id == "clip\ufffd"


# Manifests unusable as a whole


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad.csv is empty: it needs a header row with a `prompt` column."),
        (b"\xef\xbb\xbf\n\n", "bad.csv is empty: it needs a header row with a `prompt` column."),
        (b"id,seed\na,1\n", "bad.csv has no `prompt` column (its header has 2 columns)."),
        (b"a cat\n", "bad.csv has no `prompt` column (its header has 1 column)."),
        (b"prompt\n", "bad.csv has a header but no data rows."),
        (b"prompt,id\n\n,\n \n", "bad.csv has a header but no data rows."),
        (b"prompt, Prompt \na,b\n", "bad.csv names the column 'prompt' twice in its header."),
        (b"prompt,Tag,TAG\na,b,c\n", "bad.csv names the column 'tag' twice in its header."),
        (
            b"prompt,,\na,,\n",
            "bad.csv has a column with no name (column 2 of its header): name it or delete it.",
        ),
        (
            b"pr\xf6mpt\na cat\n",
            "bad.csv is not UTF-8 text (byte 2 is 0xf6): save it as UTF-8 CSV.",
        ),
        (  # the offset counts the BOM's three bytes
            b"\xef\xbb\xbfprompt,caf\xe9\na,b\n",
            "bad.csv is not UTF-8 text (byte 13 is 0xe9): save it as UTF-8 CSV.",
        ),
        (
            "prompt\n".encode("utf-16"),
            "bad.csv is not UTF-8 text (byte 0 is 0xff): save it as UTF-8 CSV.",
        ),
        (
            b"\nprompt,\x00\na,b\n",
            "bad.csv holds a NUL character on line 2: it is not a CSV file.",
        ),
        (
            b'prompt\n"unclosed\n',
            "bad.csv is not valid CSV near line 2: unexpected end of data.",
        ),
        (
            b'prompt\n"quoted"trailing\n',
            "bad.csv is not valid CSV near line 2: ',' expected after '\"'.",
        ),
    ],
)
def test_unusable_manifests_raise_one_sentence(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, "bad.csv")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)),
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",  # a zip (an .xlsx saved instead of a .csv)
        random.Random(0).randbytes(4096),
    ],
)
def test_binary_garbage_is_refused_as_a_whole(data: bytes) -> None:
    with pytest.raises(ManifestError, match=r"^bad\.csv (is not UTF-8|holds a NUL|has no)"):
        parse_manifest(data, "bad.csv")


def test_too_many_rows_are_refused_while_reading() -> None:
    rows = "a cat\n" * MAX_ROWS
    assert len(parse("prompt\n" + rows).rows) == MAX_ROWS
    # Reading stops at the first row too many: the broken CSV after it is never reached.
    with pytest.raises(ManifestError) as caught:
        parse("prompt\n" + rows + 'one more\n"unclosed\n')
    assert (
        str(caught.value) == "test.csv has more than 100,000 data rows: split it into smaller runs."
    )


def test_limit_keeps_the_first_rows_and_lifts_the_row_limit() -> None:
    manifest = parse("prompt\none\n\ntwo\nthree\n", limit=2)
    assert [row.prompt for row in manifest.rows] == ["one", "two"]
    assert len(parse("prompt\n" + "a cat\n" * (MAX_ROWS + 1), limit=3).rows) == 3


# Reading from a location, and the hostile example


def test_read_manifest_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=re.escape("missing.csv")):
        read_manifest(str(tmp_path / "missing.csv"))


def test_the_nasty_example_keeps_good_rows_and_reports_every_bad_one() -> None:
    manifest = read_manifest("examples/nasty.csv")
    assert manifest.extra_columns == ["Campaign"]
    assert [row.id for row in manifest.rows] == [
        "plain",
        "unicode-ok",
        "multi-line",
        "formula",
        "row-5",
    ]
    assert all((row.height, row.width, row.num_frames) == (64, 64, 8) for row in manifest.rows)
    assert "\n" in manifest.rows[2].prompt and "," in manifest.rows[2].prompt
    assert manifest.rows[3].prompt.startswith("=")
    errors = {row.id: row.error for row in manifest.invalid}
    assert list(errors) == [
        "../escape",
        "tall",
        "no-frames",
        "nan-guidance",
        "plain",
        "empty-prompt",
        "huge",
    ]
    assert errors["tall"] == "`height` must be a multiple of 8 in 64…1024, got '100'."
    assert errors["nan-guidance"] == "`guidance_scale` must be a number in 0…30, got 'NaN'."
    assert errors["plain"].endswith("which data row 1 already has.")
    assert all(re.match(r"`\w+`", error) for error in errors.values())


# Errors about a whole file quote none of it beyond what names the problem (issue 16)

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            f"AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY={SECRET}\n".encode(),
            "secret.env has no `prompt` column (its header has 1 column).",
        ),
        (
            f"prompt,{SECRET},{SECRET}\na,b,c\n".encode(),
            "secret.env gives columns 2 and 3 of its header the same name.",
        ),
        (
            f"prompt,,{SECRET}\na,b,c\n".encode(),
            "secret.env has a column with no name (column 2 of its header): name it or delete it.",
        ),
        (
            f"{SECRET}\x00,prompt\na,b\n".encode(),
            "secret.env holds a NUL character on line 1: it is not a CSV file.",
        ),
        (
            f"{SECRET}\xff,prompt\na,b\n".encode("latin-1"),
            "secret.env is not UTF-8 text (byte 40 is 0xff): save it as UTF-8 CSV.",
        ),
        (
            f'prompt,"{SECRET}\n'.encode(),
            "secret.env is not valid CSV near line 1: unexpected end of data.",
        ),
    ],
)
def test_errors_about_a_whole_file_do_not_echo_it(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, "secret.env")
    assert str(caught.value) == message
    assert SECRET not in message


# A huge cell, and a header read alone


def test_a_huge_prompt_makes_only_its_row_invalid() -> None:
    huge = "x" * 200_000
    manifest = parse(table(["id", "prompt"], ["big", huge], ["ok", "a cat"]))
    assert [row.id for row in manifest.rows] == ["ok"]
    (bad,) = manifest.invalid
    assert bad.error == (
        f"`prompt` must be at most 2,000 characters, got 200,000 characters: {shown(huge)}."
    )
    assert len(bad.error) < 200


def test_read_header_checks_the_header_and_reads_no_further(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(" Prompt ,id,Campaign\n" + "a cat,a,x\n" * 10 + '"unclosed\n')
    assert read_header(str(path)) == ["Prompt", "id", "Campaign"]
    with pytest.raises(ManifestError, match="not valid CSV near line 12"):
        read_manifest(str(path))
    path.write_text("promt,id\n" + "a cat,a\n")
    with pytest.raises(ManifestError, match="did you mean its column `promt`"):
        read_header(str(path))


# Seeds and a spreadsheet


def test_derived_seeds_survive_a_spreadsheet() -> None:
    # A spreadsheet keeps 15 significant digits of a number.
    seeds = [derived_seed(f"clip-{n}") for n in range(10_000)]
    assert all(int(float(f"{seed:.15g}")) == seed for seed in seeds)
    assert max(seeds) > 2**48  # still most of the 49 bits
