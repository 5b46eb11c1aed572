"""LTX-2's own checks: its sound track (rendered, muxed as AAC, recorded as `audio`), the
distilled preset's recipe, and its full-size architectures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.devices import get_pipeline
from tasks.encode import encode_mp4
from tasks.families.ltx2 import DISTILLED_SIGMAS, LTX2
from tasks.keys import output_key
from tasks.manifest import parse_manifest
from tasks.presets import model_rules, resolve_model
from tasks.render_call import RenderedVideo, render_batch
from tests.factories import gallery_videos, render_row, t2v
from tests.mp4probe import Stream, decode_audio, probe_mp4

FAMILY = LTX2()


def test_an_empty_row_takes_the_cards_video_and_the_distilled_preset_its_recipe() -> None:
    manifest = parse_manifest(
        b"prompt,num_frames\na kite,\na boat,489\n", "m.csv", rules=model_rules("ltx-2")
    )
    (row,), (invalid,) = manifest.rows, manifest.invalid
    assert (row.num_frames, row.height, row.width, row.fps) == (121, 512, 768, 24)
    assert (row.num_inference_steps, row.guidance_scale) == (30, 3.0)
    assert "`num_frames` must be 8k+1 in 1…481 for LTX-2" in invalid.error
    distilled_rules = model_rules("ltx-2-distilled")
    (distilled,) = parse_manifest(b"prompt\na kite\n", "m.csv", rules=distilled_rules).rows
    assert (distilled.num_inference_steps, distilled.guidance_scale) == (8, 1.0)
    assert (distilled.num_frames, distilled.height, distilled.width) == (121, 512, 768)


def test_guidance_1_turns_every_guidance_off_and_8_steps_take_the_distilled_sigmas() -> None:
    guided = FAMILY.call_arguments([render_row(1, guidance_scale=3.0, num_inference_steps=8)])
    assert "sigmas" not in guided and "stg_scale" not in guided
    unguided = FAMILY.call_arguments([render_row(1, guidance_scale=1.0, num_inference_steps=8)])
    assert unguided["sigmas"] == list(DISTILLED_SIGMAS)
    assert (unguided["stg_scale"], unguided["audio_guidance_scale"]) == (0.0, 1.0)
    assert (unguided["modality_scale"], unguided["audio_modality_scale"]) == (1.0, 1.0)
    other = FAMILY.call_arguments([render_row(1, guidance_scale=1.0, num_inference_steps=4)])
    assert "sigmas" not in other and other["stg_scale"] == 0.0


def test_a_batch_renders_each_video_with_its_sound_as_long_as_the_video() -> None:
    pipe = get_pipeline(resolve_model("tiny-ltx2"), torch.device("cpu"))
    rows = [render_row(n, height=64, width=96, num_frames=9, fps=8, seed=n) for n in (1, 2)]
    videos = render_batch(pipe, rows)
    assert all(isinstance(video, RenderedVideo) for video in videos)
    sounds = [video.sound for video in videos if isinstance(video, RenderedVideo)]
    for sound in sounds:
        assert sound is not None and sound.sample_rate == 24000
        channels, samples = sound.waveform.shape
        assert channels == 2 and samples / 24000 == pytest.approx(9 / 8, abs=0.05)
        assert np.abs(sound.waveform).max() <= 1.0 and sound.waveform.std() > 0.01
    assert sounds[0] is not None and sounds[1] is not None
    assert not np.array_equal(sounds[0].waveform, sounds[1].waveform)  # one seed each


def test_a_video_with_sound_is_one_mp4_with_an_aac_track(tmp_path: Path) -> None:
    pipe = get_pipeline(resolve_model("tiny-ltx2"), torch.device("cpu"))
    (video,) = render_batch(pipe, [render_row(1, height=64, width=96, num_frames=9, fps=8)])
    assert isinstance(video, RenderedVideo) and video.sound is not None
    encode_mp4(video.frames, video.row.fps, tmp_path / "v.mp4", video.sound)
    probe = probe_mp4(tmp_path / "v.mp4")
    assert probe.streams == (Stream("Video", "h264"), Stream("Audio", "aac", 24000, "stereo"))
    assert (probe.frame_count, probe.faststart) == (9, True)
    heard = decode_audio(tmp_path / "v.mp4", 24000)
    # AAC is lossy and pads its first frame: the track holds the waveform's loudness.
    assert heard.shape[1] == pytest.approx(video.sound.waveform.shape[1], rel=0.1)
    assert np.std(heard) == pytest.approx(np.std(video.sound.waveform), rel=0.2)


def test_the_key_of_a_video_with_sound_hashes_only_the_row_and_the_model() -> None:
    row = render_row(1, height=64, width=96, num_frames=9, fps=8)
    assert output_key(row, "tiny-ltx2") == output_key(row, "tiny-ltx2")
    assert output_key(row, "tiny-ltx2") != output_key(row, "tiny-ltx")
    assert output_key(row, "tiny-ltx2").startswith("row-1-")


def _billions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e9, 2)


@pytest.mark.parametrize(
    ("preset", "transformer", "connectors", "vae", "sample_rate"),
    [
        # The model card's 19 B is the transformer; LTX-2.3's 22 B counts its connectors too.
        ("ltx-2", 18.88, 1.43, 1.22, 24000),
        ("ltx-2-distilled", 18.99, 3.17, 0.73, 48000),
    ],
)
def test_the_random_presets_are_the_published_architectures(
    preset: str, transformer: float, connectors: float, vae: float, sample_rate: int
) -> None:
    pipe = FAMILY.build_random(preset, torch.device("meta"), torch.bfloat16)
    assert pipe.transformer.device.type == "meta" and pipe.transformer.dtype == torch.bfloat16
    assert _billions(pipe.transformer) == transformer
    assert _billions(pipe.connectors) == connectors
    assert _billions(pipe.vae) == vae
    assert _billions(pipe.text_encoder) == 12.19  # Gemma 3 12B
    assert pipe.vocoder.config.output_sampling_rate == sample_rate
    text = pipe.text_encoder.config.text_config
    assert pipe.connectors.config.caption_channels == text.hidden_size
    assert pipe.connectors.config.text_proj_in_factor == text.num_hidden_layers + 1
    assert (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio) == (32, 8)


MANIFEST = (
    "id,prompt,num_frames,height,width,num_inference_steps,fps\nkite,a red kite,9,64,96,2,8\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["preset", "folder"])
def test_t2v_stores_one_mp4_with_sound_and_records_it(
    cli_env: dict[str, str], tmp_path: Path, source: str
) -> None:
    model = "tiny-ltx2"
    if source == "folder":  # as saved with save_pretrained, found by its model_index.json
        model = str(tmp_path / "tiny-ltx2")
        get_pipeline(resolve_model("tiny-ltx2"), torch.device("cpu")).save_pretrained(model)
    (tmp_path / "m.csv").write_text(MANIFEST)
    out = tmp_path / "out"
    done = t2v("render", str(tmp_path / "m.csv"), "--model", model, "--out", str(out), env=cli_env)
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = csv.DictReader((out / "results.csv").read_text("utf-8-sig").splitlines())
    assert (result["status"], result["audio"]) == ("ok", "yes")
    key = Path(result["output"]).name
    row = parse_manifest(MANIFEST.encode(), "m.csv", rules=model_rules(model)).rows[0]
    assert key == output_key(row, resolve_model(model).identity)
    probe = probe_mp4(out / key)
    assert [stream.kind for stream in probe.streams] == ["Video", "Audio"]
    assert probe.streams[1].codec == "aac"
    # The gallery's script leaves its player unmuted (a real browser plays it with sound in
    # test_gallery_browser.py).
    (video,) = gallery_videos((out / "index.html").read_text())
    assert (video["src"], video["audio"]) == (key, "yes")
    again = t2v("render", str(tmp_path / "m.csv"), "--model", model, "--out", str(out), env=cli_env)
    (skipped,) = csv.DictReader((out / "results.csv").read_text("utf-8-sig").splitlines())
    assert again.returncode == 0 and (skipped["status"], skipped["audio"]) == ("skipped", "yes")
