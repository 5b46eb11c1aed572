"""The Hugging Face Hub: a repo's model_index.json and snapshot from the cache, fetched only
when missing; never pickles; an unreachable Hub refused in seconds with what works offline.

The cache, the endpoint and offline mode are huggingface_hub's own settings
(`HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`), as it read them at import.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.errors import ModelLoadError, first_line
from tasks.families import Family, family_for_class

# What from_pretrained reads besides weights: configs, tokenizer vocabularies.
HUB_CONFIG_PATTERNS = ["*.json", "*.txt", "*.model"]
HALF_VARIANTS = ("fp16", "bf16")
# huggingface_hub retries a refused connection for about half a minute; one look first.
PROBE_TIMEOUT_S = 5.0
COPY_CACHE = (
    "copy a Hugging Face cache that holds it (one where `t2v models pull` ran) to this machine "
    "and point HF_HUB_CACHE at it"
)


def hub_offline() -> bool:
    """Whether huggingface_hub may not download (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache() -> Path:
    """Where huggingface_hub keeps models."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def index_family(repo: str, revision: str) -> Family:
    """The family of a Hub repo, from its model_index.json alone (cached, else fetched)."""
    index = _cached_file(repo, revision, "model_index.json")
    if index is None:
        missing = f"{repo}'s model_index.json is not in the Hugging Face cache at {hub_cache()}"
        _check_reachable(missing, repo)
        index = _downloaded_index(repo, revision)
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{repo} has no model_index.json of a pipeline: {exc}") from exc
    return family_for_class(str(class_name), f"{repo}/model_index.json")


def hub_snapshot(repo: str, revision: str, variant: str | None, name: str) -> Path:
    """The folder of `repo` at `revision` in the Hugging Face cache; the files a pipeline
    needs are downloaded first if missing and the Hub can be reached. `name` is what the
    user called the model, for `t2v models pull`."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo, revision=revision, cache_dir=hub_cache(), local_files_only=True)
        )
    except Exception:  # huggingface_hub raises several types for "not in the cache"
        missing = f"weights of {repo} ({revision}) are not in the Hugging Face cache"
        _check_reachable(f"{missing} at {hub_cache()}", name)
    return _download(repo, revision, variant)


def pull(repo: str, revision: str, variant: str | None, name: str) -> Path:
    """Download the files of `repo` that a pipeline of `variant` needs into the Hugging Face
    cache (`t2v models pull`); `name` is what the user called the model."""
    _check_reachable(f"cannot download {repo}", name)
    return _download(repo, revision, variant)


def _download(repo: str, revision: str, variant: str | None) -> Path:
    """The files a pipeline of `variant` needs: configs, tokenizers and safetensors of that
    variant; never pickles."""
    from huggingface_hub import snapshot_download

    _quiet()
    allowed, ignored = snapshot_patterns(variant)
    try:
        return Path(
            snapshot_download(
                repo,
                revision=revision,
                cache_dir=hub_cache(),
                allow_patterns=allowed,
                ignore_patterns=ignored,
            )
        )
    except Exception as exc:  # authentication, a repo that does not exist, a dropped link...
        raise ModelLoadError(f"cannot download {repo} ({revision}): {first_line(exc)}") from exc


def snapshot_patterns(variant: str | None) -> tuple[list[str], list[str]]:
    """The files of a pipeline repo to fetch, and those not to: its configs and tokenizers,
    and its components' safetensors of `variant`. Weights at the repo's top level are
    single-file checkpoints that a pipeline never loads."""
    if variant:
        weights = [f"*/*.{variant}.safetensors", f"*/*.{variant}-*.safetensors"]
        return [*HUB_CONFIG_PATTERNS, *weights], []
    ignored = [f"*.{half}{end}" for half in HALF_VARIANTS for end in (".*", "-*")]
    return [*HUB_CONFIG_PATTERNS, "*/*.safetensors"], ignored


def _check_reachable(problem: str, name: str) -> None:
    """Refuse at once when downloading cannot work: offline mode, or a Hub that does not
    answer (asked through the proxies huggingface_hub would use). `name` is the model as
    the user called it."""
    import httpx
    from huggingface_hub import constants

    if hub_offline():
        raise ModelLoadError(
            f"{problem}, and HF_HUB_OFFLINE is set: run `HF_HUB_OFFLINE=0 t2v models pull "
            f"{name}` where the Hub can be reached, or {COPY_CACHE}; `--model tiny-random` "
            "needs no weights"
        )
    try:
        httpx.head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        reason = first_line(exc) or type(exc).__name__
        raise ModelLoadError(
            f"{problem}, and the Hugging Face Hub at {constants.ENDPOINT} cannot be reached "
            f"({reason}): to work offline, {COPY_CACHE}, and set HF_HUB_OFFLINE=1; "
            "`--model tiny-random` needs no weights"
        ) from exc


def _cached_file(repo: str, revision: str, name: str) -> Path | None:
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                repo, name, revision=revision, cache_dir=hub_cache(), local_files_only=True
            )
        )
    except Exception:  # not in the cache, in any of the ways huggingface_hub says it
        return None


def _downloaded_index(repo: str, revision: str) -> Path:
    from huggingface_hub import hf_hub_download

    _quiet()
    try:
        path = hf_hub_download(repo, "model_index.json", revision=revision, cache_dir=hub_cache())
        return Path(path)
    except Exception as exc:  # no such repo, not a pipeline, authentication
        raise ModelLoadError(
            f"cannot read {repo}'s model_index.json from the Hub: {first_line(exc)}"
        ) from exc


def _quiet() -> None:
    """huggingface_hub's warnings (each retry of a dropped connection) stay out of users'
    output: t2v says in one line what went wrong."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
