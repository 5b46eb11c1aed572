"""How long the device sits idle between batches because of GPU exclusivity.

The flow renders one manifest on CPU with tiny-random on a temporary Prefect server, twice:
as a `gpu` worker runs it (one run per worker and per GPU, one render at a time per device
in the process, no server round trip), then with a Prefect `gpu` tag limit of one slot
(`make gpu-limit`), whose slot wait cap is `--slot-wait` seconds (`make server` sets 1;
Prefect's default is 10). A progress listener records when each batch took the device and
gave it back, and when each video was stored: the idle time between batches is the gap
between one batch giving the device back and the next taking it.

    python -m bench.slot_handoff          # updates the slot_handoff section of bench/RESULTS.md
    python -m bench.slot_handoff --rows 4 --no-write
    python -m bench.slot_handoff --images 4 --slot-wait 1   # rows with start images (tiny-ltx)

With `--images N` the rows name N start images in turn (4032×3024 JPEGs, a phone's photo),
rendered by tiny-ltx: each batch's images are read and fitted while the batch before it
holds the device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import environment, markdown_table, publish_section

FRAMES, SIZE, STEPS = 16, 64, 20
IMAGE_MODEL, IMAGE_FRAMES = "tiny-ltx", 17  # LTX-Video takes 8k+1 frames

# One fresh process per slot wait: the server reads its settings when it starts.
RUN = """
import json, sys, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image
from prefect import get_client
from prefect.testing.utilities import prefect_test_harness
from flows import progress
from flows.parameters import RenderRequest
from flows.render_flow import render_manifest

rows, batch_size, frames, size, steps, images = (int(arg) for arg in sys.argv[1:7])
model = sys.argv[7]


class Timeline:
    # A progress listener: each batch's hold on the device, and when each row was stored.
    def __init__(self):
        self.batches, self.stored = [], {}

    def phase(self, text):
        pass

    def started(self, total_rows):
        pass

    def batch_rendered(self, batch):
        self.batches.append(batch)

    def row_finished(self, result):
        self.stored[result.line] = time.time()


folder = Path(tempfile.mkdtemp(prefix="t2v-slot-"))
manifest = folder / "m.csv"
for n in range(images):  # smooth gradients under noise compress as a photo does
    y, x = np.mgrid[0:3024, 0:4032].astype(np.float32)
    base = np.stack([x / 4032, y / 3024, np.full_like(x, n / max(images, 1))], axis=-1) * 200
    noisy = base + np.random.default_rng(n).normal(0, 12, base.shape)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"shot{n}.jpg", quality=90)
image_column = ",image" if images else ""
manifest.write_text(f"id,prompt,seed,num_frames,height,width,num_inference_steps,fps{image_column}\\n"
    + "".join(f"c{n},a small scene {n},{n},{frames},{size},{size},{steps},8"
              + (f",shot{n % images}.jpg" if images else "") + "\\n" for n in range(rows)))
with prefect_test_harness(server_startup_timeout=60):
    def run(name):
        timeline = Timeline()
        request = RenderRequest(
            manifest=str(manifest), destination=str(folder / name), model=model,
            batch_size=batch_size)
        started = time.time()
        with progress.listening(timeline):
            summary = render_manifest(**request.parameters())
        wall = time.time() - started
        assert summary.counts["ok"] == rows, summary.counts
        held = sorted(timeline.batches, key=lambda batch: batch.started)
        gaps = [after.started - before.ended for before, after in zip(held, held[1:])]
        batches = [
            [batch.number, batch.started - started, batch.ended - started,
             max(timeline.stored[line] for line in batch.lines) - started]
            for batch in held
        ]
        return {"wall_s": wall, "idle_s": gaps, "batches": batches}
    run("warm-up")  # loads the model and the engine
    free = run("per-gpu")
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
    from prefect.concurrency.services import _no_limits_cache
    _no_limits_cache.clear()  # Prefect remembers for 5 s that the tag had no limit
    print(json.dumps({"per_gpu": free, "gpu_limit": run("gpu-limit")}))
"""


@dataclass(frozen=True)
class Run:
    """One run of the flow: its wall time, the device's idle gap before each batch but the
    first, and per batch in the order it took the device: its number, when it took the
    device and gave it back, and when its last video was stored (seconds into the run)."""

    wall_s: float
    idle_s: list[float]
    batches: list[tuple[int, float, float, float]]

    def cells(self) -> list[str]:
        mean = sum(self.idle_s) / len(self.idle_s) if self.idle_s else 0.0
        return [f"{self.wall_s:.2f}", f"{mean:.3f}", f"{max(self.idle_s, default=0.0):.3f}"]


@dataclass(frozen=True)
class Measured:
    slot_wait: float
    per_gpu: Run
    gpu_limit: Run


def measure(slot_wait: float, rows: int, batch_size: int, images: int = 0) -> Measured:
    """The flow's runs without a tag limit and with a `gpu` limit of one slot."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PREFECT_HOME": tempfile.mkdtemp(prefix="t2v-slot-home-"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS": str(slot_wait),
        "PREFECT_LOGGING_LEVEL": "ERROR",
    }
    env.pop("PREFECT_API_URL", None)
    frames, model = (IMAGE_FRAMES, IMAGE_MODEL) if images else (FRAMES, "tiny-random")
    arguments = [str(value) for value in (rows, batch_size, frames, SIZE, STEPS, images, model)]
    done = subprocess.run(
        [sys.executable, "-c", RUN, *arguments],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    runs = json.loads(done.stdout.splitlines()[-1])
    return Measured(slot_wait, _run(runs["per_gpu"]), _run(runs["gpu_limit"]))


def _run(measured: dict[str, Any]) -> Run:
    batches = [(int(n), took, gave, stored) for n, took, gave, stored in measured["batches"]]
    return Run(measured["wall_s"], measured["idle_s"], batches)


def section(results: Sequence[Measured], rows: int, batch_size: int, images: int = 0) -> str:
    batches = -(-rows // batch_size)
    what = f"tiny-random ({SIZE}×{SIZE}, {FRAMES} frames, {STEPS} steps)"
    title = ""
    if images:
        what = (
            f"{IMAGE_MODEL} ({SIZE}×{SIZE}, {IMAGE_FRAMES} frames, {STEPS} steps), each row "
            f"from one of {images} start images (4032×3024 JPEGs) in turn,"
        )
        title = " with image rows"
    per_gpu = "per GPU: a worker per GPU, a device lock per process"
    table = markdown_table(
        ["exclusivity", "slot wait cap s", "flow wall s", "device idle per batch s", "max s"],
        [
            [per_gpu, "–", *results[0].per_gpu.cells()],
            *(
                ["`gpu` tag limit of 1 slot", f"{m.slot_wait:g}", *m.gpu_limit.cells()]
                for m in results
            ),
        ],
    )
    timeline = markdown_table(
        ["batch", "took the device s", "gave it back s", "videos stored by s"],
        [
            [str(number), f"{took:.2f}", f"{gave:.2f}", f"{stored:.2f}"]
            for number, took, gave, stored in results[0].per_gpu.batches
        ],
    )
    return (
        f"## GPU exclusivity: the device's idle time between batches{title} (measured)\n\n"
        f"{environment('CPU')}\n\n"
        f"The flow renders {rows} rows of {what} in {batches} batches of {batch_size} on a "
        "temporary Prefect "
        "server; the model is loaded by an uncounted first run. A progress listener records "
        "each batch's hold on the device: idle is the gap between a batch giving the device "
        "back and the next taking it.\n\n"
        f"{table}\n"
        "The flow queues up to three batches for the device, which they take in manifest "
        "order. Per GPU, the next queued render waits for its turn in the process and takes "
        "the device at once. With a tag limit, the render whose turn it is then asks the "
        "server for the slot the batch before gave back: two round trips between batches, "
        "and while a slot is taken elsewhere, retries up to the slot wait cap apart; on a "
        "GPU that time is idle. `make deploy` creates no tag limit, and a run without one "
        "asks for no slot.\n\n"
        "The per-GPU run's timeline (seconds from the flow's start): each batch's videos are "
        "encoded and stored while the next batch renders.\n\n"
        f"{timeline}\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--slot-wait", type=float, nargs="+", default=[10.0, 1.0])
    parser.add_argument("--images", type=int, default=0, help="start images the rows name")
    parser.add_argument("--no-write", action="store_true", help="print instead of updating")
    args = parser.parse_args(argv)
    results = [measure(wait, args.rows, args.batch_size, args.images) for wait in args.slot_wait]
    text = section(results, args.rows, args.batch_size, args.images)
    name = "slot_handoff_images" if args.images else "slot_handoff"
    publish_section(name, text, print_only=args.no_write)


if __name__ == "__main__":
    main()
