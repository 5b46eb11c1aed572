"""Start images: where they may come from, every hostile file refused for its row alone with
one sentence, and the one rule that turns any accepted image into 8-bit RGB of a row's size."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.s3 import s3_client
from tasks.errors import RenderError, RowError
from tasks.families.ltx import LTXVideo
from tasks.images import (
    MAX_IMAGE_BYTES,
    PICTURES,
    ImageSources,
    PictureCache,
    StartImage,
    check_image_bytes,
    fit_image,
    load_image,
    thumbnail,
)
from tasks.manifest import InvalidRow, RenderRow, read_manifest
from tasks.presets import model_rules
from tasks.start_images import read_start_images
from tests.factories import table

LTX = LTXVideo.rules


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def gradient(width: int = 40, height: int = 24) -> Image.Image:
    """An RGB image whose every pixel differs, so crops and rotations show."""
    x = np.arange(width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.arange(height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x * 6, y * 10, np.full_like(x, 7)], -1), "RGB")


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming `width`×`height` pixels, with a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def refusal(data: bytes) -> str:
    with pytest.raises(RowError) as raised:
        check_image_bytes("image", "in.png", data)
    return str(raised.value)


def test_a_png_bomb_is_refused_from_its_header() -> None:
    for width, height in ((8_000, 8_000), (100_000, 100_000)):
        message = refusal(png_bomb(width, height))
        assert message.startswith("`image` 'in.png' ")
        assert "pixels" in message and "50,000,000" in message


def test_a_truncated_jpeg_is_refused() -> None:
    data = encoded(gradient(64, 64), "JPEG")
    assert refusal(data[: len(data) // 2]) == "`image` 'in.png' is truncated or corrupt."


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_an_animation_is_refused(fmt: str) -> None:
    frames = [gradient(), gradient().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:])
    message = refusal(data)
    if fmt == "GIF":
        assert message == "`image` 'in.png' is a GIF image: only PNG, JPEG and WebP are taken."
    else:
        assert message == "`image` 'in.png' is animated: only still images are taken."


def test_text_named_png_is_not_an_image_and_its_bytes_are_not_echoed() -> None:
    message = refusal(b"AWS_SECRET_ACCESS_KEY=hunter2\n")
    assert message == "`image` 'in.png' is not an image that can be read."
    assert "hunter2" not in message


def test_other_formats_and_byte_cap() -> None:
    assert "is a BMP image" in refusal(encoded(gradient(), "BMP"))
    assert "more than 52,428,800" in refusal(b"\0" * (MAX_IMAGE_BYTES + 1))


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # pure red in CMYK
    rgb = check_image_bytes("image", "c.jpg", encoded(cmyk, "JPEG", quality=95))
    assert rgb.mode == "RGB" and rgb.size == (16, 8)
    red, green, blue = rgb.getpixel((8, 4))  # type: ignore[misc]
    assert red > 200 and green < 50 and blue < 50


def test_16_bit_png_keeps_its_top_8_bits() -> None:
    grey = Image.fromarray(np.full((8, 8), 0x8040, dtype=np.uint16))
    data = encoded(grey, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert check_image_bytes("image", "g.png", data).getpixel((0, 0)) == (0x80, 0x80, 0x80)


def test_alpha_and_palette_transparency_are_composited_on_black() -> None:
    rgba = Image.new("RGBA", (4, 4), (200, 100, 50, 128))
    assert check_image_bytes("image", "a.png", encoded(rgba, "PNG")).getpixel((0, 0)) == (
        100,
        50,
        25,
    )
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 255, 255])
    data = encoded(palette, "PNG", transparency=1)
    assert check_image_bytes("image", "p.png", data).getpixel((0, 0)) == (0, 0, 0)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encoded(gradient(40, 24), "JPEG", exif=exif.tobytes(), quality=95)
    assert check_image_bytes("image", "r.jpg", data).size == (24, 40)


def test_fit_covers_by_cropping_or_contains_by_letterboxing() -> None:
    wide = Image.new("RGB", (80, 40), (255, 255, 255))
    covered = fit_image(wide, 32, 32, "cover")
    assert covered.size == (32, 32) and covered.getpixel((0, 0)) == (255, 255, 255)
    contained = fit_image(wide, 32, 32, "contain")
    assert contained.size == (32, 32)
    assert contained.getpixel((16, 0)) == (0, 0, 0)  # the letterbox's bar
    assert contained.getpixel((16, 16)) == (255, 255, 255)


def manifest_rows(
    folder: Path, *images: str, image_root: str | None = None
) -> list[RenderRow | InvalidRow]:
    """Rows of a manifest in `folder` naming each of `images`, in input order."""
    rows = [[f"p{n}", f"r{n}", cell] for n, cell in enumerate(images)]
    (folder / "m.csv").write_text(table(["prompt", "id", "image"], *rows))
    manifest = read_manifest(str(folder / "m.csv"), rules=LTX, image_root=image_root)
    return sorted([*manifest.rows, *manifest.invalid], key=lambda row: row.line)


def error(row: RenderRow | InvalidRow) -> str:
    assert isinstance(row, InvalidRow), row
    return row.error


def test_local_paths_stay_inside_the_manifests_folder(tmp_path: Path) -> None:
    inside, outside = tmp_path / "job", tmp_path / "elsewhere"
    (inside / "shots").mkdir(parents=True)
    outside.mkdir()
    png = encoded(gradient(), "PNG")
    (inside / "shots" / "a.png").write_bytes(png)
    (outside / "b.png").write_bytes(png)
    (inside / "link.png").symlink_to(outside / "b.png")
    os.mkfifo(inside / "fifo.png")
    (inside / "notes.png").write_text("not a picture")
    rows = manifest_rows(
        inside,
        "shots/a.png",
        str(inside / "shots" / "a.png"),
        "../elsewhere/b.png",
        str(outside / "b.png"),
        "link.png",
        "fifo.png",
        "shots",
        "missing.png",
        "notes.png",
        "file:///etc/passwd",
    )
    first, absolute_inside, *bad = rows
    assert isinstance(first, RenderRow) and first.image is not None
    assert first.image == StartImage(
        str(inside / "shots" / "a.png"), hashlib.sha256(png).hexdigest()
    )
    assert isinstance(absolute_inside, RenderRow)
    errors = [error(row) for row in bad]
    for escaped in errors[:3]:
        assert "`image` must stay inside the manifest's folder, after following links" in escaped
        assert "--image-root" in escaped
    assert errors[3] == "`image` 'fifo.png' is not a regular file."
    assert errors[4] == "`image` 'shots' is not a regular file."
    assert errors[5] == "`image` 'missing.png' was not found."
    assert errors[6] == "`image` 'notes.png' is not an image that can be read."
    assert errors[7].startswith("`image` must be a path relative to the manifest's folder")


def test_an_image_root_lets_images_come_from_another_folder(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "b.png").write_bytes(encoded(gradient(), "PNG"))
    rows = manifest_rows(
        tmp_path / "job", "../library/b.png", "/etc/hostname", image_root=str(tmp_path / "library")
    )
    assert isinstance(rows[0], RenderRow)
    assert "inside the manifest's folder or the image root" in error(rows[1])


def test_keys_of_an_s3_manifest_resolve_against_its_prefix_and_never_reach_local_files(
    s3_bucket: str, tmp_path: Path
) -> None:
    png = encoded(gradient(), "PNG")
    (tmp_path / "local.png").write_bytes(png)
    client = s3_client()
    client.put_object(Bucket=s3_bucket, Key="jobs/shots/a.png", Body=png)
    client.put_object(Bucket=s3_bucket, Key="other/b.png", Body=png)
    rows = [
        ["p", "rel", "shots/a.png"],
        ["p", "abs", f"s3://{s3_bucket}/other/b.png"],
        ["p", "local", str(tmp_path / "local.png")],
        ["p", "up", "../other/b.png"],
        ["p", "gone", "shots/none.png"],
    ]
    body = table(["prompt", "id", "image"], *rows).encode()
    client.put_object(Bucket=s3_bucket, Key="jobs/m.csv", Body=body)
    manifest = read_manifest(f"s3://{s3_bucket}/jobs/m.csv", rules=LTX, image_root=str(tmp_path))
    ok = {row.id: row.image for row in manifest.rows}
    digest = hashlib.sha256(png).hexdigest()
    assert ok == {
        "rel": StartImage(f"s3://{s3_bucket}/jobs/shots/a.png", digest),
        "abs": StartImage(f"s3://{s3_bucket}/other/b.png", digest),
    }
    invalid = {row.id: row.error for row in manifest.invalid}
    assert "never a local file or '..'" in invalid["local"]
    assert "never a local file or '..'" in invalid["up"]
    assert invalid["gone"].startswith("`image` 'shots/none.png' could not be read: ")


def test_a_render_takes_the_bytes_checked_and_refuses_changed_ones_read_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(encoded(gradient(), "PNG"))
    image = StartImage(str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    first = load_image(image, 32, 16, "cover")
    assert first.size == (32, 16)
    path.write_bytes(encoded(gradient(30, 30), "PNG"))
    # Kept by the process: the picture of the bytes whose sha256 the key holds.
    assert load_image(image, 32, 16, "cover") is first
    PICTURES.clear()
    with pytest.raises(RenderError, match="changed since the manifest was checked"):
        load_image(image, 32, 16, "cover")


def test_the_cache_keeps_the_latest_pictures_within_its_budget() -> None:
    cache = PictureCache(budget=3 * 40 * 24 * 2)
    pictures = {n: gradient() for n in range(3)}
    for n, picture in pictures.items():
        cache.put(n, picture)
    assert cache.get(0) is None and cache.get(2) is pictures[2]
    cache.get(1)  # used last: the next one in pushes 2 out
    cache.put(3, gradient())
    assert (cache.get(1), cache.get(2)) == (pictures[1], None)
    cache.put("huge", gradient(200, 200))
    assert cache.get("huge") is None


def test_rows_sharing_an_s3_image_render_from_the_one_read_of_their_check(
    s3_bucket: str,
) -> None:
    client = s3_client()
    client.put_object(Bucket=s3_bucket, Key="jobs/shot.png", Body=encoded(gradient(), "PNG"))
    rows = [["p", f"r{n}", "shot.png"] for n in range(3)]
    client.put_object(
        Bucket=s3_bucket, Key="jobs/m.csv", Body=table(["prompt", "id", "image"], *rows).encode()
    )
    PICTURES.clear()
    manifest = read_manifest(f"s3://{s3_bucket}/jobs/m.csv", rules=LTX)
    client.delete_object(Bucket=s3_bucket, Key="jobs/shot.png")
    assert read_start_images(manifest.rows) == []
    pictures = {id(load_image(row.image, 96, 64, "cover")) for row in manifest.rows if row.image}
    assert len(pictures) == 1
    shot = manifest.rows[0].image
    jpeg = thumbnail(shot.uri, shot.sha256) if shot is not None else None
    assert jpeg is not None and jpeg.startswith(b"\xff\xd8")  # a JPEG, from memory
    PICTURES.clear()
    ((row, error),) = read_start_images(manifest.rows[:1])
    assert row.id == "r0" and error.startswith("the start image could not be read again: ")


def test_a_model_that_takes_no_image_refuses_image_rows_naming_the_presets_that_do(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.png").write_bytes(encoded(gradient(), "PNG"))
    (tmp_path / "m.csv").write_text(
        table(
            ["prompt", "image", "last_image"],
            ["text", "", ""],
            ["p", "a.png", ""],
            ["p", "a.png", "a.png"],
            ["p", "", "a.png"],
        )
    )
    manifest = read_manifest(str(tmp_path / "m.csv"))
    assert [row.line for row in manifest.rows] == [1]
    assert [row.error for row in manifest.invalid] == [
        "`image` needs a model that takes a start image, and this model does not (presets "
        "that do: wan2.2-5b, tiny-wan2.2-ti2v, wan2.1-i2v-14b-480p, wan2.1-i2v-14b-720p, "
        "tiny-wan-i2v, ltx-video, tiny-ltx, cogvideox-5b-i2v, tiny-cogvideox-i2v).",
        "`image` and `last_image` need a model that takes a start image and a last frame, and "
        "this model does not (presets that do: wan2.1-flf2v-14b-720p, tiny-wan-flf2v).",
        "`last_image` is the video's last frame and needs a start image in `image`.",
    ]


@pytest.mark.parametrize(
    ("model", "error"),
    [
        (
            "wan2.1-i2v-14b-480p",
            "`image` must name a start image: this Wan I2V model renders from a start image "
            "only (presets that render the row as it is: wan2.1-1.3b, wan2.1-14b, wan2.2-5b, "
            "wan2.2-a14b, tiny-wan, tiny-wan2.2-ti2v).",
        ),
        (
            "cogvideox-5b-i2v",
            "`image` must name a start image: this CogVideoX I2V model renders from a start "
            "image only (presets that render the row as it is: cogvideox-2b, cogvideox-5b, "
            "tiny-cogvideox).",
        ),
    ],
)
def test_an_image_only_model_refuses_rows_without_an_image_naming_the_presets_that_render_them(
    model: str, error: str, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(encoded(gradient(), "PNG"))
    (tmp_path / "m.csv").write_text(table(["prompt", "image"], ["text", ""], ["p", "a.png"]))
    manifest = read_manifest(str(tmp_path / "m.csv"), rules=model_rules(model))
    assert [row.line for row in manifest.rows] == [2]
    assert [row.error for row in manifest.invalid] == [error]


def test_a_first_last_frame_model_needs_both_and_a_one_image_model_takes_no_last_frame(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.png").write_bytes(encoded(gradient(), "PNG"))
    (tmp_path / "m.csv").write_text(
        table(["prompt", "image", "last_image"], ["p", "a.png", ""], ["p", "a.png", "a.png"])
    )
    both = read_manifest(str(tmp_path / "m.csv"), rules=model_rules("wan2.1-flf2v-14b-720p"))
    assert [row.line for row in both.rows] == [2]
    assert [row.error for row in both.invalid] == [
        "`last_image` must name a last frame: this Wan I2V model renders from a start image and "
        "a last frame only (presets that render the row as it is: wan2.2-5b, tiny-wan2.2-ti2v, "
        "wan2.1-i2v-14b-480p, wan2.1-i2v-14b-720p, tiny-wan-i2v)."
    ]
    (tmp_path / "m.csv").write_text(
        table(
            ["prompt", "image", "last_image", "num_frames"],
            ["p", "a.png", "a.png", "1"],
            ["p", "a.png", "a.png", "5"],
        )
    )
    frames = read_manifest(str(tmp_path / "m.csv"), rules=model_rules("wan2.1-flf2v-14b-720p"))
    assert [row.line for row in frames.rows] == [2]
    assert [row.error for row in frames.invalid] == [
        "`num_frames` must be at least 5 for a row with a `last_image`, got 1."
    ]
    (tmp_path / "m.csv").write_text(
        table(["prompt", "image", "last_image"], ["p", "a.png", ""], ["p", "a.png", "a.png"])
    )
    one = read_manifest(str(tmp_path / "m.csv"), rules=model_rules("wan2.1-i2v-14b-720p"))
    assert [row.line for row in one.rows] == [1]
    assert [row.error for row in one.invalid] == [
        "`last_image` needs a model that takes a last frame, and this Wan I2V model does not "
        "(presets that do: wan2.1-flf2v-14b-720p, tiny-wan-flf2v)."
    ]


def test_image_fit_is_cover_or_contain(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        table(["prompt", "image_fit"], ["a", ""], ["b", "Contain"], ["c", "stretch"])
    )
    manifest = read_manifest(str(tmp_path / "m.csv"))
    assert [row.image_fit for row in manifest.rows] == ["cover", "contain"]
    assert manifest.invalid[0].error == "`image_fit` must be cover or contain, got 'stretch'."


def test_an_image_that_rows_share_is_read_once(s3_bucket: str) -> None:
    client = s3_client()
    client.put_object(Bucket=s3_bucket, Key="jobs/shot.png", Body=encoded(gradient(), "PNG"))
    rows = [["p", f"r{n}", "shot.png"] for n in range(3)]
    body = table(["prompt", "id", "image"], *rows).encode()
    client.put_object(Bucket=s3_bucket, Key="jobs/m.csv", Body=body)
    sources = ImageSources.for_manifest(f"s3://{s3_bucket}/jobs/m.csv")
    first = sources.check("image", "shot.png")
    client.delete_object(Bucket=s3_bucket, Key="jobs/shot.png")
    assert sources.check("image", "shot.png") == first
    with pytest.raises(RowError, match="could not be read"):
        ImageSources.for_manifest(f"s3://{s3_bucket}/jobs/m.csv").check("image", "shot.png")
