from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks import contenthash, loading
from tasks.devices import get_pipeline, load_model, resolve_device
from tasks.errors import ModelLoadError, RenderError
from tasks.families import FAMILIES
from tasks.families.modelscope import MS_17B_REPO, ModelScope, ms17b_components
from tasks.presets import ModelRef, resolve_model
from tasks.render_call import render_batch
from tasks.speed import Levers
from tasks.speed.levers import parse_compile
from tests.factories import small_row
from tests.unsafe_models import custom_code_folder, pickle_only_folder


def _parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _modules(pipe: Any) -> dict[str, torch.nn.Module]:
    """The pipeline's components that hold weights."""
    return {
        name: part for name, part in pipe.components.items() if isinstance(part, torch.nn.Module)
    }


def test_tiny_random_is_small_and_downsamples_8x(tiny_pipe: Any) -> None:
    total = sum(_parameters(m) for m in (tiny_pipe.unet, tiny_pipe.vae, tiny_pipe.text_encoder))
    assert total * 4 < 5_000_000  # a few MB of fp32 weights
    assert tiny_pipe.vae_scale_factor == 8


def test_tiny_random_is_the_same_every_build() -> None:
    first, second = ModelScope().build_tiny(), ModelScope().build_tiny()
    for a, b in zip(first.unet.parameters(), second.unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_pipeline_is_cached_per_process_model_and_device(tiny_pipe: Any) -> None:
    assert get_pipeline(resolve_model("tiny-random"), torch.device("cpu")) is tiny_pipe


def test_a_load_in_progress_does_not_block_other_models(tmp_path: Path, tiny_pipe: Any) -> None:
    # A folder whose model_index.json is a FIFO: its load blocks reading it until written.
    ModelScope().build_tiny(seed=4).save_pretrained(tmp_path / "slow")
    index = (tmp_path / "slow" / "model_index.json").read_text()
    (tmp_path / "slow" / "model_index.json").unlink()
    os.mkfifo(tmp_path / "slow" / "model_index.json")
    slow = ModelRef("slow", "ModelScope", path=tmp_path / "slow", content="slow-test")
    loaded: list[Any] = []
    loader = threading.Thread(target=lambda: loaded.append(get_pipeline(slow, torch.device("cpu"))))
    loader.start()
    try:
        assert get_pipeline(resolve_model("tiny-random"), torch.device("cpu")) is tiny_pipe
        assert loader.is_alive() and not loaded
    finally:
        # Answer the blocked read, and leave a plain file for diffusers to read after it.
        fifo = tmp_path / "slow" / "model_index.json"
        deadline = time.monotonic() + 60
        while True:
            try:  # succeeds once the loader waits on the FIFO
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("the loader never opened model_index.json") from None
                time.sleep(0.05)
        (tmp_path / "index.json").write_text(index)
        os.replace(tmp_path / "index.json", fifo)
        os.write(fd, index.encode())
        os.close(fd)
        loader.join(60)
    assert len(loaded) == 1 and type(loaded[0]).__name__ == "TextToVideoSDPipeline"


@pytest.mark.parametrize("asked", ["cpu", "auto"])
def test_load_model_reports_the_device_its_weights_are_on(asked: str) -> None:
    tiny = resolve_model("tiny-random")
    reported = torch.device(load_model(tiny, asked))
    pipe = get_pipeline(tiny, reported)  # what renders on the reported device use
    placed = {p.device for module in _modules(pipe).values() for p in module.parameters()}
    # `cuda` and `cuda:0` are the same GPU.
    assert {(d.type, d.index or 0) for d in placed} == {(reported.type, reported.index or 0)}


def test_identity_of_presets_is_their_name() -> None:
    # Output keys hash it: a golden key test pins what it hashes to.
    assert resolve_model("tiny-random").identity == "tiny-random"


@pytest.fixture
def digest_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private t2v cache folder, so tests never read or write the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "t2v" / contenthash.DIGESTS_FILE


@pytest.mark.usefixtures("digest_cache")
def test_a_folder_is_known_by_its_content_not_its_path(tmp_path: Path, tiny_pipe: Any) -> None:
    folder = tmp_path / "model"
    tiny_pipe.save_pretrained(folder)
    first = resolve_model(str(folder)).identity
    assert first.startswith("content:") and str(tmp_path) not in first

    # The same content elsewhere is the same model; documentation does not count.
    shutil.copytree(folder, tmp_path / "copy")
    (tmp_path / "copy" / "README.md").write_text("notes")
    assert resolve_model(str(tmp_path / "copy")).identity == first

    # Other weights saved into the same folder are another model.
    ModelScope().build_tiny(seed=1).save_pretrained(folder)
    assert resolve_model(str(folder)).identity not in (first, "")
    assert resolve_model(str(tmp_path / "copy")).identity == first


def test_folder_digests_are_remembered_until_a_file_changes(
    tmp_path: Path, digest_cache: Path
) -> None:
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    weights = folder / "unet" / "weights.safetensors"
    weights.write_bytes(b"first weights")
    first = contenthash.folder_digest(folder)
    known = json.loads(digest_cache.read_text())
    assert known[str(weights.resolve())][3] == hashlib.sha256(b"first weights").hexdigest()

    # Served from the cache while the file's size, mtime and inode are unchanged...
    known[str(weights.resolve())][3] = "0" * 64
    digest_cache.write_text(json.dumps(known))
    assert contenthash.folder_digest(folder) != first
    # ...and hashed again once the file is rewritten.
    weights.write_bytes(b"first weights")
    os.utime(weights, ns=(1, 1))
    assert contenthash.folder_digest(folder) == first


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x", ""])
def test_bad_device_names_the_device(device: str) -> None:
    with pytest.raises(ModelLoadError, match=f"unsupported device '{device}'"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        resolve_device("cuda")


def test_on_cpu_weights_saved_in_half_precision_load_as_float32_and_render(
    tmp_path: Path,
) -> None:
    # Weights no other test loads: the process caches pipelines by content.
    ModelScope().build_tiny(seed=5).to(dtype=torch.float16).save_pretrained(tmp_path / "half")
    pipe = get_pipeline(resolve_model(str(tmp_path / "half")), torch.device("cpu"))
    modules = _modules(pipe)
    assert set(modules) == {"unet", "vae", "text_encoder"}
    assert {p.dtype for module in modules.values() for p in module.parameters()} == {torch.float32}
    (video,) = render_batch(pipe, [small_row(1)])
    assert len(np.unique(video.frames)) > 10  # a picture, not a blank


def test_unknown_model_lists_the_presets() -> None:
    with pytest.raises(ModelLoadError, match=r"unknown model 'nope'.*tiny-random"):
        resolve_model("nope")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, as HF_HUB_CACHE would name it: huggingface_hub read
    the variable when this process imported it, so its setting is changed instead."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_missing_real_weights_say_where_and_what_works_offline(hub_cache: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        resolve_model("ms-1.7b")
    assert str(caught.value) == (
        f"weights of {MS_17B_REPO} (main) are not in the Hugging Face cache at {hub_cache}, "
        "and HF_HUB_OFFLINE is set: run `HF_HUB_OFFLINE=0 t2v models pull ms-1.7b` where the "
        "Hub can be reached, or copy a Hugging Face cache that holds it (one where `t2v "
        "models pull` ran) to this machine and point HF_HUB_CACHE at it; `--model "
        "tiny-random` needs no weights"
    )


def test_real_model_loads_from_the_hub_cache_pinned_to_its_commit(
    hub_cache: Path, tiny_pipe: Any
) -> None:
    # The Hub cache's layout, holding a tiny pipeline saved as the fp16 variant.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / f"models--{MS_17B_REPO.replace('/', '--')}"
    tiny_pipe.save_pretrained(repo / "snapshots" / commit, variant="fp16")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    ref = resolve_model("ms-1.7b")
    assert ref.identity == f"ms-1.7b@{commit}"
    pipe = get_pipeline(ref, torch.device("cpu"))
    for a, b in zip(pipe.unet.parameters(), tiny_pipe.unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_saved_folder_loads_with_the_same_weights(tmp_path: Path, tiny_pipe: Any) -> None:
    tiny_pipe.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    ref = resolve_model(str(tmp_path / "tiny"))
    assert ref.path == (tmp_path / "tiny").resolve()
    loaded = get_pipeline(ref, torch.device("cpu"))
    assert type(loaded).__name__ == "TextToVideoSDPipeline"
    for a, b in zip(loaded.unet.parameters(), tiny_pipe.unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_pickle_only_folder_is_refused_by_name(tmp_path: Path, tiny_pipe: Any) -> None:
    folder = pickle_only_folder(tmp_path / "pickled", tiny_pipe)
    with pytest.raises(ModelLoadError) as caught:
        get_pipeline(resolve_model(str(folder)), torch.device("cpu"))
    assert str(caught.value) == (
        f"{folder}/text_encoder holds only pickle weights (model.bin): t2v-batch loads "
        "safetensors only; re-save the pipeline with save_pretrained(safe_serialization=True)"
    )


def test_code_in_a_model_folder_is_refused_and_never_runs(tmp_path: Path, tiny_pipe: Any) -> None:
    marker = tmp_path / "code-ran"
    folder = custom_code_folder(tmp_path / "custom", tiny_pipe, marker)
    with pytest.raises(ModelLoadError) as caught:
        get_pipeline(resolve_model(str(folder)), torch.device("cpu"))
    assert str(caught.value) == (
        f"{folder} holds Python code (unet/evil.py): t2v-batch never runs code from a model "
        "folder; use a folder saved with save_pretrained by diffusers itself"
    )
    assert not marker.exists()


def test_a_component_from_another_library_is_refused(tmp_path: Path, tiny_pipe: Any) -> None:
    import json

    tiny_pipe.save_pretrained(tmp_path / "odd")
    index = json.loads((tmp_path / "odd" / "model_index.json").read_text())
    index["scheduler"] = ["subprocess", "Popen"]
    (tmp_path / "odd" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match=r"takes `scheduler` from 'subprocess'"):
        get_pipeline(resolve_model(str(tmp_path / "odd")), torch.device("cpu"))


def test_a_folder_without_model_index_is_not_a_pipeline(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelLoadError, match=r"has no model_index\.json"):
        get_pipeline(resolve_model(str(tmp_path / "weights")), torch.device("cpu"))


@pytest.mark.parametrize(
    ("index", "error"),
    [
        ("[]", "is not a pipeline's index (a JSON object with a `_class_name`)"),
        ('{"unet": ["diffusers", "UNet3DConditionModel"]}', "is not a pipeline's index"),
        (
            '{"_class_name": "TextToVideoSDPipeline", "unet": ["diffusers", "UNet9DModel"]}',
            "takes `unet` as 'UNet9DModel' from diffusers 0.42.1, which has no such class",
        ),
        (
            '{"_class_name": "TextToVideoSDPipeline", "text_encoder": ["transformers", "Nope"]}',
            "takes `text_encoder` as 'Nope' from transformers",
        ),
        # save_pretrained names a model of diffusers' own pipeline package by the package.
        (
            '{"_class_name": "LTX2Pipeline", "vocoder": ["ltx2", "Nope"]}',
            "takes `vocoder` as 'Nope' from diffusers.pipelines.ltx2 0.42.1, which has no such",
        ),
        (
            '{"_class_name": "LTX2Pipeline", "vocoder": ["os", "system"]}',
            "takes `vocoder` from 'os'",
        ),
    ],
)
def test_a_bad_model_index_is_refused_before_anything_loads(
    tmp_path: Path, index: str, error: str
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_index.json").write_text(index)
    with pytest.raises(ModelLoadError) as caught:
        resolve_model(str(tmp_path / "model"))
    assert str(caught.value).startswith(f"{tmp_path / 'model'}/model_index.json {error}")


def test_loading_a_folder_shows_no_progress_bars(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # A seed no other test uses: the folder's content is its identity, loaded only once.
    ModelScope().build_tiny(seed=17).save_pretrained(tmp_path / "tiny")
    capfd.readouterr()
    get_pipeline(resolve_model(str(tmp_path / "tiny")), torch.device("cpu"))
    assert capfd.readouterr().err == ""


def test_ms17b_architecture_matches_the_published_model() -> None:
    with torch.device("meta"):
        unet, vae, text_encoder = ms17b_components()
    assert round(_parameters(unet) / 1e9, 2) == 1.41
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size == 1024
    assert text_encoder.config.num_hidden_layers == 23
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8


def test_ms17b_random_builds_in_half_precision_where_asked() -> None:
    # The GPU benchmark builds it on CUDA; the meta device runs the same code in no time.
    pipe = ModelScope().build_random("ms-1.7b", torch.device("meta"), torch.float16)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float16
    assert pipe.unet.device.type == "meta"
    assert torch.get_default_dtype() == torch.float32


def test_compile_is_off_unless_asked(tiny_pipe: Any) -> None:
    assert parse_compile("0") == parse_compile("") == "off"
    # This stance refuses every compilation: a render that compiles nothing passes it.
    with torch.compiler.set_stance("fail_on_recompile"):
        (video,) = render_batch(tiny_pipe, [small_row(1)])
    assert video.frames.shape == (8, 64, 64, 3)


def test_the_compile_lever_compiles_the_unet_of_a_loaded_pipeline(tmp_path: Path) -> None:
    # Compiling tiny-random's first render takes ~80 s on two CPU cores: check the wiring
    # here (compilation itself is lazy) and measure compiled renders in the GPU benchmark.
    # Weights no other test loads: the process caches pipelines by content.
    ModelScope().build_tiny(seed=3).save_pretrained(tmp_path / "tiny", safe_serialization=True)
    levers = Levers(compile=parse_compile("1"))
    loaded = get_pipeline(resolve_model(str(tmp_path / "tiny")), torch.device("cpu"), levers)
    assert type(loaded.unet).__name__ == "UNet3DConditionModel"
    # The first denoising step would start compiling the UNet; this stance refuses instead,
    # naming the function it was about to compile.
    with (
        torch.compiler.set_stance("fail_on_recompile"),
        pytest.raises(RenderError, match=r"fail_on_recompile.*unet_3d_condition\.py"),
    ):
        render_batch(loaded, [small_row(1)])


def test_compile_takes_todays_modes_and_refuses_others() -> None:
    assert parse_compile("max-autotune-no-cudagraphs") == "max-autotune-no-cudagraphs"
    assert parse_compile("default") == parse_compile("1") == "full"
    with pytest.raises(ValueError, match=r"compile 'fastest' is not a compile setting: use off\|"):
        parse_compile("fastest")


# Wan


def test_a_saved_wan_folder_is_recognised_and_renders(tmp_path: Path) -> None:
    from tasks.families.wan import Wan

    Wan().build_tiny(seed=7).save_pretrained(tmp_path / "wan")
    ref = resolve_model(str(tmp_path / "wan"))
    assert ref.family_name == "Wan"
    pipe = get_pipeline(ref, torch.device("cpu"))
    assert pipe.vae.dtype == torch.float32
    row = small_row(1, num_frames=5, height=32, width=48, guidance_scale=5.0)
    (video,) = render_batch(pipe, [row])
    assert video.frames.shape == (5, 32, 48, 3)


def test_an_unsupported_pipeline_class_names_the_supported_ones(
    tmp_path: Path, tiny_pipe: Any
) -> None:
    tiny_pipe.save_pretrained(tmp_path / "other")
    index = json.loads((tmp_path / "other" / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (tmp_path / "other" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError) as caught:
        resolve_model(str(tmp_path / "other"))
    supported = sorted(name for family in FAMILIES for name in family.pipeline_classes)
    assert "TextToVideoSDPipeline" in supported and "WanPipeline" in supported
    assert str(caught.value) == (
        f"{tmp_path / 'other'}/model_index.json is a 'StableDiffusionPipeline', which "
        f"t2v-batch does not render: it renders {', '.join(supported)}"
    )


@pytest.mark.parametrize(
    ("preset", "billions"), [("wan2.1-1.3b", 1.42), ("wan2.1-14b", 14.29), ("wan2.2-5b", 5.0)]
)
def test_wan_random_architectures_match_the_published_sizes(preset: str, billions: float) -> None:
    from tasks.families.wan import Wan

    pipe = Wan().build_random(preset, torch.device("meta"), torch.bfloat16)
    assert pipe.transformer.device.type == "meta"
    assert pipe.transformer.dtype == torch.bfloat16
    assert round(_parameters(pipe.transformer) / 1e9, 2) == billions
    assert pipe.text_encoder.config.d_model == pipe.transformer.config.text_dim == 4096


@pytest.mark.parametrize(
    ("weights_gb", "free_gb", "placement"),
    [
        (10, 16, loading.RESIDENT),  # weights and working memory fit
        (10, 12, loading.TILED),  # the weights and a little more: the VAE decodes in tiles
        (10, 11, loading.OFFLOAD),  # not even that: one component at a time on the GPU
        (0, 1, loading.RESIDENT),  # built on the GPU already (the -random presets)
    ],
)
def test_a_pipeline_is_placed_on_a_gpu_by_the_memory_free_there(
    weights_gb: int, free_gb: int, placement: str
) -> None:
    assert loading.memory_plan(weights_gb * 2**30, free_gb * 2**30) == placement


def test_a_cpu_run_reports_its_device_without_a_placement(tiny_pipe: Any) -> None:
    from tasks.devices import describe

    model = resolve_model("tiny-random")
    assert load_model(model, "cpu") == "cpu"
    assert describe(model, "cpu") == "cpu"


@pytest.mark.parametrize(
    ("variant", "path", "fetched"),
    [
        (None, "transformer/diffusion_pytorch_model-00001-of-00008.safetensors", True),
        (None, "text_encoder/model.safetensors", True),
        (None, "unet/diffusion_pytorch_model.fp16.safetensors", False),
        ("fp16", "unet/diffusion_pytorch_model.fp16.safetensors", True),
        ("fp16", "unet/diffusion_pytorch_model.safetensors", False),
        # A repo that also ships single-file checkpoints beside its pipeline (Lightricks/LTX-2:
        # tens of GB each): the pipeline never loads them.
        (None, "ltx-2-19b-dev.safetensors", False),
        ("fp16", "model.fp16.safetensors", False),
        (None, "transformer/config.json", True),
        (None, "unet/diffusion_pytorch_model.bin", False),
    ],
)
def test_a_pull_fetches_the_pipelines_files_of_its_variant_only(
    variant: str | None, path: str, fetched: bool
) -> None:
    from huggingface_hub.utils import filter_repo_objects

    from tasks.hub import snapshot_patterns

    allow, ignore = snapshot_patterns(variant)
    kept = list(filter_repo_objects([path], allow_patterns=allow, ignore_patterns=ignore))
    assert kept == ([path] if fetched else [])
