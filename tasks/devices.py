"""Device and dtype choice, the process's pipelines (loaded once each), and per-device
turns (one render at a time, in the order queued) and failure marks."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from tasks.errors import ModelLoadError
from tasks.loading import load_pretrained, place, quiet_libraries
from tasks.presets import ModelRef, build_in_memory
from tasks.speed import EXACT, Levers
from tasks.speed.apply import SpeedReport, apply_levers

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
_device_turns: dict[str, DeviceTurns] = {}
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


class DeviceTurns:
    """One render at a time on a device, in the order the renders were queued: a batch
    queued earlier never waits behind one queued later, so a run's batches take the device
    in manifest order however their threads are scheduled."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._issued = 0
        self._queued: set[int] = set()
        self._busy = False

    def queue(self) -> int:
        """A place in the queue, taken where the order is known (the flow, batch by batch)."""
        with self._changed:
            self._issued += 1
            self._queued.add(self._issued)
            return self._issued

    def leave(self, ticket: int) -> None:
        """Give up a place (its render ended, or never started): later ones may go."""
        with self._changed:
            self._queued.discard(ticket)
            self._changed.notify_all()

    @contextmanager
    def turn(self, ticket: int | None = None) -> Iterator[None]:
        """Hold the device once every place queued before `ticket` has had its turn or
        left; without a ticket, queue now. A ticket that already had its turn (a retried
        render) waits for none of the places queued after it."""
        ticket = self.queue() if ticket is None else ticket
        with self._changed:
            self._changed.wait_for(
                lambda: not self._busy and all(queued >= ticket for queued in self._queued)
            )
            self._busy = True
        try:
            yield
        finally:
            with self._changed:
                self._busy = False
                self._queued.discard(ticket)
                self._changed.notify_all()


def device_turns(device: torch.device | str) -> DeviceTurns:
    """The device's queue: `cuda` and `cuda:N` of the current GPU are one device."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    with _lock:
        return _device_turns.setdefault(str(resolved), DeviceTurns())


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
