"""Builders and data shared by test modules: render rows, manifests, a run summary, awkward
results, the `t2v` command in a subprocess, and what a run left in an S3 bucket."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from storage.s3 import s3_client
from tasks.claims import CLAIMS
from tasks.destination import PROBES
from tasks.manifest import InvalidRow, Manifest, RenderRow, parse_manifest
from tasks.results import ResultRow, RunSummary
from tests.conftest import REPO

ROW = RenderRow(
    line=1,
    id="clip",
    prompt="a cat",
    negative_prompt="",
    seed=1,
    num_frames=8,
    height=64,
    width=64,
    num_inference_steps=4,
    guidance_scale=9.0,
    fps=8,
    extra={"Campaign": "spring"},
)
SUMMARY = RunSummary(
    counts={"ok": 1, "skipped": 0, "failed": 0, "invalid": 1},
    rows=2,
    wall_s=1.0,
    videos_per_minute=60.0,
    model="tiny-random",
    device="cpu",
    destination="/out",
    results="/out/results.csv",
    started_at="2026-11-28T00:00:00+00:00",
    finished_at="2026-11-28T00:00:01+00:00",
    versions={"python": "3.11"},
)


def sample_results() -> list[ResultRow]:
    ok = ResultRow.for_row(
        replace(ROW, prompt="=HYPERLINK(1)", negative_prompt='line\nbreak, comma "quoted" 猫 🎬'),
        "ok",
        "tiny-random",
        output="/out/clip-abc.mp4",
        render_s=0.1234,
        bytes=10,
        sha256="ff",
    )
    bad = InvalidRow(
        2, "bad", "`height` must be …", {"prompt": "@x", "height": "100", "Campaign": "-5"}
    )
    return [ok, ResultRow.for_invalid(bad, "tiny-random")]


def gallery_videos(page: str) -> list[dict[str, Any]]:
    """The videos index.html shows, in its order, each a dict of the columns its script
    reads (a shared value in place of its index)."""
    found = re.search(r'<script type="application/json" id="gallery-videos">(.*?)</script>', page)
    assert found, "index.html holds no videos"
    data = json.loads(found[1])
    shared = set(data["shared_columns"])
    return [
        {
            name: data["shared"][cell] if name in shared and cell is not None else cell
            for name, cell in zip(data["columns"], row, strict=True)
        }
        for row in data["videos"]
    ]


def render_row(line: int, **changes: Any) -> RenderRow:
    """A valid row numbered `line` (9 frames of 32×32, 3 steps, seed `line`), with `changes`;
    9 frames is 8k + 1 and 4k + 1, and 32 a multiple of every family's size step."""
    row = RenderRow(
        line=line,
        id=f"row-{line}",
        prompt=f"a small cat runs through the snow in scene number {line}",
        negative_prompt="",
        seed=line,
        num_frames=9,
        height=32,
        width=32,
        num_inference_steps=3,
        guidance_scale=6.0,
        fps=8,
    )
    return replace(row, **changes)


def table(*rows: list[str]) -> str:
    """Rows written as RFC 4180 CSV, so cells may hold commas, quotes and newlines."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def parse(text: str, limit: int | None = None) -> Manifest:
    """`text` validated as a manifest named test.csv, with ModelScope's rules."""
    return parse_manifest(text.encode("utf-8"), "test.csv", limit=limit)


def small_row(line: int, **changes: Any) -> RenderRow:
    """`render_row` shaped as ModelScope tests use it: 8 frames of 64×64, guidance 9."""
    shape = {
        "prompt": f"a small test scene number {line}",
        "num_frames": 8,
        "height": 64,
        "width": 64,
        "guidance_scale": 9.0,
    }
    return render_row(line, **{**shape, **changes})


HEADER = "id,prompt,seed,num_frames,height,width,num_inference_steps,fps\n"


def tiny_manifest(folder: Path, rows: int, name: str = "prompts.csv") -> Path:
    """A manifest of `rows` tiny rows (4 frames of 64×64, 2 steps) in `folder`."""
    path = folder / name
    lines = [f"clip-{n},a tiny scene number {n},{n},4,64,64,2,8\n" for n in range(rows)]
    path.write_text(HEADER + "".join(lines))
    return path


# Three tiny rows and, third, one too tall for ModelScope.
MIXED_MANIFEST = (
    HEADER
    + "clip-0,a tiny scene number 0,0,4,64,64,2,8\n"
    + "clip-1,a tiny scene number 1,1,4,64,64,2,8\n"
    + "tall,a scene too tall,2,4,100,64,2,8\n"
    + "clip-2,a tiny scene number 2,2,4,64,64,2,8\n"
)
RESULT_FILES = {"results.csv", "results.json", "index.html"}
S3_RESULT_FILES = RESULT_FILES | {".t2v/gallery.json"}  # a folder has the record in .t2v/

T2V = [sys.executable, "-m", "flows.cli"]


def t2v(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real `t2v` command with `args`, run from the repository in a fresh interpreter."""
    return subprocess.run(
        [*T2V, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def t2v_main(capture: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`t2v` with `args` as `flows.cli.main` in this process: its exit code, and what it
    printed to stdout and stderr (nothing from before the call)."""
    capture.readouterr()
    code = main(list(args))
    captured = capture.readouterr()
    return code, captured.out, captured.err


def put_manifest(bucket: str, key: str = "prompts/today.csv", text: str = MIXED_MANIFEST) -> str:
    """Store `text` at `key` in `bucket`; returns its s3:// URI."""
    s3_client().put_object(Bucket=bucket, Key=key, Body=text.encode())
    return f"s3://{bucket}/{key}"


def s3_versions(bucket: str, prefix: str) -> Counter[str]:
    """How many PUTs landed on each key under `prefix` (the bucket is versioned), claims
    and conditional-write probes left out: a run creates and deletes those (`s3_claims`
    lists the claims left)."""
    pages = s3_client().get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    keys = (v["Key"].removeprefix(prefix) for page in pages for v in page.get("Versions", []))
    return Counter(key for key in keys if not key.startswith((f"{CLAIMS}/", f"{PROBES}/")))


def s3_claims(bucket: str, prefix: str) -> list[str]:
    """The claims stored under `prefix` now."""
    pages = (
        s3_client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=f"{prefix}{CLAIMS}/")
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def s3_results(bucket: str, key: str = "renders/results.csv") -> list[dict[str, str]]:
    """The rows of the results.csv at `key` in `bucket`."""
    body = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


def git(folder: Path, *args: str) -> str:
    """git in `folder` with a fixed identity, output stripped; fails the test on an error."""
    identity = ["-c", "user.name=t2v tests", "-c", "user.email=tests@t2v.invalid"]
    command = ["git", "-C", str(folder), *identity, *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def commit_to_bare_repo(folder: Path, bare: Path) -> str:
    """Commit everything in `folder` (made a repository) and push it to a new bare repository
    at `bare`, the remote a team would clone; returns the commit."""
    git(folder, "init", "--quiet")
    git(folder, "add", "--all")
    git(folder, "commit", "--quiet", "--message", "the deployed commit")
    git(folder.parent, "clone", "--quiet", "--bare", str(folder), str(bare))
    return git(folder, "rev-parse", "HEAD")


def broken_tiny(fault: str) -> Any:
    """A tiny-random pipeline broken the way video VAEs and fp16 break: `black` decodes
    black, `zeroed` flat grey, `inf` -inf; `nan-token` turns prompts holding `~` into NaN."""
    import torch

    from tasks.families.modelscope import ModelScope

    pipe = ModelScope().build_tiny(seed=0)
    pipe.set_progress_bar_config(disable=True)
    conv_out = pipe.vae.decoder.conv_out
    with torch.no_grad():
        if fault in ("black", "zeroed"):
            conv_out.weight.zero_()
            conv_out.bias.fill_(-1.0 if fault == "black" else 0.0)
        elif fault == "inf":
            conv_out.weight.mul_(float("inf")).neg_()
        else:
            embeddings = pipe.text_encoder.get_input_embeddings().weight
            embeddings[pipe.tokenizer("~", add_special_tokens=False).input_ids] = float("nan")
    return pipe
