"""The local engine's waiting room: visitors take turns, and runs that fit together go together.

Each visitor has a line of *entries*; an entry is one run, or a group of runs started together
(a group of variations), which counts once against the visitor's cap and is always served whole.
Visitors are served round-robin: the visitor served last goes to the back, so a visitor with
twenty runs waiting delays another visitor's one run by at most one turn (one batch). A batch
starts from the entry whose turn it is and takes, in the same fair order, every other entry that
can share its `generate` call (`fits`), up to `max_rows` rows; a group larger than that is never
split. A group waits until all its runs have arrived (or `GROUP_WAIT_S` passed), and any entry
waits `gather_s` after it arrived, so that clicks made at the same moment on an idle device start
together rather than one now and the rest a whole take later. Not thread-safe: the engine holds
its lock around every call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# How long the first run of a group waits for the rest before going without them (a take that
# was refused on its way, say). The takes of a group arrive within milliseconds of each other.
GROUP_WAIT_S = 5.0


class QueueFull(Exception):
    """The visitor already has their cap of entries waiting."""


@dataclass(eq=False)
class Entry(Generic[T]):
    """One run, or the runs of one group, waiting together."""

    visitor: str
    group: str | None
    size: int
    items: list[T] = field(default_factory=list)
    gone: int = 0  # runs of the group taken out (cancelled) before it was served
    since: float = field(default_factory=time.monotonic)

    def ready(self, now: float, gather_s: float = 0.0) -> bool:
        # One computation with `ready_at`: a worker woken at ready_at finds it ready.
        return now >= self.ready_at(gather_s)

    def ready_at(self, gather_s: float) -> float:
        """When it will be ready at the latest (monotonic time)."""
        complete = len(self.items) + self.gone >= self.size
        return self.since + (gather_s if complete else max(gather_s, GROUP_WAIT_S))


class FairQueue(Generic[T]):
    """Round-robin over visitors, with groups, caps and batches."""

    def __init__(self, max_per_visitor: int = 0, gather_s: float = 0.0) -> None:
        self.max_per_visitor = max_per_visitor  # entries waiting per visitor; 0: no cap
        self.gather_s = gather_s
        self._lines: OrderedDict[str, list[Entry[T]]] = OrderedDict()  # in turn order

    def __len__(self) -> int:
        return sum(len(e.items) for line in self._lines.values() for e in line)

    def __contains__(self, item: object) -> bool:
        return any(item in e.items for line in self._lines.values() for e in line)

    def room_for(self, visitor: str, group: str | None = None) -> bool:
        """Whether `visitor` may queue another run now (a run joining a waiting group may)."""
        line = self._lines.get(visitor, [])
        if group is not None and any(e.group == group for e in line):
            return True
        return not self.max_per_visitor or len(line) < self.max_per_visitor

    def push(self, visitor: str, item: T, *, group: str | None = None, size: int = 1) -> None:
        """Queue `item` for `visitor`; raises QueueFull past the cap (nothing queued then)."""
        if not self.room_for(visitor, group):
            raise QueueFull(visitor)
        line = self._lines.setdefault(visitor, [])
        entry = next((e for e in line if group is not None and e.group == group), None)
        if entry is None:
            entry = Entry(visitor, group, max(1, size))
            line.append(entry)
        entry.items.append(item)

    def remove(self, item: T) -> bool:
        """Take a waiting `item` out (a cancel); False if it is not waiting."""
        for visitor, line in self._lines.items():
            for entry in line:
                if item in entry.items:
                    entry.items.remove(item)
                    entry.gone += 1
                    if not entry.items:
                        line.remove(entry)
                    if not line:
                        del self._lines[visitor]
                    return True
        return False

    def clear(self) -> list[T]:
        """Empty the queue; the items that were waiting, in turn order."""
        items = list(self)
        self._lines.clear()
        return items

    def __iter__(self) -> Iterator[T]:
        for entry in self.entries():
            yield from entry.items

    def entries(self) -> list[Entry[T]]:
        """Every waiting entry in the order they would be served (round-robin by visitor)."""
        lines = [list(line) for line in self._lines.values()]
        order: list[Entry[T]] = []
        depth = 0
        while any(depth < len(line) for line in lines):
            order.extend(line[depth] for line in lines if depth < len(line))
            depth += 1
        return order

    def next_deadline(self, now: float) -> float | None:
        """Seconds until a waiting entry is ready at the latest (None: nothing waits)."""
        waits = [
            e.ready_at(self.gather_s) - now
            for e in self.entries()
            if not e.ready(now, self.gather_s)
        ]
        return max(0.0, min(waits)) if waits else None

    def take(self, max_rows: int, fits: Callable[[T, T], bool]) -> list[T]:
        """The next batch, in fair order, removed from the queue ([] when nothing is ready).

        The first ready entry in turn order leads; ready entries whose runs `fits` the lead's
        join while the batch stays within `max_rows` rows. Served visitors go to the back.
        """
        now = time.monotonic()
        entries = [e for e in self.entries() if e.items]
        ready = [e for e in entries if e.ready(now, self.gather_s)]
        if not ready:
            return []
        lead = ready[0]
        head = lead.items[0]
        batch = [lead]
        rows = len(lead.items)
        # Joiners need not have gathered themselves: the lead's wait was for them.
        for entry in (e for e in entries if e is not lead and e.ready(now)):
            if rows + len(entry.items) > max_rows:
                continue
            if all(fits(head, item) for item in entry.items):
                batch.append(entry)
                rows += len(entry.items)
        for entry in batch:
            line = self._lines[entry.visitor]
            line.remove(entry)
            # Served: to the back of the turn order (with what it has left, if anything).
            del self._lines[entry.visitor]
            if line:
                self._lines[entry.visitor] = line
        return [item for entry in batch for item in entry.items]


def key_fits(key: Callable[[T], Hashable]) -> Callable[[T, T], bool]:
    """A `fits` rule: two items fit in one batch when `key` gives them the same value."""
    return lambda a, b: key(a) == key(b)
