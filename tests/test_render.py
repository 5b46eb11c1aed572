from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tasks.batching import batch_shape, plan_batches
from tasks.devices import get_pipeline
from tasks.images import StartImage
from tasks.presets import resolve_model
from tasks.render_call import FailedRender, RenderedVideo, render_batch, truncation_warnings
from tests.factories import broken_tiny, render_row, small_row


def test_plan_batches_groups_compatible_rows_in_input_order() -> None:
    rows = [
        small_row(1),
        small_row(2, height=128),
        small_row(3),
        small_row(4),
        small_row(5, height=128),
    ]
    batches = plan_batches(rows, batch_size=2)
    assert [[row.line for row in batch] for batch in batches] == [[1, 3], [4], [2, 5]]
    assert all(len({batch_shape(row) for row in batch}) == 1 for batch in batches)


def test_plan_batches_refuses_a_zero_batch_size() -> None:
    with pytest.raises(ValueError, match="`batch_size` has to be at least 1 but is 0"):
        plan_batches([small_row(1)], batch_size=0)


# Each family's tiny preset, a small shape it accepts, and tasks/render_call.py's measured
# tolerance (max levels of 255, fraction of values differing), with a margin.
FAMILY_CASES = {
    "tiny-random": (dict(num_frames=8, height=64, width=64), 1, 0.001),
    "tiny-wan": (dict(num_frames=9, height=32, width=32, guidance_scale=5.0), 1, 0.001),
}


@pytest.mark.parametrize("preset", FAMILY_CASES)
def test_batch_gives_the_frames_of_rows_rendered_one_by_one(preset: str) -> None:
    shape, max_levels, max_fraction = FAMILY_CASES[preset]
    pipe = get_pipeline(resolve_model(preset), torch.device("cpu"))
    rows = [
        small_row(1, **shape),
        small_row(2, negative_prompt="blurry", **shape),
        small_row(3, prompt="x", seed=2**63 - 1, **shape),
    ]
    batched = render_batch(pipe, rows)
    for video in batched:
        alone = render_batch(pipe, [video.row])[0]
        assert video.frames.shape == (shape["num_frames"], shape["height"], shape["width"], 3)
        assert video.frames.dtype == np.uint8
        assert len(np.unique(video.frames)) > 10  # a picture, not a blank
        difference = np.abs(video.frames.astype(int) - alone.frames.astype(int))
        assert difference.max() <= max_levels
        assert (difference > 0).mean() < max_fraction


def test_seeds_change_the_video_and_repeat_it(tiny_pipe: Any) -> None:
    first, same, other = (
        render_batch(tiny_pipe, [row])[0].frames
        for row in (small_row(1), small_row(1), small_row(1, seed=9))
    )
    assert np.array_equal(first, same)
    assert not np.array_equal(first, other)


def test_render_batch_refuses_mixed_shapes(tiny_pipe: Any) -> None:
    with pytest.raises(ValueError, match="share one batch shape"):
        render_batch(tiny_pipe, [small_row(1), small_row(2, num_frames=4)])


def test_long_prompts_get_a_truncation_warning(tiny_pipe: Any) -> None:
    short, long = small_row(1, prompt="a cat"), small_row(2, prompt="word " * 40)
    assert truncation_warnings(tiny_pipe, [short, long]) == [
        "",
        "prompt is 162 tokens; rendered from its first 77",
    ]


def test_wan_prompts_past_umt5s_window_get_a_truncation_warning() -> None:
    pipe = get_pipeline(resolve_model("tiny-wan"), torch.device("cpu"))
    short, long = small_row(1, prompt="a cat"), small_row(2, prompt="word " * 110)
    assert truncation_warnings(pipe, [short, long]) == [
        "",
        "prompt is 551 tokens; rendered from its first 512",
    ]


def test_rows_with_and_without_images_never_share_a_batch() -> None:
    image = StartImage("/job/a.png", "ab" * 32)
    rows = [render_row(1), render_row(2, image=image), render_row(3)]
    assert [[row.line for row in batch] for batch in plan_batches(rows, 4)] == [[1, 3], [2]]


@pytest.mark.parametrize("fault", ["black", "zeroed", "inf"])
def test_a_vae_decoding_black_grey_or_inf_fails_its_rows(fault: str) -> None:
    outcomes = render_batch(broken_tiny(fault), [small_row(1), small_row(2)])
    assert [type(outcome) for outcome in outcomes] == [FailedRender, FailedRender]
    assert {outcome.error for outcome in outcomes if isinstance(outcome, FailedRender)} == {
        "the render produced black/NaN frames"
    }


def test_a_nan_row_fails_and_its_batch_mates_render() -> None:
    rows = [small_row(1), small_row(2, prompt="a ~")]
    fine, poisoned = render_batch(broken_tiny("nan-token"), rows)
    assert isinstance(fine, RenderedVideo) and fine.flags == ()
    assert isinstance(poisoned, FailedRender)
    assert poisoned.error == "the render produced black/NaN frames"


def test_a_render_asks_for_its_gpu_slot_only_once_it_has_its_device_turn(tiny_pipe: Any) -> None:
    """Renders queued 1, 2, 3 whose threads start 3, 2, 1 ask for the slot (a Prefect
    `gpu` limit) in the order 1, 2, 3. Were it asked for first, 2 could hold the slot while
    waiting for 1's turn, and 1 wait for the slot: a run hung for good."""
    import contextlib
    import threading
    import time
    from collections.abc import Iterator

    from tasks.devices import device_turns
    from tasks.render import render_rows

    model = resolve_model("tiny-random")
    asked: list[int] = []

    def slot_for(ticket: int) -> Any:
        @contextlib.contextmanager
        def slot() -> Iterator[None]:
            asked.append(ticket)
            yield

        return slot

    turns = device_turns("cpu")
    tickets = [turns.queue() for _ in range(3)]
    rows = [small_row(n, num_frames=2, num_inference_steps=1) for n in range(3)]
    threads = [
        threading.Thread(
            target=render_rows,
            args=(model, "cpu", [rows[n]]),
            kwargs={"ticket": tickets[n], "slot": slot_for(tickets[n])},
        )
        for n in (2, 1, 0)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(60)
    assert asked == tickets
