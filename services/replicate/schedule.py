"""When to poll a run that offers no event stream: aimed at the moment its last reading prints.

A run that reports progress as readings "done / total" printed at a steady rate prints reading k
at a + b·k (a: the moment token 0 would print, b: seconds per token). Every poll brackets the
newest reading d it saw: d was printed before the answer arrived (a + b·d ≤ answered) and the next
reading was not yet printed when the request left (a + b·next > sent). The (a, b) consistent with
every bracket form a small convex polygon, kept by clipping a box with each bracket's two
half-planes; from its vertices, each coming reading's print time, and the last one's (the end),
is known to lie in an interval.

Far from the end, polls go out at the cadence's limit (`progress_interval`: the page's progress is
never older than that), or a little earlier where that halves a coming reading's interval, as long
as the polls so far are within budget (`poll_budget`: a third of the official client's requests).
Polls a cadence apart meet the readings at ever other phases, so the phase and the rate narrow
as the run goes. Once the end is within a cadence, polls go out at the middle of each coming
reading's interval, then at the middle of the end's own interval (a search that finds the run
over late by at most half the width left), and last just after the latest feasible end. If the
run still goes on then (the model encodes and uploads after its last token), polls follow at
short, growing intervals. Brackets that no steady rate satisfies (the rate changed, a clock
jumped) are made consistent again by forgetting the oldest ones.

The schedule is given times and never reads a clock: the follower and tests on a virtual clock
drive it alike.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from services.events import Progress

# One vertex (a, b) of the polygon: a in seconds after the schedule's origin, b seconds per token.
Vertex = tuple[float, float]
# p·a + q·b ≤ c
HalfPlane = tuple[float, float, float]

_SLACK = 1e-6  # seconds: float rounding must not make a true bracket exclude the truth
# The box that bounds the polygon: a within a day of the origin, b up to _B_MAX.
_SPAN = 24 * 3600.0
_B_MAX = 3600.0
_MAX_LINES = 64  # readings considered per decision (a model printing every token has many)
_MIN_POLLS = 12.0  # polls any run may spend in all to find its end
_FIXED_REQUESTS = 4 / 3  # a third of the create and the download both clients make
_LAZY_SLACK = 0.5  # share of the cadence a lazy poll may come early to halve an interval


@dataclass(frozen=True)
class FollowPolicy:
    """Timing of a follow, in seconds."""

    timeout: float = 30 * 60  # Replicate's own limit; the follow gives up (and cancels) after it
    first_poll: float = 1.0  # a first look soon after the create (which waited a second)
    # While progress flows: never longer between polls, so the page's progress is never 2 s old.
    progress_interval: float = 1.9
    idle_interval: float = 1.0  # while queued or loading (no progress yet), growing ...
    idle_growth: float = 1.5
    starting_max: float = 5.0  # ... up to this while starting without logs
    loading_max: float = 3.0  # ... up to this while processing without progress
    settle: float = 0.002  # the aimed poll leaves this long after the latest feasible end
    end_interval: float = 0.01  # then, if the run goes on (encoding, upload), polls this far apart,
    end_growth: float = 2.0  # growing by this factor
    end_max: float = 1.0  # up to this
    aim: bool = True  # aim polls at the end (else: polls a cadence apart while progress flows)
    precision: float = 0.004  # the end is aimed at once its print time is known this well ...
    min_interval: float = 0.005  # ... polls never closer than this
    # Polls to aim with beyond the cadence while they stay within one this often since the create
    # (a third of the official client's every 0.5 s, less a third of its create and download).
    poll_budget: float = 1.5
    brackets: int = 40  # the newest polls the rate is fitted to
    stream_attempts: int = 5  # stream (re)connections in a row without an event, then polling
    stream_backoff: float = 0.5
    poll_failures: int = 5  # failed polls in a row (each already retried) before giving up
    # The lane of this follow's polls in the token's read budget (services.replicate.budget):
    # 1 (steady; polls aimed at the end go first), 2 for the sparse polls kept as a webhook's
    # fallback (held to the fallback's share of the budget).
    budget_lane: int = 1


@dataclass(frozen=True)
class Bracket:
    """One look at the run: the newest reading `newest` (None: no reading yet) was printed by
    `answered`, and the reading after it was not yet printed at `sent` (None: not known, as for
    a prediction pushed by someone else)."""

    sent: float | None
    answered: float
    newest: int | None


def clip(polygon: list[Vertex], plane: HalfPlane) -> list[Vertex]:
    """The part of a convex polygon (vertices in order) where p·a + q·b ≤ c."""
    p, q, c = plane
    out: list[Vertex] = []
    for i, here in enumerate(polygon):
        there = polygon[(i + 1) % len(polygon)]
        f_here = p * here[0] + q * here[1] - c
        f_there = p * there[0] + q * there[1] - c
        if f_here <= 0:
            out.append(here)
        if (f_here < 0 < f_there) or (f_there < 0 < f_here):
            t = f_here / (f_here - f_there)
            out.append((here[0] + t * (there[0] - here[0]), here[1] + t * (there[1] - here[1])))
    return out


def span(polygon: list[Vertex], k: float) -> tuple[float, float]:
    """The earliest and latest print time of reading k over the polygon (origin-relative)."""
    times = [a + b * k for a, b in polygon]
    return min(times), max(times)


class Fit:
    """The (a, b) consistent with a run's brackets: a convex polygon, origin-relative times."""

    def __init__(
        self,
        brackets: list[Bracket],
        floor: float | None,
        origin: float,
        total: int,
        step: int | None,
    ):
        self.origin = origin
        self.total = total
        seen = sorted({b.newest for b in brackets if b.newest is not None})
        planes: list[HalfPlane] = []
        if floor is not None:  # nothing prints before the run was created: a ≥ floor
            planes.append((-1.0, 0.0, -(floor - origin) + _SLACK))
        for bracket in brackets:
            d = bracket.newest
            if d is not None:
                planes.append((1.0, float(d), bracket.answered - origin + _SLACK))
            if bracket.sent is None:
                continue
            # The reading after d: one step on, or the next one a later poll saw.
            later = [k for k in seen if d is None or k > d]
            upcoming = later[0] if later else None
            if d is not None and step:
                stepped = min(d + step, total)
                upcoming = stepped if upcoming is None else min(upcoming, stepped)
            if upcoming is not None and (d is None or upcoming > d):
                planes.append((-1.0, -float(upcoming), -(bracket.sent - origin) + _SLACK))
        polygon: list[Vertex] = [(-_SPAN, 0.0), (_SPAN, 0.0), (_SPAN, _B_MAX), (-_SPAN, _B_MAX)]
        for plane in planes:
            polygon = clip(polygon, plane)
            if not polygon:
                break
        self.polygon = polygon

    @property
    def feasible(self) -> bool:
        return bool(self.polygon)

    def when(self, k: float) -> tuple[float, float]:
        """Reading k's earliest and latest print time (absolute)."""
        lo, hi = span(self.polygon, k)
        return lo + self.origin, hi + self.origin

    def readings_between(self, start: float, end: float, lines: list[int]) -> list[int]:
        """The readings among `lines` (ascending) that may print within [start, end]."""
        lo_k, hi_k = math.inf, -math.inf
        s, e = start - self.origin, end - self.origin
        for a, b in self.polygon:
            if b <= 0:
                if s <= a <= e:
                    return lines
                continue
            lo_k, hi_k = min(lo_k, (s - a) / b), max(hi_k, (e - a) / b)
        return [k for k in lines if lo_k <= k <= hi_k]


class PollSchedule:
    """When to poll next, from what each poll showed; see the module's description."""

    def __init__(self, policy: FollowPolicy, *, started: float | None = None):
        self.policy = policy
        self._floor = started  # the run was created after this: no reading printed before
        self._floor_at = started
        self._brackets: deque[Bracket] = deque(maxlen=policy.brackets)
        self._rtts: deque[float] = deque(maxlen=policy.brackets)
        self._origin: float | None = None
        self._progress: Progress | None = None
        self._status: str | None = None
        self._idle = policy.idle_interval
        self._tail = policy.end_interval
        self._polls = 0  # polls answered so far (looks whose time is known)
        self.fit: Fit | None = None  # the newest fit, for tests and logs
        # The next poll is aimed at the run's end (or follows it as it encodes): it goes before
        # other polls when the token's read budget is tight.
        self.near_end = False

    def next_poll(
        self,
        sent: float | None,
        answered: float,
        status: str | None,
        progress: Progress | None,
        step: int | None = None,
    ) -> float:
        """The time of the next poll after a look at the run that left at `sent` and was
        answered at `answered` (`sent` None: a look whose time is not known); `step` is the
        number of tokens between the model's readings, when known."""
        p = self.policy
        now = answered
        if self._origin is None:
            self._origin = answered
        if status != self._status:
            self._status, self._idle = status, p.idle_interval
        before = self._progress
        if (
            before is not None
            and progress is not None
            and (progress.total != before.total or progress.done < before.done)
        ):
            self._brackets.clear()  # another pass (or another count): start the fit over
            self._floor = None
            self._tail = p.end_interval
        if progress is not None:
            self._progress = progress
        if sent is not None:
            self._rtts.append(max(0.0, answered - sent))
            self._polls += 1
        self._brackets.append(Bracket(sent, answered, progress.done if progress else None))
        self.near_end = False
        if progress is None:
            cap = p.starting_max if status == "starting" else p.loading_max
            delay, self._idle = self._idle, min(cap, self._idle * p.idle_growth)
            return (sent if sent is not None else now) + delay
        if progress.done >= progress.total:
            # The tokens are done: the model now encodes and uploads; look often, briefly.
            delay, self._tail = self._tail, min(p.end_max, self._tail * p.end_growth)
            self.near_end = True
            return now + delay
        return self._aim(sent if sent is not None else now, now, progress, step)

    def _fit(self, total: int, step: int | None) -> Fit:
        assert self._origin is not None
        while True:
            fit = Fit(list(self._brackets), self._floor, self._origin, total, step)
            if fit.feasible or (self._floor is None and len(self._brackets) <= 1):
                return fit
            # No steady rate explains every look: forget the oldest knowledge first.
            if self._floor is not None:
                self._floor = None
            else:
                self._brackets.popleft()

    def _aim(self, refreshed: float, now: float, progress: Progress, step: int | None) -> float:
        p = self.policy
        total, done = progress.total, progress.done
        fit = self.fit = self._fit(total, step)
        t_min = now + p.min_interval
        t_max = max(t_min, refreshed + p.progress_interval)
        if not fit.feasible or not p.aim or p.settle >= p.progress_interval:
            return t_max  # (a settle longer than the cadence turns aiming off too)
        end_lo, end_hi = fit.when(total)
        aim = max(t_min, end_hi + p.settle)
        # A poll pins a time no better than its round trip: below that, bisecting is futile.
        precision = max(p.precision, 2 * min(self._rtts, default=0.0))
        if end_hi - end_lo <= precision:
            return aim if aim <= t_max else t_max  # known: one poll just after it
        gap = step or max(1, done)  # the readings' spacing (as the first reading suggests)
        lines = list(range(done + gap, total, gap))
        # Never past the earliest feasible end; and while the rate is known too poorly for the
        # time left, at most half the time left to the end's middle, so it is learned in time.
        left = (end_lo + end_hi) / 2 - now
        horizon = end_lo if end_hi - end_lo <= left / 2 else now + left / 2
        horizon = min(t_max, max(t_min, horizon))
        if aim <= t_max:
            self.near_end = True
            # The end is within this cadence: while the budget allows, the soonest poll that
            # halves a coming reading's interval, each one narrowing the end; ...
            if self._allowance(now, short=True) >= 1:
                found = self._bisecting(fit, lines, t_min, horizon, precision, first=True)
                if found is not None:
                    return found
            # ... then, nothing left to learn before it, a search for the end itself: a poll in
            # the middle of its interval finds the run over (late by at most half the width) or
            # halves the interval for the next one.
            return max(t_min, (end_lo + end_hi) / 2 + p.settle)
        # Far from the end: at the cadence's limit (polls a cadence apart meet the readings at
        # ever other phases), or a little before it where that halves a reading's interval, as
        # long as the polls so far are within budget.
        slack = min(_LAZY_SLACK, self._allowance(now)) * p.progress_interval
        if slack > 0:
            early = max(t_min, horizon - slack)
            found = self._bisecting(fit, lines, early, horizon, precision, first=False)
            if found is not None:
                return found
        return horizon

    def _allowance(self, now: float, *, short: bool = False) -> float:
        """Polls the budget still allows: as many as a third of the official client's requests by
        now (a poll every 0.5 s, and the create and the download) come to, less those made; with
        `short`, at least `_MIN_POLLS` in all (a short run is worth a few polls more)."""
        elapsed = now - (self._floor_at if self._floor_at is not None else self._origin or now)
        earned = elapsed / self.policy.poll_budget - _FIXED_REQUESTS
        if short:
            earned = max(earned, _MIN_POLLS)
        return earned - self._polls

    def _bisecting(
        self,
        fit: Fit,
        lines: list[int],
        start: float,
        end: float,
        precision: float,
        *,
        first: bool,
    ) -> float | None:
        """The soonest (`first`) or latest time in [start, end] that is the middle of a coming
        reading's print-time interval still wider than `precision` (for the soonest: or the
        nearest reachable point of such an interval's middle half), or None."""
        if end < start:
            return None
        candidates = fit.readings_between(start, end, lines)
        if len(candidates) > _MAX_LINES:
            candidates = candidates[:_MAX_LINES] if first else candidates[-_MAX_LINES:]
        best: float | None = None
        for k in candidates:
            lo, hi = fit.when(k)
            width = hi - lo
            if width <= 2 * precision:  # halving it would not be worth a poll
                continue
            middle = (lo + hi) / 2
            if first:
                t = max(middle, start)
                if t <= min(end, hi - width / 4) and (best is None or t < best):
                    best = t
            elif start <= middle <= end and (best is None or middle > best):
                best = middle
        return best
