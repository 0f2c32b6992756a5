"""The local engine's fair queue on its own: turns, caps, groups and batches (no model)."""

from __future__ import annotations

import pytest

from services.engines.local import fair_queue
from services.engines.local.fair_queue import FairQueue, QueueFull, key_fits

ANY = key_fits(lambda item: 0)


def test_visitors_take_turns_not_first_come_first_served() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(4):
        queue.push("heavy", f"h{i}")
    queue.push("light", "l0")
    queue.push("other", "o0")
    queue.push("light", "l1")

    assert list(queue) == ["h0", "l0", "o0", "h1", "l1", "h2", "h3"]
    served = [queue.take(1, ANY) for _ in range(7)]
    assert served == [["h0"], ["l0"], ["o0"], ["h1"], ["l1"], ["h2"], ["h3"]]
    assert queue.take(1, ANY) == [] and len(queue) == 0


def test_a_visitor_served_goes_to_the_back_even_when_arriving_first_again() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "a0")
    queue.push("b", "b0")
    assert queue.take(1, ANY) == ["a0"]
    queue.push("a", "a1")  # a comes back while b still waits: b goes first
    assert queue.take(1, ANY) == ["b0"]
    assert queue.take(1, ANY) == ["a1"]


def test_each_visitor_has_a_cap_of_waiting_runs_and_a_group_counts_once() -> None:
    queue: FairQueue[str] = FairQueue(max_per_visitor=2)
    queue.push("a", "a0")
    queue.push("a", "v0", group="g", size=3)
    queue.push("a", "v1", group="g", size=3)  # a take joining its group is not refused
    assert not queue.room_for("a") and queue.room_for("a", "g") and queue.room_for("b")
    with pytest.raises(QueueFull):
        queue.push("a", "a1")
    assert "a1" not in queue and len(queue) == 3


def test_a_batch_takes_fitting_runs_in_fair_order_up_to_its_rows() -> None:
    queue: FairQueue[tuple[str, str]] = FairQueue()
    fits = key_fits(lambda item: item[1])  # same checkpoint
    queue.push("a", ("a0", "small"))
    queue.push("a", ("a1", "small"))
    queue.push("b", ("b0", "melody"))
    queue.push("c", ("c0", "small"))
    queue.push("d", ("d0", "small"))

    # a leads; b's run cannot share the pass; c's and d's fill it to three rows before a's
    # second (its turn comes after theirs).
    assert [item for item, _ in queue.take(3, fits)] == ["a0", "c0", "d0"]
    assert [item for item, _ in queue.take(3, fits)] == ["b0"]
    assert [item for item, _ in queue.take(3, fits)] == ["a1"]


def test_a_group_waits_for_its_takes_then_goes_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "v0", group="g", size=3)
    queue.push("b", "b0")
    queue.push("a", "v1", group="g", size=3)
    # The group is not complete: the next visitor goes meanwhile.
    assert queue.take(2, ANY) == ["b0"]
    assert queue.take(2, ANY) == [] and queue.next_deadline(0.0) is not None
    queue.push("a", "v2", group="g", size=3)
    # Complete, it goes as one pass even beyond the batch's rows: one group, one call.
    assert queue.take(2, ANY) == ["v0", "v1", "v2"]


def test_a_group_missing_a_take_goes_without_it_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "v0", group="g", size=2)
    assert queue.take(4, ANY) == []
    later = fair_queue.time.monotonic() + fair_queue.GROUP_WAIT_S
    monkeypatch.setattr(fair_queue.time, "monotonic", lambda: later)
    assert queue.take(4, ANY) == ["v0"]


def test_a_cancelled_take_of_a_group_does_not_hold_the_rest() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "v0", group="g", size=2)
    queue.push("a", "v1", group="g", size=2)
    assert queue.remove("v0") and not queue.remove("v0")
    assert queue.take(4, ANY) == ["v1"]


def test_runs_arriving_together_are_gathered_into_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue: FairQueue[str] = FairQueue(gather_s=0.1)
    queue.push("a", "a0")
    assert queue.take(4, ANY) == []  # the device waits a moment for clicks made with it
    queue.push("b", "b0")
    deadline = queue.next_deadline(fair_queue.time.monotonic())
    assert deadline is not None and deadline <= 0.1
    # Once the first has waited its moment, the ones that came after it go with it.
    later = queue.entries()[0].since + 0.1
    monkeypatch.setattr(fair_queue.time, "monotonic", lambda: later)
    assert queue.take(4, ANY) == ["a0", "b0"]
