"""A device's turns: one holder at a time, in the order places were queued."""

from __future__ import annotations

import threading
import time

from tasks.devices import DeviceTurns, device_turns


def _hold_in_threads(turns: DeviceTurns, tickets: list[int]) -> list[int]:
    """Start one thread per ticket, in the order given; the order they held the device."""
    held: list[int] = []

    def hold(ticket: int) -> None:
        with turns.turn(ticket):
            held.append(ticket)
            time.sleep(0.1)

    threads = [threading.Thread(target=hold, args=(ticket,)) for ticket in tickets]
    for thread in threads:
        thread.start()
        time.sleep(0.02)  # each waits before the next starts: arrival order is `tickets`
    for thread in threads:
        thread.join(5)
    return held


def test_places_are_served_in_the_order_queued_not_the_order_threads_arrive() -> None:
    turns = DeviceTurns()
    first, second, third = turns.queue(), turns.queue(), turns.queue()
    assert _hold_in_threads(turns, [third, second, first]) == [first, second, third]


def test_a_place_left_without_its_turn_holds_up_no_one() -> None:
    turns = DeviceTurns()
    first, second = turns.queue(), turns.queue()
    turns.leave(first)  # its render failed before it took its turn
    assert _hold_in_threads(turns, [second]) == [second]


def test_a_retried_render_does_not_wait_for_places_queued_after_it() -> None:
    turns = DeviceTurns()
    first, _second = turns.queue(), turns.queue()
    with turns.turn(first):  # the first render fails; its task tries again
        pass
    assert _hold_in_threads(turns, [first]) == [first]


def test_each_device_has_one_queue() -> None:
    assert device_turns("cpu") is device_turns("cpu")
