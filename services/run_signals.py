"""Signals between whoever watches a run and the follower of that run, in this process.

A cancel request is an event the run's follower waits on beside the engine (it wakes at once,
not at its next poll); the run's end is an awaitable that resolves as soon as the run is filed
in its final state, so whoever pressed Cancel learns the outcome without reading the database.
One `RunSignals` belongs to one `GenerationService`; it knows only the runs this process follows.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

RECENT_ENDS = 512  # ends kept after their run is filed, for a wait that comes just after


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, as it was filed in the library."""

    run_id: str
    status: str
    error: str | None = None
    prediction_id: str | None = None
    engine: str | None = None


class RunWatch:
    """One followed run: its owner, the cancel request, and its end once filed."""

    def __init__(self, run_id: str, owner: str | None) -> None:
        self.run_id = run_id
        self.owner = owner
        self.cancel = asyncio.Event()
        # None: the follow stopped without filing an end (the run is left in flight).
        self.end: asyncio.Future[RunEnd | None] = asyncio.get_running_loop().create_future()
        # The one cancel of this run, held here so that it completes without its caller.
        self.stopping: asyncio.Task[Any] | None = None
        # Runs made for this entry (a composition's take): canceled with it.
        self.parts: list[str] = []

    @property
    def canceled(self) -> bool:
        return self.cancel.is_set()


class RunSignals:
    """The runs this process follows, by library id (used from the event loop only)."""

    def __init__(self) -> None:
        self._live: dict[str, RunWatch] = {}
        self._ended: OrderedDict[str, tuple[str | None, RunEnd]] = OrderedDict()

    def watch(self, run_id: str, owner: str | None) -> RunWatch:
        """The watch of `run_id`, opened now when it has none."""
        found = self._live.get(run_id)
        if found is None:
            found = self._live[run_id] = RunWatch(run_id, owner)
            self._ended.pop(run_id, None)
        return found

    def get(self, run_id: str) -> RunWatch | None:
        return self._live.get(run_id)

    def request_cancel(self, run_id: str, owner: str | None) -> bool:
        """Ask the follower of `run_id` to cancel it; False when this process does not follow
        it for `owner` (one visitor never reaches another's run)."""
        found = self._live.get(run_id)
        if found is None or found.owner != owner:
            return False
        found.cancel.set()
        for part in found.parts:
            self.request_cancel(part, owner)
        return True

    def link(self, entry_id: str, part_id: str) -> None:
        """`part_id` is a run made for entry `entry_id`: a cancel of the entry cancels it too."""
        entry = self._live.get(entry_id)
        if entry is None:
            return
        entry.parts.append(part_id)
        if entry.canceled:
            self.request_cancel(part_id, entry.owner)

    def ended(self, end: RunEnd) -> None:
        """`end.run_id` is filed in its final state: wake whoever waits for it."""
        found = self._live.pop(end.run_id, None)
        owner = found.owner if found is not None else None
        if found is not None and not found.end.done():
            found.end.set_result(end)
        self._ended[end.run_id] = (owner, end)
        self._ended.move_to_end(end.run_id)
        while len(self._ended) > RECENT_ENDS:
            self._ended.popitem(last=False)

    def drop(self, run_id: str) -> None:
        """The follow of `run_id` stopped without filing an end (left in flight for resume)."""
        found = self._live.pop(run_id, None)
        if found is not None and not found.end.done():
            found.end.set_result(None)

    async def wait_end(self, run_id: str, owner: str | None) -> RunEnd | None:
        """The end of `run_id` once filed (at once when it already is); None when this process
        does not follow it for `owner` or the follow stops without an end."""
        recent = self._ended.get(run_id)
        if recent is not None:
            return recent[1] if recent[0] == owner else None
        found = self._live.get(run_id)
        if found is None or found.owner != owner:
            return None
        return await asyncio.shield(found.end)
