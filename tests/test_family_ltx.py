from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from storage.s3 import s3_client
from tasks.families.ltx import LTXVideo
from tasks.images import ImageSources, StartImage
from tasks.manifest import RenderRow, parse_manifest
from tests.factories import render_row

FAMILY = LTXVideo()


@pytest.fixture(scope="module")
def tiny() -> Any:
    pipe = FAMILY.build_tiny(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe: Any, rows: list[RenderRow]) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(row.seed) for row in rows]
    return FAMILY.generate(pipe, rows, generators).pixels


def test_the_rows_fps_conditions_the_video(tiny: Any) -> None:
    at_25, at_8 = (render(tiny, [render_row(1, fps=fps)]) for fps in (25, 8))
    assert not torch.equal(at_25, at_8)
    with pytest.raises(ValueError, match=r"share one fps for LTX-Video but have \[8, 25\]"):
        render(tiny, [render_row(1, fps=25), render_row(2, fps=8)])


def test_a_frame_count_off_the_rule_renders_fewer_frames(tiny: Any) -> None:
    rules = FAMILY.rules
    assert render(tiny, [render_row(1, num_frames=12)]).shape[1] == 9
    assert 12 % rules.frame_step != 1
    assert (9 - 1) % rules.frame_step == 0


def test_the_rules_default_to_the_pipelines_own_defaults_and_let_them_through() -> None:
    from diffusers import LTXPipeline

    defaults = inspect.signature(LTXPipeline.__call__).parameters
    rules = FAMILY.rules
    for column, argument in [
        ("height", "height"),
        ("width", "width"),
        ("num_frames", "num_frames"),
        ("fps", "frame_rate"),
        ("num_inference_steps", "num_inference_steps"),
        ("guidance_scale", "guidance_scale"),
    ]:
        assert getattr(rules, column) == defaults[argument].default, column
    assert FAMILY.token_limit == defaults["max_sequence_length"].default
    assert (rules.num_frames - 1) % rules.frame_step == 0
    for size in (rules.height, rules.width):
        assert size % rules.size_multiple == 0 and rules.min_size <= size <= rules.max_size
    assert rules.num_frames <= rules.max_frames
    assert rules.num_frames * rules.height * rules.width <= rules.max_voxels


def test_one_step_is_refused_as_its_scheduler_cannot_take_it(tiny: Any) -> None:
    # shift_terminal stretches the schedule by its last sigma: 0 / 0 with a single step.
    with (
        pytest.warns(RuntimeWarning, match="invalid value encountered in divide"),
        pytest.raises(IndexError),
    ):
        render(tiny, [render_row(1, num_inference_steps=1)])
    manifest = parse_manifest(
        b"prompt,num_inference_steps\na,1\nb,2\n", "m.csv", rules=FAMILY.rules
    )
    assert [row.num_inference_steps for row in manifest.rows] == [2]
    assert manifest.invalid[0].error == (
        "`num_inference_steps` must be an integer in 2…150 for LTX-Video, got 1 (nearest: 2)."
    )


def test_long_prompts_count_more_tokens_than_the_limit(tiny: Any) -> None:
    assert tiny.tokenizer.model_max_length == FAMILY.token_limit == 128
    assert FAMILY.count_tokens(tiny, "a cat runs") == 4  # three words and </s>
    assert FAMILY.count_tokens(tiny, "cat " * 200) == 201 > FAMILY.token_limit


def test_the_random_preset_has_the_full_size_architecture() -> None:
    pipe = FAMILY.build_random("ltx-video", torch.device("meta"), torch.bfloat16)

    def billions(module: torch.nn.Module) -> float:
        return sum(parameter.numel() for parameter in module.parameters()) / 1e9

    assert 1.9 < billions(FAMILY.denoiser(pipe)) < 2.0
    assert 4.7 < billions(pipe.text_encoder) < 4.8  # T5-XXL's encoder
    assert pipe.vae.spatial_compression_ratio == 32
    assert pipe.vae.temporal_compression_ratio == 8
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.transformer.device.type == "meta"


def start_image(folder: Path, name: str, colour: tuple[int, int, int]) -> StartImage:
    """A 48×40 PNG of one colour with a white square, saved and checked as a manifest would."""
    picture = Image.new("RGB", (48, 40), colour)
    picture.paste((255, 255, 255), (8, 8, 24, 24))
    picture.save(folder / name)
    return ImageSources(str(folder)).check("image", name)


def test_image_rows_render_through_the_image_pipeline_over_the_same_weights(
    tiny: Any, tmp_path: Path
) -> None:
    red, blue = (start_image(tmp_path, f"{c}.png", rgb) for c, rgb in
                 (("red", (255, 0, 0)), ("blue", (0, 0, 255))))  # fmt: skip
    rows = [render_row(1, image=red), render_row(2, image=blue)]
    batched = render(tiny, rows)
    alone = torch.cat([render(tiny, [row]) for row in rows])
    assert (batched.int() - alone.int()).abs().max() <= 1
    assert not torch.equal(batched[0], batched[1])
    text = render(tiny, [render_row(1)])
    assert not torch.equal(text[0], batched[0])
    assert not torch.equal(render(tiny, [replace(rows[0], image_fit="contain")]), batched[:1])


def test_the_image_pipeline_shares_components_and_keeps_their_dtypes(tiny: Any) -> None:
    image_pipe = FAMILY.image_pipe(tiny)
    assert type(image_pipe).__name__ == FAMILY.image_pipeline
    assert image_pipe.transformer is tiny.transformer and image_pipe.vae is tiny.vae
    tiny.vae.to(torch.float64)
    try:
        assert FAMILY.image_pipe(tiny).vae.dtype == torch.float64
        assert tiny.transformer.dtype == torch.float32
    finally:
        tiny.vae.to(torch.float32)


def test_a_start_image_in_s3_renders_as_the_same_file_on_disk_does(
    tiny: Any, tmp_path: Path, s3_bucket: str
) -> None:
    local = start_image(tmp_path, "green.png", (0, 200, 0))
    data = Path(local.uri).read_bytes()
    s3_client().put_object(Bucket=s3_bucket, Key="shots/green.png", Body=data)
    in_s3 = ImageSources(f"s3://{s3_bucket}/").check("image", "shots/green.png")
    assert in_s3.sha256 == local.sha256
    from_disk, from_s3 = (render(tiny, [render_row(1, image=i)]) for i in (local, in_s3))
    assert torch.equal(from_disk, from_s3)
