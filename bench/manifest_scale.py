"""How long validating a big manifest takes and how much memory it holds: `t2v check` of
CSVs of up to 100,000 rows (one row in ten invalid, an extra column) in a fresh process,
and of one of 100,000 rows with ~1,000-character prompts (about 100 MB).

    python -m bench.manifest_scale      # updates its section of bench/RESULTS.md
    python -m bench.manifest_scale --rows 1000 --long-rows 1000 --no-write
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import environment, markdown_table, publish_section

# Reads and validates a manifest; prints its counts, the seconds it took and the peak RSS.
PROBE = """
import resource, sys, time
from tasks.manifest import read_manifest
started = time.perf_counter()
manifest = read_manifest(sys.argv[1])
elapsed = time.perf_counter() - started
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(manifest.rows), len(manifest.invalid), elapsed, peak_kib)
"""


@dataclass(frozen=True)
class Measured:
    rows: int
    prompt_chars: int  # the longest prompt
    file_mb: float
    valid: int
    invalid: int
    validate_s: float
    peak_mib: float
    check_wall_s: float  # the whole `t2v check` command: start-up, read, validate, print


def write_manifest(path: Path, rows: int, padding: int) -> int:
    """A spreadsheet-like manifest: every optional column, one row in ten out of bounds,
    each prompt lengthened by `padding` characters. Returns the longest prompt's length."""
    words = (" and the wind" * (padding // 13 + 1))[:padding]
    longest = 0
    with path.open("w", encoding="utf-8") as out:
        out.write("id,prompt,negative_prompt,seed,num_frames,height,width,fps,campaign\n")
        for n in range(rows):
            height = 100 if n % 10 == 9 else 256  # not a multiple of 8: invalid
            prompt = f"a red fox running through fresh snow at dawn number {n}{words}"
            longest = max(longest, len(prompt))
            out.write(f"clip-{n},{prompt},blurry,{n},16,{height},256,8,winter-{n % 7}\n")
    return longest


def measure(rows: int, folder: Path, repeats: int, padding: int = 0) -> Measured:
    """The fastest of `repeats` fresh processes for each time; the largest peak memory."""
    manifest = folder / f"manifest-{rows}-{padding}.csv"
    prompt_chars = write_manifest(manifest, rows, padding)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    probes, walls = [], []
    for _ in range(repeats):
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(manifest)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        probes.append(probe.stdout.split())
        started = time.perf_counter()
        check = subprocess.run(
            [sys.executable, "-m", "flows.cli", "check", str(manifest)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        walls.append(time.perf_counter() - started)
        if check.returncode not in (0, 1) or "valid" not in check.stdout.splitlines()[-1]:
            raise RuntimeError(f"t2v check failed: {check.stderr.strip()}")
    valid, invalid = probes[0][:2]
    file_mb = manifest.stat().st_size / 1e6
    manifest.unlink()
    return Measured(
        rows=rows,
        prompt_chars=prompt_chars,
        file_mb=file_mb,
        valid=int(valid),
        invalid=int(invalid),
        validate_s=min(float(p[2]) for p in probes),
        peak_mib=max(int(p[3]) for p in probes) / 1024,
        check_wall_s=min(walls),
    )


def baseline_mib() -> float:
    """Peak memory of a process that imports the manifest reader and reads nothing."""
    code = (
        "import resource, tasks.manifest; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout) / 1024


def section(results: Sequence[Measured], base_mib: float) -> str:
    rows = [
        [
            f"{m.rows:,}", f"{m.prompt_chars:,}", f"{m.file_mb:.1f}",
            f"{m.valid:,}", f"{m.invalid:,}",
            f"{m.validate_s:.2f}", f"{m.peak_mib:.0f}", f"{m.peak_mib - base_mib:.0f}",
            f"{(m.peak_mib - base_mib) * 1024 / m.rows:.2f}", f"{m.check_wall_s:.2f}",
        ]
        for m in results
    ]  # fmt: skip
    table = markdown_table(
        [
            "rows", "longest prompt", "file MB", "valid", "invalid", "validate s", "peak RSS MiB",
            "above imports MiB", "KiB per row", "`t2v check` wall s",
        ],
        rows,
    )  # fmt: skip
    return (
        "## Validating big manifests (measured)\n\n"
        f"{environment('CPU')}\n\n{table}\n"
        "Each size runs as fresh processes: one that reads and validates the whole file "
        "(`tasks.manifest.read_manifest`), then `t2v check` of the same file, start-up "
        "included; times are the fastest of the repeats, memory the largest peak. A process "
        f"that imports the reader and reads nothing peaks at {base_mib:.0f} MiB. The file is "
        "read as a stream, so neither its bytes nor its decoded text are ever held whole: "
        "memory grows with the rows kept (the KiB per row column) and is bounded by the "
        "100,000-row and 256 MiB caps on one manifest; how many rows a run renders is "
        "bounded separately by its budget (`--max-rows`, `--max-work`).\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--long-rows",
        type=int,
        default=100_000,
        help="rows of a manifest of ~1,000-character prompts (default: 100,000: ~100 MB)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each size (fastest kept)")
    parser.add_argument("--no-write", action="store_true", help="print instead of updating")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="t2v-bench-manifest-") as scratch:
        cases = [*((rows, 0) for rows in args.rows), (args.long_rows, 940)]
        results = [measure(rows, Path(scratch), args.repeats, pad) for rows, pad in cases]
    text = section(results, baseline_mib())
    publish_section("manifest_scale", text, print_only=args.no_write)


if __name__ == "__main__":
    main()
