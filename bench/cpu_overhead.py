"""What the orchestration costs: `t2v render` (Prefect flow, tasks, encode, publish) on CPU
against `bench.bare_loop` (the same pipeline and encoder in a plain loop), with tiny-random.

Both run as fresh processes on manifests of two sizes; a line through the two walls,
wall = start-up + rows × per-row, separates what a run pays once from what each row
costs. `t2v render` starts a temporary Prefect server, as it does for users without
PREFECT_API_URL; a first run (not counted) creates its database.

    python -m bench.cpu_overhead            # updates the cpu_overhead section of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import MISSING, RESULTS_MD, environment, markdown_table, number, write_section

TARGET_OVERHEAD = 0.10  # per-row orchestration cost, as a share of the bare loop's per-row time
TARGET_STARTUP_S = 3.0  # start-up above the bare loop's: server, flow run, the run's records


@dataclass(frozen=True)
class Shape:
    size: int
    frames: int
    steps: int
    batch_size: int


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system time of the process and everything it waited for


@dataclass(frozen=True)
class Fit:
    """wall = startup_s + rows × per_row_s through two measurements."""

    startup_s: float
    per_row_s: float

    @classmethod
    def through(cls, rows: tuple[int, int], seconds: tuple[float, float]) -> Fit:
        per_row = (seconds[1] - seconds[0]) / (rows[1] - rows[0])
        return cls(seconds[0] - rows[0] * per_row, per_row)


def write_manifest(path: Path, rows: int, shape: Shape) -> None:
    """`rows` distinct prompts of one shape, so every batch is full and compatible."""
    lines = ["id,prompt,seed,num_frames,height,width,num_inference_steps,fps"]
    lines += [
        f"clip-{n},a lighthouse in a storm seen from the sea number {n},{n},"
        f"{shape.frames},{shape.size},{shape.size},{shape.steps},8"
        for n in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")


def timed(command: list[str], env: dict[str, str]) -> Run:
    """Run `command` to completion; its wall and CPU time (children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu)


def commands(manifest: Path, out: Path, shape: Shape) -> dict[str, list[str]]:
    """The two ways to render a manifest, by label."""
    t2v = str(Path(sys.executable).with_name("t2v"))
    batch = ["--batch-size", str(shape.batch_size)]
    return {
        "bare loop": [
            sys.executable, "-m", "bench.bare_loop", str(manifest), str(out / "bare"), *batch,
        ],
        "t2v render": [
            t2v, "render", str(manifest), "--out", str(out / "flow"), "--force",
            "--model", "tiny-random", "--device", "cpu", *batch,
        ],
    }  # fmt: skip


def measure(sizes: tuple[int, int], shape: Shape, repeats: int) -> dict[str, list[Run]]:
    """The fastest of `repeats` runs of each way at each size, interleaved: this machine is
    shared, and both ways should see the same neighbours."""
    with tempfile.TemporaryDirectory(prefix="t2v-overhead-") as scratch:
        folder = Path(scratch)
        env = bench_env(folder / "prefect-home")
        # Uncounted: creates the Prefect database and brings both paths' files into the cache.
        write_manifest(folder / "warm-up.csv", 1, shape)
        for command in commands(folder / "warm-up.csv", folder / "warm-up", shape).values():
            timed(command, env)
        for rows in sizes:
            write_manifest(folder / f"{rows}.csv", rows, shape)
        best: dict[tuple[str, int], Run] = {}
        for repeat in range(repeats):
            for rows in sizes:
                out = folder / f"out-{rows}-{repeat}"  # videos are written create-only
                for label, command in commands(folder / f"{rows}.csv", out, shape).items():
                    run = timed(command, env)
                    if (label, rows) not in best or run.wall_s < best[label, rows].wall_s:
                        best[label, rows] = run
    labels = dict.fromkeys(label for label, _ in best)
    return {label: [best[label, rows] for rows in sizes] for label in labels}


def bench_env(prefect_home: Path) -> dict[str, str]:
    """A private Prefect home and temporary server; one torch thread (two cores, shared)."""
    env = dict(os.environ, PREFECT_HOME=str(prefect_home), OMP_NUM_THREADS="1")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.pop("PREFECT_API_URL", None)
    return env


def results_section(sizes: tuple[int, int], shape: Shape, runs: dict[str, list[Run]]) -> str:
    walls = {label: Fit.through(sizes, (r[0].wall_s, r[1].wall_s)) for label, r in runs.items()}
    cpus = {label: Fit.through(sizes, (r[0].cpu_s, r[1].cpu_s)) for label, r in runs.items()}
    bare, bare_cpu = walls["bare loop"], cpus["bare loop"]
    header = [
        "path", f"wall {sizes[0]} rows s", f"wall {sizes[1]} rows s", "start-up s",
        "per row s", "per-row overhead %", "CPU per row s", "CPU per-row overhead %",
    ]  # fmt: skip
    rows = [
        [
            label, number(r[0].wall_s), number(r[1].wall_s), number(walls[label].startup_s),
            number(walls[label].per_row_s, 3),
            _overhead(walls[label], bare), number(cpus[label].per_row_s, 3),
            _overhead(cpus[label], bare_cpu),
        ]
        for label, r in runs.items()
    ]  # fmt: skip
    overhead = walls["t2v render"].per_row_s / bare.per_row_s - 1
    verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
    extra_s = walls["t2v render"].startup_s - bare.startup_s
    startup_verdict = "met" if extra_s <= TARGET_STARTUP_S else "NOT met"
    return "\n\n".join([
        "## CPU orchestration overhead (measured)",
        environment("CPU (2 cores shared with other work), OMP_NUM_THREADS=1"),
        f"tiny-random, {shape.size}×{shape.size}, {shape.frames} frames, {shape.steps} steps, "
        f"batch size {shape.batch_size}; fastest of the repeats of each run.",
        markdown_table(header, rows),
        f"Target: per-row overhead of `t2v render` ≤ {TARGET_OVERHEAD:.0%} of the bare "
        f"loop's per-row time: **{verdict}** ({overhead:+.1%} wall). Start-up of `t2v "
        f"render` ≤ the bare loop's + {TARGET_STARTUP_S:g} s: **{startup_verdict}** "
        f"({extra_s:+.2f} s).",
        METHOD,
    ])  # fmt: skip


def _overhead(fit: Fit, reference: Fit) -> str:
    """The per-row cost above the reference's, in percent; the reference itself gets none."""
    return (
        MISSING if fit is reference else number(100 * (fit.per_row_s / reference.per_row_s - 1), 1)
    )


METHOD = """\
How it is measured: each path runs as a fresh process on manifests of both sizes; the
start-up and per-row columns are the line through the two walls (or CPU times: user +
system of the process and all it waited for, ffmpeg and the Prefect server included).
`t2v render` starts a temporary Prefect server in each run, as it does without
PREFECT_API_URL (launched first, it boots while t2v checks the manifest and imports the
model's code); its database was created by an uncounted first run. The flow encodes
and publishes a batch while the next one renders, the bare loop one after the other, so
on two cores its wall may be below the bare loop's while it spends more CPU."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_overhead", description=__doc__)
    parser.add_argument("--rows", default="8,32", help="two manifest sizes, comma-separated")
    parser.add_argument("--size", type=int, default=128, help="height and width")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_MD, help="markdown file to update")
    args = parser.parse_args(argv)
    small, large = (int(n) for n in args.rows.split(","))
    shape = Shape(args.size, args.frames, args.steps, args.batch_size)
    runs = measure((small, large), shape, args.repeats)
    section = results_section((small, large), shape, runs)
    write_section(args.out, "cpu_overhead", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
