"""Device faults injected into the cached pipeline through torch forward pre-hooks.

A hook on the text encoder notes the prompts of each pipeline call; a hook on the UNet
hands every denoising step to a fault, which raises (out of memory, a fatal CUDA error)
or blocks (a hung kernel). Nothing of diffusers or t2v-batch is replaced.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

ILLEGAL_ACCESS = (
    "CUDA error: an illegal memory access was encountered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, "
    "so the stacktrace below might be incorrect."
)


@dataclass(frozen=True)
class UnetCall:
    """One UNet forward: its batch (twice the rows under classifier-free guidance), the
    prompts of the pipeline call it belongs to, its step in that call, and its input."""

    batch: int
    prompts: tuple[str, ...]
    step: int
    sample: weakref.ref[torch.Tensor]


# Raises to inject a fault, blocks to hang the render, or returns to let the step run.
Fault = Callable[[UnetCall], None]


def out_of_memory() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB"
    )


@contextmanager
def unet_faults(pipe: Any, fault: Fault) -> Iterator[list[UnetCall]]:
    """Send each UNet forward of `pipe` through `fault` first; yields the calls seen. The
    hooks come off afterwards: the pipeline is the process's cached one, shared by tests."""
    calls: list[UnetCall] = []
    current = threading.local()  # each render runs in a thread of its own

    def on_text(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # A pipeline call encodes its prompts, then its negative prompts, then denoises.
        if getattr(current, "denoised", True):
            ids = args[0] if args else kwargs["input_ids"]
            current.prompts = tuple(pipe.tokenizer.batch_decode(ids, skip_special_tokens=True))
            current.step, current.denoised = 0, False

    def on_unet(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        call = UnetCall(sample.shape[0], current.prompts, current.step, weakref.ref(sample))
        current.step, current.denoised = current.step + 1, True
        calls.append(call)
        fault(call)

    handles = [
        pipe.text_encoder.register_forward_pre_hook(on_text, with_kwargs=True),
        pipe.unet.register_forward_pre_hook(on_unet, with_kwargs=True),
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def attempts(calls: list[UnetCall]) -> list[tuple[str, ...]]:
    """The prompts of each pipeline call that reached the UNet, in order."""
    return [call.prompts for call in calls if call.step == 0]


def on_pipeline_call(number: int, action: Callable[[], None]) -> Fault:
    """A fault that runs `action` at the first step of the `number`-th pipeline call."""
    seen = 0
    lock = threading.Lock()

    def fault(call: UnetCall) -> None:
        nonlocal seen
        if call.step == 0:
            with lock:
                seen += 1
                due = seen == number
            if due:
                action()

    return fault


def fatal_cuda_error() -> None:
    raise RuntimeError(ILLEGAL_ACCESS)


def hang_until(release: threading.Event) -> Callable[[], None]:
    """Block like a kernel that never finishes; once released, end the render at once."""

    def hang() -> None:
        release.wait()
        raise RuntimeError("hung render released by the test")

    return hang
