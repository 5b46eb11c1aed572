"""Device and dtype choice, the process's pipelines (loaded once each), and per-device
locks and failure marks."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import torch

from tasks.errors import ModelLoadError
from tasks.loading import load_pretrained, place, quiet_libraries
from tasks.presets import ModelRef, build_in_memory
from tasks.speed import EXACT, Levers, SpeedReport, apply_levers

logger = logging.getLogger("t2v")

# A pipeline with a step cache or compiled is another pipeline than the exact one.
CacheKey = tuple[str, str, Levers]  # (model identity, device, levers)

# `_lock` guards the dicts only, never a load: a minutes-long load holds its own key's lock,
# so that other models can be read, and loaded, meanwhile.
_lock = threading.Lock()
_pipelines: dict[CacheKey, Any] = {}
_placements: dict[CacheKey, str] = {}
_reports: dict[CacheKey, SpeedReport] = {}
_loading: dict[CacheKey, threading.Lock] = {}
_device_locks: dict[str, threading.Lock] = {}
_device_failures: dict[str, str] = {}


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA device must exist."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ModelLoadError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} requested but CUDA is not available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return resolved


def dtype_for(device: torch.device) -> torch.dtype:
    """Half precision on GPUs (bf16 where supported), fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_model(model: ModelRef, device: str, levers: Levers = EXACT) -> str:
    """Load the pipeline for `model` on `device` with `levers` into this process's cache;
    return the device."""
    resolved = resolve_device(device)
    get_pipeline(model, resolved, levers)
    return str(resolved)


def get_pipeline(model: ModelRef, device: torch.device, levers: Levers = EXACT) -> Any:
    """The process's one pipeline for (model, device, levers), loaded on first use."""
    key = (model.identity, str(device), levers)
    with _lock:
        if key in _pipelines:
            return _pipelines[key]
        loading = _loading.setdefault(key, threading.Lock())
    with loading:  # a second caller for the same key waits here for the first's load
        with _lock:
            if key in _pipelines:
                return _pipelines[key]
        pipe, placement, report = _load(model, device, levers)
        with _lock:
            _pipelines[key] = pipe
            _placements[key] = placement
            _reports[key] = report
    return pipe


def describe(model: ModelRef, device: str, levers: Levers = EXACT) -> str:
    """The device a run reports: `cuda:0 (model CPU offload)`, or `cpu`."""
    with _lock:
        placement = _placements.get((model.identity, device, levers))
    return f"{device} ({placement})" if placement and device.startswith("cuda") else device


def speed_report(model: ModelRef, device: str, levers: Levers) -> SpeedReport | None:
    """The levers applied to, and skipped on, the pipeline loaded for (model, device, levers);
    None when none was loaded."""
    with _lock:
        return _reports.get((model.identity, device, levers))


def device_lock(device: torch.device) -> threading.Lock:
    """One lock per device, so only one render at a time holds a GPU in this process."""
    with _lock:
        return _device_locks.setdefault(str(device), threading.Lock())


def device_failure(device: torch.device) -> str | None:
    """Why `device` cannot be used again by this process, if it cannot."""
    with _lock:
        return _device_failures.get(str(device))


def mark_device_failed(device: torch.device, reason: str) -> None:
    """After a fatal CUDA error or a hung render: nothing else in this process may use it."""
    with _lock:
        _device_failures.setdefault(str(device), reason)


def _load(model: ModelRef, device: torch.device, levers: Levers) -> tuple[Any, str, SpeedReport]:
    started = time.perf_counter()
    dtype = dtype_for(device)
    family = model.family
    quiet_libraries()
    if model.path is not None:
        pipe = load_pretrained(model.path, family, dtype, model.variant)
    else:
        pipe = build_in_memory(model, device, dtype)
    placement = place(pipe, family, device, dtype)
    report = apply_levers(pipe, family, levers)
    # Loads take minutes at full size: worth a line in the worker's log.
    logger.info(
        "loaded %s on %s (%s) in %.1f s",
        model.name,
        device,
        placement,
        time.perf_counter() - started,
    )
    return pipe, placement, report
