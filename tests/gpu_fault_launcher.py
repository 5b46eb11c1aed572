"""The real `t2v` command with a device fault in its cached tiny-random pipeline.

    python -m tests.gpu_fault_launcher fatal|hang T2V-ARGUMENTS...

`fatal` raises CUDA's illegal-memory-access error at the second pipeline call; `hang`
blocks that call for good. The fault is a torch forward hook on the UNet of the pipeline
that the flow then takes from the process's cache; the command itself is unchanged.
"""

from __future__ import annotations

import sys
import threading

import torch

from flows import cli
from tasks.devices import get_pipeline
from tasks.presets import resolve_model
from tests.devicefaults import fatal_cuda_error, hang_until, on_pipeline_call, unet_faults


def main() -> int:
    fault, arguments = sys.argv[1], sys.argv[2:]
    action = {"fatal": fatal_cuda_error, "hang": hang_until(threading.Event())}[fault]
    pipe = get_pipeline(resolve_model("tiny-random"), torch.device("cpu"))
    with unet_faults(pipe, on_pipeline_call(2, action)):
        return cli.main(arguments)


if __name__ == "__main__":
    sys.exit(main())
