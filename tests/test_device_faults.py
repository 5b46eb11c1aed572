"""Device faults, caused for real through torch forward hooks on the cached tiny pipeline:
CUDA out-of-memory, a fatal CUDA error, a hung render. In the engine, through the flow on
the session's Prefect server, and through the real `t2v render` in a subprocess."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flows.errors import RowsFailedError
from flows.parameters import RenderRequest
from flows.render_flow import render_manifest
from tasks import devices, interrupt
from tasks.batching import RENDER_TIMEOUTS, render_timeout
from tasks.interrupt import INTERRUPTED
from tasks.presets import resolve_model
from tasks.render import not_rendered, render_rows
from tasks.render_call import FailedRender, RenderedVideo, render_batch
from tests.conftest import REPO
from tests.devicefaults import (
    ILLEGAL_ACCESS,
    UnetCall,
    attempts,
    fatal_cuda_error,
    hang_until,
    on_pipeline_call,
    out_of_memory,
    unet_faults,
)
from tests.factories import small_row, tiny_manifest

TINY = resolve_model("tiny-random")
FATAL = f"the GPU hit a fatal error: {ILLEGAL_ACCESS.splitlines()[0]}"
# A hung render here never ends (an Event nobody sets before the test is over); the normal
# renders beside it take under a second, a few on a loaded machine. This scale times a
# render out after 12 s (600 s, CPU's floor, × 0.02): well above any normal one, so only
# the hung one times out.
TIMEOUT_SCALE = 0.02


@pytest.fixture(autouse=True)
def usable_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device that a test marks failed is usable again by the tests after it."""
    monkeypatch.setattr(devices, "_device_failures", {})


def _prompt(n: int) -> str:
    return f"a tiny scene number {n}"


def _results(out: Path) -> dict[str, dict[str, str]]:
    return {
        row["id"]: row for row in csv.DictReader((out / "results.csv").open(encoding="utf-8-sig"))
    }


def _render_task_runs(state: Any) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=flow_run_filter)
    return [run for run in runs if run.name.startswith("render-")]


def _assert_frames_match(video: RenderedVideo, reference: RenderedVideo) -> None:
    # Batched matmuls sum in another order; frames agree to one level of 255 (test_render).
    difference = np.abs(video.frames.astype(int) - reference.frames.astype(int))
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.01


# Out of memory: split the batch, then fail only the rows that do not fit alone.


def test_out_of_memory_splits_a_batch_until_its_rows_fit(tiny_pipe: Any) -> None:
    rows = [small_row(n) for n in range(1, 5)]
    unsplit = render_batch(tiny_pipe, rows)
    failed_inputs: list[Any] = []
    alive_at_next_attempt: list[int] = []

    def fits_one_row(call: UnetCall) -> None:
        if call.step == 0:
            alive_at_next_attempt.append(sum(ref() is not None for ref in failed_inputs))
        if call.batch > 2:  # classifier-free guidance: two UNet samples per row
            failed_inputs.append(call.sample)
            raise out_of_memory()

    with unet_faults(tiny_pipe, fits_one_row) as calls:
        outcomes = render_rows(TINY, "cpu", rows).outcomes

    assert [type(outcome) for outcome in outcomes] == [RenderedVideo] * 4
    assert [outcome.row for outcome in outcomes] == rows
    for video, reference in zip(outcomes, unsplit, strict=True):
        assert isinstance(video, RenderedVideo)
        _assert_frames_match(video, reference)
    prompts = [row.prompt for row in rows]
    assert attempts(calls) == [
        tuple(prompts), tuple(prompts[:2]), (prompts[0],), (prompts[1],),
        tuple(prompts[2:]), (prompts[2],), (prompts[3],),
    ]  # fmt: skip
    # A failed attempt's activations are garbage before its halves run, not held by its
    # traceback: on a GPU, the halves need that memory.
    assert alive_at_next_attempt == [0] * 7


# cuBLAS or cuDNN failing to allocate a workspace raises a plain CUDA error.
@pytest.mark.parametrize(
    "error",
    [out_of_memory, lambda: RuntimeError("CUDA error: out of memory")],
    ids=["OutOfMemoryError", "cuda-error-out-of-memory"],
)
def test_a_row_out_of_memory_even_alone_fails_alone(
    tiny_pipe: Any, error: Callable[[], Exception]
) -> None:
    rows = [small_row(n) for n in range(1, 5)]
    greedy = rows[1].prompt

    def greedy_row(call: UnetCall) -> None:
        if greedy in call.prompts:
            raise error()

    with unet_faults(tiny_pipe, greedy_row) as calls:
        result = render_rows(TINY, "cpu", rows)
        outcomes = {outcome.row.line: outcome for outcome in result.outcomes}

    failed = outcomes.pop(2)
    assert isinstance(failed, FailedRender)
    assert failed.error == f"out of GPU memory: {error()!s}"
    assert all(isinstance(outcome, RenderedVideo) for outcome in outcomes.values())
    completed = [prompts for prompts in attempts(calls) if greedy not in prompts]
    assert sorted(completed) == sorted([(rows[0].prompt,), tuple(p.prompt for p in rows[2:])])


@pytest.mark.usefixtures("prefect_api_url")
def test_flow_renders_around_out_of_memory_and_retries_no_row(
    tmp_path: Path, tiny_pipe: Any
) -> None:
    out = tmp_path / "out"

    def faults(call: UnetCall) -> None:
        if call.batch > 2 or _prompt(2) in call.prompts:
            raise out_of_memory()
        if _prompt(3) in call.prompts:  # a render error after the split: fails its row only
            raise RuntimeError("expected scalar type Half but found Float")

    with unet_faults(tiny_pipe, faults) as calls:
        state = render_manifest(
            **RenderRequest(
                manifest=str(tiny_manifest(tmp_path, rows=5)), destination=str(out)
            ).parameters(),
            return_state=True,
        )

    assert state.is_failed()
    results = _results(out)
    assert {id_: row["status"] for id_, row in results.items()} == {
        "clip-0": "ok", "clip-1": "ok", "clip-2": "failed", "clip-3": "failed", "clip-4": "ok",
    }  # fmt: skip
    assert results["clip-2"]["error"].startswith("out of GPU memory: CUDA out of memory.")
    assert results["clip-3"]["error"] == (
        "render of 1 row(s) failed: expected scalar type Half but found Float"
    )
    assert sorted(path.name for path in out.glob("*.mp4")) == sorted(
        Path(results[id_]["output"]).name for id_ in ("clip-0", "clip-1", "clip-4")
    )
    # Each ok row went through the UNet to the end once; no render task ran twice.
    finished = [p for p in attempts(calls) if len(p) == 1 and _prompt(2) not in p]
    assert sorted(finished) == sorted((_prompt(n),) for n in (0, 1, 3, 4))
    runs = _render_task_runs(state)
    assert len(runs) == 2
    assert all(run.run_count == 1 and run.state.is_completed() for run in runs)


# A fatal CUDA error: the process's CUDA context is gone. Stop, keep what rendered.


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(ILLEGAL_ACCESS),
        RuntimeError("CUDA error: device-side assert triggered"),
        torch.AcceleratorError("CUDA error: unspecified launch failure"),
    ],
    ids=["illegal-access", "device-side-assert", "launch-failure"],
)
def test_fatal_cuda_errors_fail_the_batch_and_the_device(tiny_pipe: Any, error: Exception) -> None:
    rows = [small_row(1), small_row(2)]

    def fatal(call: UnetCall) -> None:
        raise error

    with unet_faults(tiny_pipe, fatal) as calls:
        result = render_rows(TINY, "cpu", rows)

    reason = f"the GPU hit a fatal error: {str(error).splitlines()[0]}"
    assert result.device_failure == reason
    assert [(o.row, getattr(o, "error", "")) for o in result.outcomes] == [
        (row, reason) for row in rows
    ]
    assert devices.device_failure(torch.device("cpu")) == reason
    assert len(attempts(calls)) == 1


def test_rows_rendered_before_a_fatal_error_are_kept(tiny_pipe: Any) -> None:
    rows = [small_row(n) for n in range(1, 5)]

    def split_then_fatal(call: UnetCall) -> None:
        if call.batch > 4:
            raise out_of_memory()
        if rows[2].prompt in call.prompts:
            raise RuntimeError(ILLEGAL_ACCESS)

    with unet_faults(tiny_pipe, split_then_fatal):
        result = render_rows(TINY, "cpu", rows)

    assert result.device_failure == FATAL
    outcomes = result.outcomes
    assert [type(outcome) for outcome in outcomes] == [RenderedVideo] * 2 + [FailedRender] * 2
    assert [outcome.row for outcome in outcomes] == rows
    assert {getattr(outcome, "error", "") for outcome in outcomes[2:]} == {FATAL}


@pytest.mark.usefixtures("prefect_api_url")
def test_fatal_cuda_error_stops_the_run_and_keeps_what_rendered(
    tmp_path: Path, tiny_pipe: Any
) -> None:
    out = tmp_path / "out"
    request = RenderRequest(
        manifest=str(tiny_manifest(tmp_path, rows=8)), destination=str(out), batch_size=2
    )

    with unet_faults(tiny_pipe, on_pipeline_call(2, fatal_cuda_error)) as calls:
        state = render_manifest(**request.parameters(), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, RowsFailedError)
    assert error.stopped == FATAL
    assert str(error).startswith(
        f"{FATAL}; rendering stopped, rerun to resume; 2 ok, 0 skipped, 6 failed, 0 invalid"
    )
    errors = sorted(row["error"] for row in _results(out).values())
    assert errors == sorted(["", ""] + [FATAL] * 2 + [not_rendered(FATAL)] * 4)
    assert len(list(out.glob("*.mp4"))) == 2
    assert len(attempts(calls)) == 2  # nothing rendered after the fault, nothing retried
    assert all(run.run_count == 1 for run in _render_task_runs(state))
    # Nothing else in this process renders on the device again.
    later = render_rows(TINY, "cpu", [small_row(1)])
    assert later.device_failure == FATAL
    assert [getattr(outcome, "error", "") for outcome in later.outcomes] == [not_rendered(FATAL)]


@pytest.mark.slow
def test_t2v_render_exits_after_a_fatal_cuda_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    out, manifest = tmp_path / "out", tiny_manifest(tmp_path, rows=6)
    done = _t2v_with_fault("fatal", manifest, out, cli_env)

    assert done.returncode == 1, done.stderr
    assert done.stderr == f"t2v: {FATAL}; rendering stopped, rerun the same command to resume\n"
    assert "2 ok, 0 skipped, 4 failed" in done.stdout
    statuses = [row["status"] for row in _results(out).values()]
    assert statuses.count("ok") == 2 == len(list(out.glob("*.mp4")))
    # A rerun, in another process (this one), resumes: it renders only the rows left.
    rerun = render_manifest(
        **RenderRequest(manifest=str(manifest), destination=str(out)).parameters()
    )
    assert rerun.counts == {"ok": 4, "skipped": 2, "failed": 0, "invalid": 0}


# A hung render: time it out, free the GPU slot, stop, and let the process exit.


@pytest.fixture
def release() -> Any:
    """Releases hung renders at the end of a test and waits until they are gone."""
    event = threading.Event()
    yield event
    event.set()
    for thread in threading.enumerate():
        if thread.name == "t2v-render":
            thread.join(timeout=60)


@pytest.mark.usefixtures("prefect_api_url")
def test_hung_render_times_out_frees_the_gpu_slot_and_stops_the_run(
    tmp_path: Path, tiny_pipe: Any, gpu_slot: Any, release: threading.Event
) -> None:
    out = tmp_path / "out"
    request = RenderRequest(
        manifest=str(tiny_manifest(tmp_path, rows=8)),
        destination=str(out),
        batch_size=2,
        render_timeout_scale=TIMEOUT_SCALE,
    )
    timeout_s = render_timeout(
        [small_row(1, num_frames=4, num_inference_steps=2)] * 2, "cpu", TIMEOUT_SCALE
    )
    timed_out = f"render timed out after {timeout_s:g} s"

    slots_while_hung: list[int] = []
    hang = hang_until(release)

    def note_slots_and_hang() -> None:
        slots_while_hung.append(len(gpu_slot.read_concurrency_limit_by_tag("gpu").active_slots))
        hang()

    started = time.monotonic()
    with unet_faults(tiny_pipe, on_pipeline_call(2, note_slots_and_hang)) as calls:
        state = render_manifest(**request.parameters(), return_state=True)
    elapsed = time.monotonic() - started

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, RowsFailedError)
    assert error.stopped == timed_out
    errors = sorted(row["error"] for row in _results(out).values())
    assert errors == sorted(["", ""] + [timed_out] * 2 + [not_rendered(timed_out)] * 4)
    assert len(list(out.glob("*.mp4"))) == 2
    assert len(attempts(calls)) == 2
    assert elapsed < timeout_s + 60  # the scaled timeout, not CPU's 600 s floor
    assert slots_while_hung == [1]
    assert gpu_slot.read_concurrency_limit_by_tag("gpu").active_slots == []


@pytest.mark.slow
def test_t2v_render_exits_after_a_hung_render(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli_env["T2V_RENDER_TIMEOUT_SCALE"] = str(TIMEOUT_SCALE)
    timeout_s = render_timeout(
        [small_row(1, num_frames=4, num_inference_steps=2)] * 2, "cpu", TIMEOUT_SCALE
    )

    done = _t2v_with_fault("hang", tiny_manifest(tmp_path, rows=6), out, cli_env)
    exited = time.time()

    assert done.returncode == 1, done.stderr
    # The stuck render thread does not hold the process: it ends once the results are out.
    assert exited - (out / "results.csv").stat().st_mtime < 20
    timed_out = f"render timed out after {timeout_s:g} s"
    assert done.stderr == f"t2v: {timed_out}; rendering stopped, rerun the same command to resume\n"
    errors = sorted(row["error"] for row in _results(out).values())
    assert errors == sorted(["", ""] + [timed_out] * 2 + [not_rendered(timed_out)] * 2)


def _t2v_with_fault(
    fault: str, manifest: Path, out: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`t2v render` of `manifest` in batches of two, with `fault` at the second batch; the
    process has to end by itself, well within the timeout."""
    command = [sys.executable, "-m", "tests.gpu_fault_launcher", fault]
    arguments = ["render", str(manifest), "--model", "tiny-random", "--out", str(out)]
    return subprocess.run(
        [*command, *arguments, "--device", "cpu", "--batch-size", "2"],
        env=env, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip


def test_render_timeout_grows_with_the_work_above_a_floor() -> None:
    small, large = (
        [small_row(1)],
        [small_row(n, num_frames=64, height=512, width=512) for n in range(8)],
    )
    for device_type, rule in RENDER_TIMEOUTS.items():
        assert render_timeout(small, device_type) == rule.floor_s
        work = 8 * 64 * 512 * 512 * 3 / 1e6
        assert render_timeout(large, device_type) == pytest.approx(rule.s_per_megapixel_step * work)
        assert render_timeout(large, device_type, 0.5) == render_timeout(large, device_type) / 2
    assert render_timeout(large, "cuda") < render_timeout(large, "cpu")


# A stop request (Ctrl-C, SIGTERM): abandon the render at once, keep what finished.


@pytest.fixture
def stop() -> Any:
    """Forgets the process's stop request after the test."""
    yield interrupt.request_stop
    interrupt.clear()


def test_a_stop_request_abandons_the_render_and_keeps_finished_rows(
    tiny_pipe: Any, stop: Callable[[str], None], release: threading.Event
) -> None:
    rows = [small_row(n) for n in range(1, 5)]
    second_row_started = threading.Event()

    def one_row_at_a_time(call: UnetCall) -> None:
        if call.batch > 2:
            raise out_of_memory()
        if call.step == 0 and rows[1].prompt in call.prompts:
            second_row_started.set()
            hang_until(release)()

    def request_stop_once_rendering() -> None:
        second_row_started.wait(60)
        stop("SIGINT")

    asker = threading.Thread(target=request_stop_once_rendering)
    with unet_faults(tiny_pipe, one_row_at_a_time):
        asker.start()
        started = time.monotonic()
        result = render_rows(TINY, "cpu", rows)
        elapsed = time.monotonic() - started
    asker.join()

    assert [type(outcome) for outcome in result.outcomes] == [RenderedVideo] + [FailedRender] * 3
    assert [outcome.row for outcome in result.outcomes] == rows
    assert {getattr(outcome, "error", "") for outcome in result.outcomes[1:]} == {INTERRUPTED}
    assert result.device_failure is None  # an interrupted render leaves the device usable
    assert elapsed < render_timeout(rows, "cpu") / 10  # not waited out


def test_a_render_after_a_stop_request_renders_nothing(
    tiny_pipe: Any, stop: Callable[[str], None]
) -> None:
    rows = [small_row(1), small_row(2)]
    stop("SIGTERM")
    with unet_faults(tiny_pipe, lambda call: None) as calls:
        result = render_rows(TINY, "cpu", rows)
    assert [(outcome.row, getattr(outcome, "error", "")) for outcome in result.outcomes] == [
        (row, INTERRUPTED) for row in rows
    ]
    assert calls == []
