"""Speed levers on the tiny presets: parsing, profiles, what each lever does to a real
pipeline (a step cache really skips the denoiser's work: counted, not timed), graceful
skips on CPU, and the compile cache a second process reuses."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.devices import get_pipeline, speed_report
from tasks.encode import encode_mp4
from tasks.families import FAMILIES
from tasks.keys import output_key
from tasks.presets import PRESETS, preset_rules, resolve_model
from tasks.render import render_rows
from tasks.render_call import RenderedVideo, render_batch
from tasks.speed import EXACT, Levers, key_settings, parse_levers, resolve_levers
from tasks.speed.apply import apply_levers
from tasks.speed.levers import parse_attention, parse_cache, parse_compile, parse_quantize
from tests.conftest import REPO
from tests.factories import render_row
from tests.mp4probe import probe_mp4

slow = pytest.mark.slow
# The tiny presets of every family whose profiles choose a step cache, but those rendering
# from images only, whose denoisers are their text families' classes.
TRANSFORMERS = sorted(
    name
    for name, preset in PRESETS.items()
    if preset.info.repo is None
    and preset.family.speed.fast.cache != "none"
    and not preset_rules(preset).required_images
)


def _rows(count: int, steps: int = 6) -> list[Any]:
    return [render_row(line, num_inference_steps=steps) for line in range(1, count + 1)]


def _fresh(preset: str) -> Any:
    """A pipeline of its own (levers change it in place), ready as t2v loads one."""
    pipe = PRESETS[preset].family.build_tiny_preset(preset)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _count_last_block(pipe: Any, preset: str) -> list[int]:
    """Counts the calls of the last transformer block's attention (its query projection),
    which run only when that block computes."""
    denoiser = PRESETS[preset].family.denoiser(pipe)
    blocks = getattr(denoiser, "blocks", None) or denoiser.transformer_blocks
    query = blocks[-1].attn1.to_q
    calls = [0]
    query.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# Parsing


@pytest.mark.parametrize(
    ("parse", "given", "canonical"),
    [
        (parse_attention, "SDPA", "sdpa"),
        (parse_attention, "native", "sdpa"),
        (parse_attention, "flash3", "flash3"),
        (parse_attention, "_native_cudnn", "_native_cudnn"),
        (parse_cache, "none", "none"),
        (parse_cache, "first-block:0.080", "first-block:0.08"),
        (parse_cache, "taylorseer", "taylorseer:5"),
        (parse_cache, "taylorseer:3", "taylorseer:3"),
        (parse_compile, "0", "off"),
        (parse_compile, "1", "full"),
        (parse_compile, "regional", "regional"),
        (parse_compile, "reduce-overhead", "reduce-overhead"),
        (parse_quantize, "FP8", "fp8"),
    ],
)
def test_levers_parse_to_one_spelling(parse: Any, given: str, canonical: str) -> None:
    assert parse(given) == canonical


@pytest.mark.parametrize(
    ("lever", "value", "allowed"),
    [
        ("attention", "flsh", "sdpa|flash|flash3|cudnn|sage"),
        ("cache", "first-block", "none|first-block:THRESHOLD|taylorseer[:INTERVAL]"),
        ("cache", "first-block:0", "none|first-block:THRESHOLD"),
        ("cache", "first-block:nan", "none|first-block:THRESHOLD"),
        ("cache", "taylorseer:1", "INTERVAL a whole number of at least 2"),
        ("compile", "fastest", "off|regional|full"),
        ("quantize", "fp4", "none|fp8|int8"),
    ],
)
def test_a_wrong_lever_is_one_sentence_naming_the_allowed_values(
    lever: str, value: str, allowed: str
) -> None:
    with pytest.raises(ValueError) as raised:
        parse_levers({lever: value})
    message = str(raised.value)
    assert message.startswith(f"{lever} {value!r} is not")
    assert allowed in message
    assert "\n" not in message


def test_a_lever_set_on_its_own_overrides_the_profile() -> None:
    wan = PRESETS["tiny-wan"].family.speed
    assert resolve_levers(wan, "exact") == EXACT
    assert resolve_levers(wan, "fast") == wan.fast
    chosen = resolve_levers(wan, "fast", cache="taylorseer:3", quantize=None)
    assert chosen.cache == "taylorseer:3"
    assert (chosen.attention, chosen.compile) == (wan.fast.attention, wan.fast.compile)
    assert resolve_levers(wan, "exact", compile="regional") == Levers(compile="regional")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_each_family_declares_what_its_denoiser_really_offers(family: Any) -> None:
    from diffusers.models.cache_utils import CacheMixin

    denoiser = family.denoiser(family.build_tiny())
    dispatching = any(
        hasattr(getattr(module, "processor", None), "_attention_backend")
        for module in denoiser.modules()
    )
    assert family.speed.step_caches == isinstance(denoiser, CacheMixin)
    assert family.speed.attention_backends == dispatching
    for profile in (family.speed.fast, family.speed.fastest):
        # A profile chooses only what the denoiser can take.
        assert profile.compile != "regional" or denoiser._repeated_blocks
        assert profile.cache == "none" or family.speed.step_caches


# Keys


def test_keys_change_with_levers_that_change_pixels_only() -> None:
    row, wan = render_row(1), PRESETS["tiny-wan"].family.speed
    exact = output_key(row, "tiny-wan", key_settings(EXACT, wan))
    assert exact == output_key(row, "tiny-wan")
    same = [Levers(compile="regional"), Levers(attention="cudnn"), Levers(attention="flash")]
    for levers in same:
        assert output_key(row, "tiny-wan", key_settings(levers, wan)) == exact, levers
    other = [
        Levers(cache="first-block:0.05"),
        Levers(cache="first-block:0.1"),
        Levers(quantize="fp8"),
        Levers(attention="sage"),
    ]
    keys = {output_key(row, "tiny-wan", key_settings(levers, wan)) for levers in other}
    assert len(keys) == len(other) and exact not in keys


def test_a_lever_the_family_cannot_take_leaves_its_key_alone() -> None:
    row, modelscope = render_row(1), PRESETS["tiny-random"].family.speed
    skipped = Levers(cache="first-block:0.1", attention="sage", compile="full")
    assert key_settings(skipped, modelscope) == {}
    assert key_settings(resolve_levers(modelscope, "fastest"), modelscope) == {"quantize": "fp8"}
    assert output_key(row, "m", key_settings(skipped, modelscope)) == output_key(row, "m")


# Levers on real pipelines


@pytest.mark.parametrize("preset", TRANSFORMERS)
@pytest.mark.parametrize("cache", ["first-block:1", "taylorseer:2"])
def test_a_step_cache_skips_the_last_blocks_work(preset: str, cache: str) -> None:
    exact, cached = _fresh(preset), _fresh(preset)
    exact_calls = _count_last_block(exact, preset)
    cached_calls = _count_last_block(cached, preset)
    report = apply_levers(cached, PRESETS[preset].family, Levers(cache=cache))
    assert report.applied == {"cache": cache} and not report.skipped
    render_batch(exact, _rows(1))
    render_batch(cached, _rows(1))
    assert 0 < cached_calls[0] < exact_calls[0]
    if cache == "taylorseer:2":
        # A fixed schedule, the same on any weights: of 6 steps, 3 of warm-up, then every
        # second one computes (step 4); the rest are predicted.
        assert cached_calls[0] * 6 == exact_calls[0] * 4


def test_taylorseer_predicts_attention_modules_named_attn() -> None:
    """HunyuanVideo 1.5's blocks name their attention `attn`, not `attn1`."""
    preset = "tiny-hunyuanvideo-1.5"
    pipe = _fresh(preset)
    query = PRESETS[preset].family.denoiser(pipe).transformer_blocks[-1].attn.to_q
    calls = [0]
    query.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    apply_levers(pipe, PRESETS[preset].family, Levers(cache="taylorseer:2"))
    render_batch(pipe, _rows(1))
    assert calls[0] == 4 * 2  # of 6 steps, 4 computed, each with and without guidance


@pytest.mark.parametrize("preset", TRANSFORMERS)
def test_a_cached_pipeline_renders_a_second_batch_as_the_first(preset: str) -> None:
    pipe = _fresh(preset)
    apply_levers(pipe, PRESETS[preset].family, Levers(cache="first-block:0.5"))
    first = render_batch(pipe, _rows(1))
    # A call that fails halfway keeps the cache's state: the next render must not see it.
    with pytest.raises(RuntimeError, match="stop halfway"):
        pipe(
            prompt="a cat",
            num_frames=9,
            height=32,
            width=32,
            num_inference_steps=6,
            callback_on_step_end=_stop_at_step_3,
        )
    again = render_batch(pipe, _rows(1))
    assert np.array_equal(first[0].frames, again[0].frames)


def _stop_at_step_3(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
    if step == 3:
        raise RuntimeError("stop halfway")
    return tensors


def test_exact_levers_render_what_the_bare_pipeline_renders() -> None:
    bare = render_batch(_fresh("tiny-wan"), _rows(2))
    loaded = render_rows(resolve_model("tiny-wan"), "cpu", _rows(2), levers=EXACT)
    for alone, through in zip(bare, loaded.outcomes, strict=True):
        assert isinstance(through, RenderedVideo)
        assert np.array_equal(alone.frames, through.frames)


def test_the_process_keeps_one_pipeline_per_levers() -> None:
    ref, cpu = resolve_model("tiny-wan"), torch.device("cpu")
    cached = Levers(cache="taylorseer:2")
    assert get_pipeline(ref, cpu, cached) is get_pipeline(ref, cpu, cached)
    assert get_pipeline(ref, cpu, cached) is not get_pipeline(ref, cpu, EXACT)
    assert PRESETS["tiny-wan"].family.denoiser(get_pipeline(ref, cpu, EXACT))._cache_config is None


def test_a_first_block_cache_renders_one_row_per_call() -> None:
    assert Levers(cache="first-block:0.05").rows_per_call(4) == 1
    assert Levers(cache="taylorseer:2").rows_per_call(4) == 4
    assert EXACT.rows_per_call(4) == 4


def test_levers_that_cannot_apply_on_cpu_are_skipped_each_with_its_reason() -> None:
    levers = Levers(attention="flash", quantize="fp8", cache="taylorseer:2")
    ref = resolve_model("tiny-wan")
    result = render_rows(ref, "cpu", _rows(1), levers=levers)
    assert all(isinstance(outcome, RenderedVideo) for outcome in result.outcomes)
    report = speed_report(ref, "cpu", levers)
    assert report is not None
    assert report.applied == {"cache": "taylorseer:2"}
    assert report.skipped == {
        "attention": "flash: the flash kernel needs CUDA",
        "quantize": "fp8: FP8 needs a CUDA GPU of compute capability 8.9 or newer",
    }


def test_a_unet_skips_what_it_has_no_hooks_for() -> None:
    pipe = PRESETS["tiny-random"].family.build_tiny()
    levers = Levers(attention="sage", cache="first-block:0.1")
    report = apply_levers(pipe, PRESETS["tiny-random"].family, levers)
    assert report.applied == {}
    assert report.skipped == {
        "attention": (
            "sage: UNet3DConditionModel's attention does not dispatch on diffusers' backends"
        ),
        "cache": "first-block:0.1: UNet3DConditionModel has no step-cache hooks",
    }


@pytest.mark.skipif(
    importlib.util.find_spec("torchao") is not None, reason="torchao is installed: int8 applies"
)
def test_int8_without_torchao_is_skipped_naming_the_package() -> None:
    report = apply_levers(_fresh("tiny-wan"), PRESETS["tiny-wan"].family, Levers(quantize="int8"))
    assert report.skipped == {"quantize": "int8: torchao is not installed (pip install torchao)"}


def test_a_torchao_that_cannot_be_imported_is_skipped_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torchao built for another torch fails at import with errors other than ImportError."""
    pipe = _fresh("tiny-wan")
    package = tmp_path / "torchao"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "quantization.py").write_text(
        "raise RuntimeError('torchao 0.9 was built for torch 2.5\\nrebuild it')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    report = apply_levers(pipe, PRESETS["tiny-wan"].family, Levers(quantize="int8"))
    assert report.skipped == {
        "quantize": "int8: torchao cannot be imported (torchao 0.9 was built for torch 2.5)"
    }


def test_regional_compile_needs_repeated_blocks() -> None:
    family = PRESETS["tiny-cogvideox"].family
    report = apply_levers(_fresh("tiny-cogvideox"), family, Levers(compile="regional"))
    assert report.skipped == {
        "compile": (
            "regional: CogVideoXTransformer3DModel declares no repeated blocks; use compile full"
        )
    }


@slow
@pytest.mark.parametrize("preset", TRANSFORMERS)
@pytest.mark.parametrize("speed", ["fast", "fastest"])
def test_fast_profiles_render_every_tiny_transformer_to_playable_mp4s(
    preset: str, speed: Any, tmp_path: Path
) -> None:
    family = PRESETS[preset].family
    levers = resolve_levers(family.speed, speed)
    ref = resolve_model(preset)
    rows = _rows(2, steps=4)
    result = render_rows(ref, "cpu", rows, levers=levers)
    videos = [outcome for outcome in result.outcomes if isinstance(outcome, RenderedVideo)]
    assert len(videos) == 2, result.outcomes
    report = speed_report(ref, "cpu", levers)
    assert report is not None and report.applied["cache"] == levers.cache
    for video in videos:
        path = tmp_path / f"{video.row.id}.mp4"
        encode_mp4(video.frames, video.row.fps, path)
        probe = probe_mp4(path)
        assert (probe.codec, probe.frame_count) == ("h264", 9)


# Compiling once per machine

COMPILE_ONCE = """
import json, sys
import torch
from torch._dynamo.utils import counters
from tasks.presets import resolve_model
from tasks.render import render_rows
from tasks.speed import Levers
from tests.factories import render_row

regional = Levers(compile="regional")
result = render_rows(resolve_model("tiny-wan"), "cpu", [render_row(1)], levers=regional)
assert not [o for o in result.outcomes if not hasattr(o, "frames")], result.outcomes
print(json.dumps(dict(counters["inductor"])))
"""


@slow
def test_a_second_process_reuses_the_compiled_denoiser(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"}
    env.update(PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "xdg"), OMP_NUM_THREADS="1")

    def compile_in_a_new_process() -> dict[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", COMPILE_ONCE],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        counters: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
        return counters

    first = compile_in_a_new_process()
    assert first.get("fxgraph_cache_miss", 0) > 0 and not first.get("fxgraph_cache_hit")
    assert any((tmp_path / "xdg" / "t2v" / "inductor").iterdir())
    second = compile_in_a_new_process()
    assert second.get("fxgraph_cache_hit", 0) > 0
    assert not second.get("fxgraph_cache_miss")
