"""The benchmarks' own code: table writing, interval union, and the GPU script's CPU dry run."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import scale, slot_handoff, speed
from bench.bare_loop import render_manifest_bare
from bench.card_baseline import export_like_diffusers
from bench.cpu_overhead import Fit, Shape, write_manifest
from bench.flops import count_video_flops
from bench.gpu_settings import bench_rows, parse_settings
from bench.gpu_speed import speeds_to_measure
from bench.gpu_throughput import section_name
from bench.manifest_scale import baseline_mib, measure, section
from bench.report import RESULTS_MD, markdown_table, write_section
from bench.similarity import psnr, ssim
from bench.steady import covered
from tasks.families import FAMILIES
from tasks.loading import place
from tasks.manifest import RenderRow
from tasks.presets import PRESETS
from tasks.speed import Levers
from tests.mp4probe import probe_mp4

REPO = Path(__file__).resolve().parent.parent
# Each family's first full-size preset the GPU benchmark is run with, and the tiny one of
# its dry run: every family, with no table of the bench's to extend.
DRY_RUNS = {
    next(name for name, preset in PRESETS.items() if preset.random and preset.family is family): (
        next(info.name for info in family.presets if info.repo is None)
    )
    for family in FAMILIES
}
# What a CUDA machine with only torch, transformers and accelerate lacks: the engine and
# its benchmark must run without them.
ABSENT_ON_CUDA = ("prefect", "boto3", "pydantic", "pydantic_settings")


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where Prefect, boto3 and pydantic fail to import."""
    blocked = "".join(f"sys.modules[{name!r}] = None; " for name in ABSENT_ON_CUDA)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", f"import sys; {blocked}{code}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_gpu_benchmark_imports_no_prefect_boto3_or_pydantic() -> None:
    imported = "{name.split('.')[0] for name in sys.modules}"
    code = f"import sys, bench.gpu_throughput; assert not {imported} & {set(ABSENT_ON_CUDA)}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


# Built once: the tests that read them share one xdist_group, so one process runs them all.
@pytest.fixture(scope="session")
def throughput_dry_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each family's GPU throughput dry run, in one interpreter without Prefect: the
    RESULTS.md each wrote, by model."""
    return _dry_runs(
        tmp_path_factory.mktemp("throughput"),
        # A peak so low that any FLOPs counted show in the MFU column, however slow the CPU.
        "['--peak-tflops', '1e-9']",
        "# Results\n\n<!-- cpu_overhead: begin -->\nkept\n<!-- cpu_overhead: end -->\n",
    )


@pytest.fixture(scope="session")
def speed_dry_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each family's GPU speed-profile dry run, in one interpreter without Prefect."""
    return _dry_runs(tmp_path_factory.mktemp("speed"), "['--speed', 'fastest', 'fast']", "")


def _dry_runs(folder: Path, arguments: str, results_md: str) -> dict[str, str]:
    outs = {model: folder / f"{model}.md" for model in DRY_RUNS}
    for out in outs.values():
        out.write_text(results_md)
    done = _python(
        "from bench.gpu_throughput import main\n"
        f"for model, out in { ({m: str(o) for m, o in outs.items()})!r}.items():\n"
        f"    main(['--dry-run', '--model', model, '--out', out, *{arguments}])",
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return {model: out.read_text() for model, out in outs.items()}


# The dry runs of every family share one interpreter: one test process runs them all.
@pytest.mark.slow
@pytest.mark.xdist_group("gpu_dry_runs")
@pytest.mark.parametrize(("model", "tiny"), DRY_RUNS.items())
def test_gpu_benchmark_dry_run_writes_the_table_without_prefect(
    throughput_dry_runs: dict[str, str], model: str, tiny: str
) -> None:
    text = throughput_dry_runs[model]
    assert f"<!-- {section_name(parse_settings(['--model', model]))}: begin -->" in text
    assert f"## GPU throughput: {model} — DRY RUN on CPU with {tiny}, not a result" in text
    assert "The GPU table has not been measured yet" in text
    assert "64×64, 9 frames, 2 steps" in text
    assert "<!-- cpu_overhead: begin -->\nkept\n" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[:5] == ["engine", "batch", "videos", "s/video", "videos/min"]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table[2:]}
    assert list(rows) == ["baseline (model card)", "t2v-batch b=1", "t2v-batch b=2"]
    for cells in rows.values():
        values = [cell.strip() for cell in cells]
        # Off CUDA only the GPU memory column has nothing to measure.
        assert values[header.index("peak GPU GiB") - 1] == "–"
        numeric = [v for i, v in enumerate(values) if header[i + 1] != "peak GPU GiB"]
        assert all(re.fullmatch(r"[0-9]+(\.[0-9]+)?", v) for v in numeric), values
        assert 0 < float(values[header.index("in render %") - 1]) <= 100
        assert float(values[header.index("MFU %") - 1]) > 0


@pytest.mark.slow
@pytest.mark.xdist_group("gpu_dry_runs")
@pytest.mark.parametrize(("model", "tiny"), DRY_RUNS.items())
def test_gpu_speed_dry_run_compares_each_profile_with_exact(
    speed_dry_runs: dict[str, str], model: str, tiny: str
) -> None:
    text = speed_dry_runs[model]
    assert f"<!-- gpu_speed/{model}: begin -->" in text
    assert f"## GPU speed profiles: {model} — DRY RUN on CPU with {tiny}, not a result" in text
    assert f"`make bench-gpu-speed BENCH_MODEL={model}`" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table[2:]}
    assert list(rows) == ["exact", "fastest", "fast"]  # exact first, then as asked
    exact = [cell.strip() for cell in rows["exact"]]
    assert exact[header.index("× exact") - 1] == "1.00"
    assert exact[header.index("PSNR dB vs exact") - 1] == "identical"
    assert exact[header.index("SSIM vs exact") - 1] == "1.0000"
    fastest = [cell.strip() for cell in rows["fastest"]]
    # No FP8 on a CPU: skipped, with its reason, and the render went on.
    assert "quantize fp8: FP8 needs a CUDA GPU" in fastest[header.index("skipped") - 1]


def test_gpu_speed_measures_exact_first_and_each_profile_once() -> None:
    assert speeds_to_measure(["fastest", "exact", "fast", "fastest"]) == [
        "exact", "fastest", "fast",
    ]  # fmt: skip
    settings = parse_settings(["--model", "wan2.1-1.3b-random", "--speed", "fast"])
    assert (settings.speeds, settings.videos) == (("fast",), 1)
    assert section_name(settings) == "gpu_speed/wan2.1-1.3b-random"
    assert parse_settings(["--model", "wan2.1-1.3b-random"]).videos == 16


def test_speed_dry_run_prints_every_family_s_contenders_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = RESULTS_MD.read_text()
    assert speed.main(["--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert RESULTS_MD.read_text() == before
    for preset in speed.TRANSFORMER_PRESETS:
        title = f"## Speed levers on CPU: {preset} ("
        assert f"{title}{PRESETS[preset].family.name}) — DRY RUN with the tiny preset" in printed
    assert "9 frames, 32×32, 4 steps" in printed
    assert "Random weights show the mechanics and the compute a lever saves" in printed
    lines = [line for line in printed.splitlines() if line.startswith("| exact |")]
    assert len(lines) == 3
    for line in lines:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        # exact skips no block call and is its own reference.
        assert cells[4] == cells[6] == "1.00"
        assert cells[7].endswith(" / 0") and cells[8].endswith(" / 0")
        assert cells[-1] == "identical"
    # The UNet family: every step cache skips, with its reason; compiling applies.
    assert (
        "| cache first-block:0.05 | none | cache first-block:0.05: UNet3DConditionModel "
        "has no step-cache hooks |" in printed
    )
    assert "| compile full | compile full (default) | none |" in printed


def test_block_calls_count_what_a_first_block_cache_skips() -> None:
    family = PRESETS["tiny-wan"].family
    pipe = family.build_tiny()
    place(pipe, family, torch.device("cpu"), torch.float32)
    # Threshold 1: after the first step, almost every step is close enough to skip.
    run = speed.prepare(pipe, family, speed.Contender("cache", Levers(cache="first-block:1")))
    run.render(RenderRow(1, "clip", "a fox", "", 1, 9, 32, 32, 6, 5.0, 16))
    first, last = run.first.counts.tolist(), run.last.counts.tolist()
    # Guidance makes two calls per step: 12 calls of each block, the first always computed.
    assert first == [12, 0]
    assert sum(last) == 12 and last[1] > 0


def test_psnr_and_ssim_of_a_video_against_itself_and_others() -> None:
    video = np.random.default_rng(0).integers(0, 255, (3, 32, 24, 3), dtype=np.uint8)
    assert psnr(video, video) == math.inf and ssim(video, video) == pytest.approx(1.0)
    # Every value one level apart: a mean squared error of 1.
    assert psnr(video + 1, video) == pytest.approx(10 * math.log10(255**2))
    noise = np.random.default_rng(1).integers(0, 255, video.shape, dtype=np.uint8)
    assert ssim(noise, video) < 0.1


@pytest.mark.parametrize("preset", ["wan2.1-1.3b", "ltx-video", "cogvideox-2b"])
def test_random_architecture_sliced_to_blocks_keeps_its_width(preset: str) -> None:
    family = PRESETS[preset].family
    full = family.build_random(preset, torch.device("meta"), torch.float32)
    sliced = family.build_random(preset, torch.device("meta"), torch.float32, blocks=2)
    assert len(speed.transformer_blocks(family.denoiser(sliced))) == 2
    assert sliced.text_encoder.config.num_layers == 1
    assert sliced.text_encoder.config.d_model == full.text_encoder.config.d_model
    wide = (full.transformer.config.num_attention_heads, full.transformer.config.attention_head_dim)
    assert wide == (
        sliced.transformer.config.num_attention_heads,
        sliced.transformer.config.attention_head_dim,
    )


def test_a_unet_has_no_blocks_to_slice() -> None:
    with pytest.raises(ValueError, match="`blocks` slices only the benchmarked families"):
        PRESETS["ms-1.7b"].family.build_random("ms-1.7b", torch.device("meta"), torch.float32, 2)


@pytest.mark.parametrize("model", DRY_RUNS)
def test_gpu_benchmark_defaults_to_the_family_s_native_shape(model: str) -> None:
    rules = PRESETS[model].family.rules
    settings = parse_settings(["--model", model])
    assert (settings.model, settings.height, settings.width) == (model, rules.height, rules.width)
    assert (settings.frames, settings.steps) == (rules.num_frames, rules.num_inference_steps)


def test_gpu_benchmark_of_a_distilled_preset_renders_its_card_s_steps_and_guidance() -> None:
    settings = parse_settings(["--model", "ltx-2-distilled-random"])
    (row,) = bench_rows(settings, 1)
    assert (row.num_inference_steps, row.guidance_scale) == (8, 1.0)
    (dry,) = bench_rows(parse_settings(["--model", "ltx-2-distilled-random", "--dry-run"]), 1)
    assert (dry.num_inference_steps, dry.guidance_scale) == (2, 1.0)


def test_gpu_benchmark_of_wan_runs_480x832_81_frames_50_steps() -> None:
    settings = parse_settings(["--model", "wan2.1-1.3b-random", "--width", "480"])
    assert (settings.height, settings.width, settings.frames, settings.steps) == (480, 480, 81, 50)
    dry = parse_settings(["--model", "wan2.1-1.3b-random", "--dry-run"])
    assert (dry.model, dry.requested, dry.device) == ("tiny-wan", "wan2.1-1.3b-random", "cpu")


def test_video_flops_extrapolated_from_2_and_3_steps_equal_a_counted_call() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    pipe = PRESETS["tiny-wan"].family.build_tiny()
    row = RenderRow(1, "clip", "a fox", "", 1, 9, 32, 32, 5, 5.0, 16)
    flops = count_video_flops(pipe, row)
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        PRESETS["tiny-wan"].family.generate(pipe, [row], [generator])
    assert flops.step > 0 and flops.rest > 0
    assert flops.total == pytest.approx(counter.get_total_flops(), rel=1e-9)


def test_write_section_replaces_its_own_section_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    write_section(path, "one", "first")
    write_section(path, "two", "second")
    write_section(path, "one", "first, again")
    assert path.read_text() == (
        "<!-- one: begin -->\nfirst, again\n<!-- one: end -->\n\n"
        "<!-- two: begin -->\nsecond\n<!-- two: end -->\n"
    )


def test_markdown_table_aligns_numbers_right() -> None:
    assert markdown_table(["name", "s"], [["a", "1.5"], ["b", "–"]]) == (
        "| name | s |\n| --- | ---: |\n| a | 1.5 |\n| b | – |\n"
    )


def test_covered_counts_overlapping_and_nested_intervals_once() -> None:
    assert covered([(0, 10), (2, 3), (5, 12), (20, 25)]) == 17
    assert covered([]) == 0


def test_fit_through_two_sizes_separates_start_up_and_per_row() -> None:
    fit = Fit.through((8, 32), (10 + 8 * 0.5, 10 + 32 * 0.5))
    assert fit.startup_s == pytest.approx(10)
    assert fit.per_row_s == pytest.approx(0.5)


def test_bare_loop_renders_every_row_of_a_benchmark_manifest(tmp_path: Path) -> None:
    write_manifest(tmp_path / "rows.csv", 3, Shape(size=64, frames=4, steps=2, batch_size=2))
    written = render_manifest_bare(str(tmp_path / "rows.csv"), tmp_path / "out", 2, "cpu")
    assert written == 3
    videos = sorted((tmp_path / "out").glob("*.mp4"))
    assert [video.name for video in videos] == ["clip-0.mp4", "clip-1.mp4", "clip-2.mp4"]
    assert probe_mp4(videos[0]).frame_count == 4


def test_baseline_writes_videos_as_export_to_video_does(tmp_path: Path) -> None:
    frames = np.linspace(0, 1, 5 * 64 * 48 * 3, dtype=np.float32).reshape(5, 64, 48, 3)
    row = RenderRow(1, "clip", "a prompt", "", 1, 5, 64, 48, 2, 9.0, 8)
    export_like_diffusers(frames, row, tmp_path)
    written = probe_mp4(tmp_path / "baseline-clip.mp4")
    assert (written.codec, written.pix_fmt, written.fps) == ("h264", "yuv420p", 10.0)
    assert (written.width, written.height, written.frame_count) == (48, 64, 5)


def test_manifest_scale_measures_validation_of_a_generated_manifest(tmp_path: Path) -> None:
    measured = measure(500, tmp_path, repeats=1)
    assert (measured.rows, measured.valid, measured.invalid) == (500, 450, 50)
    assert measured.peak_mib > 0 and measured.validate_s > 0 and measured.check_wall_s > 0
    text = section([measured], baseline_mib())
    assert "| 500 | " in text and "`t2v check` wall s" in text


@pytest.mark.slow
def test_slot_handoff_times_the_device_idle_between_batches() -> None:
    measured = slot_handoff.measure(slot_wait=1.0, rows=4, batch_size=2)
    for run in (measured.per_gpu, measured.gpu_limit):
        assert run.wall_s > 0 and len(run.idle_s) == 1 and run.idle_s[0] >= 0
    text = slot_handoff.section([measured], rows=4, batch_size=2)
    assert "in 2 batches of 2" in text and "| `gpu` tag limit of 1 slot | 1 | " in text


def test_scale_separates_each_shards_pick_up_from_its_run_and_its_rendering() -> None:
    # One worker runs two shards created at once back to back; the second waits for the
    # first's end, which is not pick-up. The other worker runs one shard created later.
    shards = [
        scale.ShardTiming("w1", created=0.0, start=5.0, end=45.0, render_s=30.0),
        scale.ShardTiming("w1", created=0.0, start=52.0, end=90.0, render_s=30.0),
        scale.ShardTiming("w2", created=10.0, start=13.0, end=50.0, render_s=30.0),
    ]
    run = scale.Measured(workers=2, rows=24, wall_s=120.0, shards=shards)
    assert run.pick_up_s == pytest.approx((5 + 7 + 3) / 3)
    assert run.in_run_fixed_s == pytest.approx((10 + 8 + 7) / 3)
    assert run.fixed_per_shard_s == pytest.approx(5 + 25 / 3)
    assert run.render_s == 90.0 and run.videos_per_min == 12.0
    one = scale.Measured(workers=1, rows=24, wall_s=240.0, shards=shards)
    text = scale.section(scale.Shape(16, 128, 20), 4.0, 10.0, [one, run])
    assert "**2 workers: 2.00× the videos/min of 1**" in text


def test_scale_sizes_rows_so_each_of_the_shards_renders_long_enough() -> None:
    # 4 s a row, batches of 4: two batches (32 s) are the fewest that last 30 s.
    assert scale.rows_for(4.0, shard_seconds=30.0, shards=4) == 4 * 2 * 4
    assert scale.rows_for(0.1, shard_seconds=30.0, shards=2) == 2 * 75 * 4
