"""The spending caps: what a click may still start, held to every cap at once, and why not.

Three caps, each optional: runs in flight per payer (MUSICGEN_MAX_RUNS_IN_FLIGHT), GPU seconds
on Replicate per payer per day (MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR) and for the whole
deployment per day (MUSICGEN_MAX_GPU_SECONDS_PER_DAY). A payer is who an allowance belongs to:
a signed-in account, else a client address (ui.identity); None on a local install.

What counts (services.library.accounting): each run reserves its estimate in its row when it
starts and settles to its measured time when it ends, so runs in flight count. A group
(variations, a long piece, a loop) takes a `Ticket` for all its takes before the first starts:
the takes not yet started count through it, in this process, until the group ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.errors import SpendingLimit
from services.library import Library
from services.settings import Settings

SPENDING_WINDOW_S = 24 * 3600.0  # the daily GPU-seconds caps count the last 24 hours
# Runs counted as in flight: younger than Replicate's 30-minute limit with room to spare, so a
# record stranded by a crash (and not yet resumed) never holds an allowance for good.
IN_FLIGHT_WINDOW_S = 2 * 3600.0
NOTHING_SENT = "Nothing was sent."


@dataclass(eq=False)
class Ticket:
    """A group's takes promised before any starts: the GPU seconds and run slots they hold
    until each take's own row holds its share (`draw`), and until the group ends (`close`)."""

    payer: str | None
    gpu_seconds: float  # still held for takes not yet started
    takes: int  # takes not yet started
    parallel: int  # takes that run at the same time
    live: int = 0  # its takes in flight now
    _book: Tickets | None = field(default=None, repr=False)

    def draw(self, gpu_seconds: float) -> None:
        """A take starts: its row now holds `gpu_seconds` and one run slot."""
        self.takes = max(0, self.takes - 1)
        self.gpu_seconds = max(0.0, self.gpu_seconds - gpu_seconds)
        self.live += 1

    def ended(self) -> None:
        """A take drawn from this ticket is no longer running here."""
        self.live = max(0, self.live - 1)

    def slots(self) -> int:
        """Run slots held for takes not yet started, beside those running."""
        return max(0, min(self.parallel - self.live, self.takes))

    def close(self) -> None:
        """The group ended: what it did not start is free again."""
        if self._book is not None:
            self._book.drop(self)
            self._book = None

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tickets:
    """The open tickets of this process (held by the generation service, never module-wide)."""

    def __init__(self) -> None:
        self._open: list[Ticket] = []

    def open(self, ticket: Ticket) -> Ticket:
        ticket._book = self
        self._open.append(ticket)
        return ticket

    def drop(self, ticket: Ticket) -> None:
        if ticket in self._open:
            self._open.remove(ticket)

    def held(self, payer: str | None) -> tuple[float, int]:
        """GPU seconds and run slots held by `payer`'s open tickets (everyone's for None)."""
        mine = [t for t in self._open if payer is None or t.payer == payer]
        return sum(t.gpu_seconds for t in mine), sum(t.slots() for t in mine)


def in_words(seconds: float) -> str:
    """A wait as a musician says it: 'about 3 hours 5 minutes', 'less than a minute'."""
    if seconds < 60:
        return "less than a minute"
    minutes = math.ceil(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if minutes:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    return "about " + " ".join(parts)


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _frees_up(times: Sequence[tuple[float, float, bool]], excess: float, now: float) -> str:
    """When enough of the counted runs (created_at, seconds, in flight) leave the 24-hour
    window for `excess` seconds to fit again."""
    freed, in_flight = 0.0, False
    for created, seconds, running in times:
        freed += seconds
        in_flight = in_flight or running
        if freed >= excess - 1e-9:
            wait = in_words(max(0.0, created + SPENDING_WINDOW_S - now))
            sooner = " (sooner if runs in progress cost less than reserved)" if in_flight else ""
            return f"Enough frees up in {wait}{sooner}."
    return "Enough frees up as the runs in progress finish."


@dataclass(frozen=True)
class Claim:
    """What a click would start: its payer and owner, each take's estimated GPU seconds on
    Replicate (0 on this machine), and how many of its takes run at once."""

    payer: str | None
    owner: str | None
    gpu_seconds: tuple[float, ...]
    parallel: int = 1

    @property
    def total(self) -> float:
        return sum(self.gpu_seconds)


class SpendingGuard:
    """Refuses a claim past any cap (SpendingLimit naming the cap and when it frees up)."""

    def __init__(self, settings: Settings, library: Library, tickets: Tickets):
        self._settings = settings
        self._library = library
        self._tickets = tickets

    def check(self, claim: Claim) -> None:
        """Raise SpendingLimit if the claim does not fit; reads only, no await (so the caller
        can file the claim before any other click is checked)."""
        now = time.time()
        self._check_room(claim)
        s = self._settings
        caps = (s.max_runs_in_flight, s.max_gpu_seconds_per_visitor, s.max_gpu_seconds_per_day)
        if all(cap is None for cap in caps):
            return  # no cap to hold: nothing to read
        used, running = self._spent(claim.payer, now)
        self._check_in_flight(claim, running)
        if claim.total > 0:
            self._check_gpu(claim, used, now)

    def _spent(self, payer: str | None, now: float) -> tuple[float, int]:
        spent = self._library.spent(
            payer, since=now - SPENDING_WINDOW_S, in_flight_since=now - IN_FLIGHT_WINDOW_S
        )
        held_gpu, held_slots = self._tickets.held(payer)
        return spent.gpu_seconds + held_gpu, spent.runs_in_flight + held_slots

    def _check_room(self, claim: Claim) -> None:
        left = self._library.room_left(claim.owner)
        if left is None or left > 0:
            return
        cap = self._library.max_mb or 0
        share = "per visitor" if claim.owner is not None else "in all"
        raise SpendingLimit(
            f"Your history is full: this server keeps at most {cap:g} MB of audio {share}, and "
            "what is left are favourites or runs in progress, so nothing can be removed to make "
            "room. Delete a run or un-star a favourite, then try again. " + NOTHING_SENT
        )

    def _check_in_flight(self, claim: Claim, running: int) -> None:
        cap = self._settings.max_runs_in_flight
        if cap is None:
            return
        slots = min(claim.parallel, len(claim.gpu_seconds))
        if slots > cap:
            raise SpendingLimit(
                f"This makes {slots} takes at once, and this server runs at most {cap} at once "
                f"per visitor: ask for {cap} or fewer. " + NOTHING_SENT
            )
        if running + slots > cap:
            raise SpendingLimit(
                f"You already have {_runs(running)} in progress, and this server runs at most "
                f"{cap} at once per visitor (this needs {slots}). A slot frees up as soon as one "
                "of them finishes: try again then. " + NOTHING_SENT
            )

    def _check_gpu(self, claim: Claim, payer_used: float, now: float) -> None:
        s = self._settings
        caps = [
            (claim.payer, s.max_gpu_seconds_per_visitor, "per visitor per day", "you have"),
            (None, s.max_gpu_seconds_per_day, "a day for every visitor together", "visitors have"),
        ]
        for payer, cap, scope, who in caps:
            if cap is None:
                continue
            used = payer_used if payer == claim.payer else self._spent(payer, now)[0]
            if used + claim.total <= cap + 1e-9:
                continue
            head = (
                f"This needs ≈ {claim.total:.0f} s of GPU time on Replicate, past this server's "
                f"limit of {cap:g} GPU seconds {scope} ({who} used or reserved {used:.0f} s in "
                "the last 24 hours)."
            )
            if claim.total > cap:
                when = "That is more than the whole limit: try a shorter duration or fewer takes."
            else:
                times = self._library.spending_times(
                    payer, since=now - SPENDING_WINDOW_S, in_flight_since=now - IN_FLIGHT_WINDOW_S
                )
                when = _frees_up(times, used + claim.total - cap, now)
            raise SpendingLimit(f"{head} {when} {NOTHING_SENT}")
