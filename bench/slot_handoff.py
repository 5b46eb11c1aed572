"""What a Prefect tag concurrency limit `gpu` costs a run: the flow renders the same
manifest on CPU with tiny-random without a limit, then with a `gpu` limit of one slot,
on a temporary Prefect server whose slot wait cap is `--slot-wait` seconds (`make server`
sets 1; Prefect's default is 10).

    python -m bench.slot_handoff          # updates the slot_handoff section of bench/RESULTS.md
    python -m bench.slot_handoff --rows 4 --no-write
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from bench.report import environment, markdown_table, publish_section

# One fresh process per slot wait: the server reads its settings when it starts.
RUN = """
import sys, tempfile, time
from pathlib import Path
from prefect import get_client
from prefect.testing.utilities import prefect_test_harness
from flows.parameters import RenderRequest
from flows.render_flow import render_manifest

rows, batch_size = int(sys.argv[1]), int(sys.argv[2])
folder = Path(tempfile.mkdtemp(prefix="t2v-slot-"))
manifest = folder / "m.csv"
manifest.write_text("id,prompt,seed,num_frames,height,width,num_inference_steps,fps\\n" + "".join(
    f"c{n},a small scene {n},{n},8,64,64,8,8\\n" for n in range(rows)))
with prefect_test_harness(server_startup_timeout=60):
    def run(name):
        request = RenderRequest(
            manifest=str(manifest), destination=str(folder / name), batch_size=batch_size)
        started = time.perf_counter()
        summary = render_manifest(**request.parameters())
        assert summary.counts["ok"] == rows, summary.counts
        return time.perf_counter() - started
    run("warm-up")  # loads the model and the engine
    free = run("no-limit")
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
    from prefect.concurrency.services import _no_limits_cache
    _no_limits_cache.clear()  # Prefect remembers for 5 s that the tag had no limit
    print(free, run("gpu-limit"))
"""


def measure(slot_wait: float, rows: int, batch_size: int) -> tuple[float, float]:
    """Wall seconds of the flow without and with a `gpu` limit of one slot."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PREFECT_HOME": tempfile.mkdtemp(prefix="t2v-slot-home-"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS": str(slot_wait),
        "PREFECT_LOGGING_LEVEL": "ERROR",
    }
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(rows), str(batch_size)],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    free, limited = (float(word) for word in done.stdout.split()[-2:])
    return free, limited


def section(results: Sequence[tuple[float, float, float]], rows: int, batch_size: int) -> str:
    batches = -(-rows // batch_size)
    table = markdown_table(
        ["slot wait cap s", "no limit s", "`gpu` limit of 1 s", "added per batch s"],
        [
            [f"{wait:g}", f"{free:.2f}", f"{limited:.2f}", f"{(limited - free) / batches:.2f}"]
            for wait, free, limited in results
        ],
    )
    return (
        "## The `gpu` concurrency limit's hand-off (measured)\n\n"
        f"{environment('CPU')}\n\n"
        f"The flow renders {rows} rows of tiny-random (64×64, 8 frames, 8 steps) in "
        f"{batches} batches of {batch_size} on a temporary Prefect server, once without a "
        "limit and once with a `gpu` tag limit of one slot; the model is loaded by an "
        f"uncounted first run.\n\n{table}\n"
        "The flow queues each batch's render while the one before renders; with the limit "
        "the queued task has to win the slot from the server, which tells it to ask again "
        "later, up to the slot wait cap. On a GPU that time is idle.\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--slot-wait", type=float, nargs="+", default=[10.0, 1.0])
    parser.add_argument("--no-write", action="store_true", help="print instead of updating")
    args = parser.parse_args(argv)
    results = [(wait, *measure(wait, args.rows, args.batch_size)) for wait in args.slot_wait]
    text = section(results, args.rows, args.batch_size)
    publish_section("slot_handoff", text, print_only=args.no_write)


if __name__ == "__main__":
    main()
