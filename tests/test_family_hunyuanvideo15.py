"""HunyuanVideo 1.5's own checks: the tiny preset and its saved folder through `t2v render`,
its defaults and bounds per checkpoint (from the configs), its token window, the guidance
scale reaching its guider, what its denoiser takes of the speed levers, and its exact size."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.families.hunyuanvideo15 import TEMPLATE_TOKENS, HunyuanVideo15
from tasks.manifest import parse_manifest
from tasks.presets import model_rules
from tasks.render_call import render_batch, truncation_warnings
from tasks.speed import Levers
from tasks.speed.apply import apply_levers
from tests.factories import render_row, t2v
from tests.mp4probe import decode_frames, probe_mp4

FAMILY = HunyuanVideo15()


def _tiny() -> Any:
    pipe = FAMILY.build_tiny()
    pipe.set_progress_bar_config(disable=True)
    FAMILY.prepare(pipe, torch.device("cpu"))
    return pipe


@pytest.mark.slow
def test_the_tiny_preset_and_its_saved_folder_render_the_same_mp4_through_t2v(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "id,prompt,num_frames,height,width,num_inference_steps,fps\n"
        'kite,"a red kite over the sea, a sign saying ""hello""",9,64,96,2,8\n'
    )
    folder = tmp_path / "saved"
    FAMILY.build_tiny().save_pretrained(folder)
    videos = []
    for model in ("tiny-hunyuanvideo-1.5", str(folder)):
        out = tmp_path / f"out-{len(videos)}"
        done = t2v("render", str(manifest), "--model", model, "--out", str(out), env=cli_env)
        assert done.returncode == 0, done.stdout + done.stderr
        (row,) = csv.DictReader((out / "results.csv").open(encoding="utf-8-sig"))
        assert row["status"] == "ok", row
        probe = probe_mp4(Path(row["output"]))
        assert (probe.codec, probe.width, probe.height, probe.frame_count) == ("h264", 96, 64, 9)
        videos.append(decode_frames(Path(row["output"]), 96, 64))
    assert np.array_equal(*videos)


def test_an_empty_row_takes_the_480p_5s_video_and_other_sizes_are_refused() -> None:
    manifest = parse_manifest(
        b"prompt,num_frames,height,width\na kite,,,\na boat,122,,\na cat,,480,840\n",
        "m.csv",
        rules=model_rules("hunyuanvideo-1.5"),
    )
    (row,) = manifest.rows
    assert (row.num_frames, row.height, row.width, row.fps) == (121, 480, 848, 24)
    assert (row.num_inference_steps, row.guidance_scale) == (50, 6.0)
    frames, size = manifest.invalid
    assert "`num_frames` must be 4k+1 in 1…121 for HunyuanVideo 1.5" in frames.error
    assert "`width` must be a multiple of 16" in size.error and "832 or 848" in size.error


def test_the_720p_checkpoint_takes_its_own_video_by_its_transformers_target_size() -> None:
    rules = model_rules("hunyuanvideo-1.5-720p")
    assert (rules.num_frames, rules.height, rules.width, rules.max_size) == (121, 720, 1280, 1280)
    assert FAMILY.rules_for({"transformer": {"target_size": 960}}) == rules
    assert FAMILY.rules_for({"transformer": {"target_size": 640}}) == model_rules(
        "hunyuanvideo-1.5"
    )
    assert model_rules("tiny-hunyuanvideo-1.5") == FAMILY.rules


def test_sizes_and_frames_follow_the_vae_and_patch_in_the_config() -> None:
    rules = FAMILY.rules_for(
        {
            "vae": {"spatial_compression_ratio": 8, "temporal_compression_ratio": 4},
            "transformer": {"patch_size": 2, "target_size": 640},
        }
    )
    assert (rules.size_multiple, rules.min_size, rules.frame_step) == (16, 16, 4)
    rules = FAMILY.rules_for(
        {"vae": {"spatial_compression_ratio": 16}, "transformer": {"patch_size": 2}}
    )
    assert (rules.size_multiple, rules.min_size) == (32, 32)


def test_the_tiny_chat_template_leaves_exactly_the_prompt_after_the_pipelines_crop() -> None:
    pipe = FAMILY.build_tiny()
    assert pipe.prompt_template_encode_start_idx == TEMPLATE_TOKENS
    ids = pipe.tokenizer.apply_chat_template(
        [
            [
                {"role": "system", "content": pipe.system_message},
                {"role": "user", "content": "a red fox"},
            ]
        ],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"][0]
    assert pipe.tokenizer.convert_ids_to_tokens(ids[TEMPLATE_TOKENS:]) == [
        "a",
        "red",
        "fox",
        "<|im_end|>",
    ]


def test_prompts_past_qwens_1000_token_window_are_warned_of() -> None:
    pipe = FAMILY.build_tiny()
    fits, long = render_row(1, prompt="cat " * 990), render_row(2, prompt="cat " * 1000)
    assert truncation_warnings(pipe, [fits, long]) == [
        "",
        "prompt is 1001 tokens; rendered from its first 1000",
    ]


def test_a_rows_guidance_scale_reaches_the_guider() -> None:
    pipe = _tiny()
    plain, guided = render_row(1, guidance_scale=1.0), render_row(1, guidance_scale=6.0)
    first = render_batch(pipe, [plain])[0]
    assert pipe.guider.guidance_scale == 1.0
    second = render_batch(pipe, [guided])[0]
    assert pipe.guider.guidance_scale == 6.0
    assert not np.array_equal(first.frames, second.frames)
    assert np.array_equal(render_batch(pipe, [plain])[0].frames, first.frames)


def test_a_first_block_cache_is_skipped_with_diffusers_reason_and_the_render_goes_on() -> None:
    pipe, exact = _tiny(), _tiny()
    report = apply_levers(pipe, FAMILY, Levers(cache="first-block:0.05"))
    assert report.applied == {}
    assert "HunyuanVideo15TransformerBlock" in report.skipped["cache"]
    assert "not registered" in report.skipped["cache"]
    row = render_row(1)
    assert np.array_equal(render_batch(pipe, [row])[0].frames, render_batch(exact, [row])[0].frames)


@pytest.mark.parametrize("preset", ["hunyuanvideo-1.5", "hunyuanvideo-1.5-720p"])
def test_the_random_preset_is_the_8b_transformer_with_qwen25_vl_7b_and_glyph_byt5(
    preset: str,
) -> None:
    pipe = FAMILY.build_random(preset, torch.device("meta"), torch.bfloat16)
    assert pipe.transformer.device.type == "meta"

    def billions(module: torch.nn.Module) -> float:
        return round(sum(p.numel() for p in module.parameters()) / 1e9, 2)

    # The model card's 8.3 B; Qwen2.5-VL 7B's text model, without its vision tower and head.
    assert billions(pipe.transformer) == 8.33
    assert billions(pipe.text_encoder) == 7.07
    assert billions(pipe.text_encoder_2) == 0.22
    config = pipe.transformer.config
    assert config.text_embed_dim == pipe.text_encoder.config.hidden_size
    assert config.text_embed_2_dim == pipe.text_encoder_2.config.d_model
    assert FAMILY.rules_for({"transformer": dict(config)}) == model_rules(preset)
