"""The poll schedule on synthetic timelines: a virtual clock, no server, no waiting.

A timeline is a run as the API shows it: readings "done / total" printed every `step` tokens at a
steady rate from `start`, the last one at the end of the tokens, then (maybe) a tail while the
model encodes and uploads. Each poll is answered `rtt` after it leaves and shows the run as it
was halfway through the round trip.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from services.events import Progress
from services.replicate.schedule import Bracket, Fit, FollowPolicy, PollSchedule

POLICY = FollowPolicy()
ORIGIN = 5_000.0  # the virtual monotonic clock's reading when the create is sent


@dataclass
class Timeline:
    start: float  # seconds after the create when token 0 would print
    per_token: float
    total: int
    step: int
    tail: float = 0.0
    # (tokens done, new seconds per token): the rate changes at that reading
    change: tuple[int, float] | None = None

    def printed(self, k: int) -> float:
        if self.change is None or k <= self.change[0]:
            return self.start + self.per_token * k
        at, rate = self.change
        return self.start + self.per_token * at + rate * (k - at)

    @property
    def tokens_end(self) -> float:
        return self.printed(self.total)

    @property
    def end(self) -> float:
        return self.tokens_end + self.tail

    def readings(self) -> list[int]:
        marks = list(range(self.step, self.total, self.step))
        return [*marks, self.total]

    def newest(self, t: float) -> int | None:
        seen = [k for k in self.readings() if self.printed(k) <= t]
        return seen[-1] if seen else None

    def status(self, t: float) -> str:
        if t >= self.end:
            return "succeeded"
        return "processing" if t >= self.start else "starting"


@dataclass
class Followed:
    polls: list[tuple[float, float, int | None, str]] = field(default_factory=list)

    @property
    def sent(self) -> list[float]:
        return [s for s, _, _, _ in self.polls]

    @property
    def found_end(self) -> float:
        """Seconds after the create when the answer saying the run is over arrived."""
        return self.polls[-1][1]


def follow(
    timeline: Timeline,
    *,
    rtt: float = 0.003,
    wait: float = 1.0,
    policy: FollowPolicy = POLICY,
    jitter: float = 0.0,
    seed: int = 0,
) -> Followed:
    """Follow `timeline` as the follower does: the create answers after `wait` (Prefer: wait)
    with the run as it then is, then every poll is timed by the schedule."""
    rng = random.Random(seed)
    schedule = PollSchedule(policy, started=ORIGIN)
    followed = Followed()
    answered = min(wait, timeline.end) + rtt
    seen_at = answered - rtt / 2
    previous: int | None = None

    def step_known(newest: int | None) -> int | None:
        # The tracker knows the step once it has seen two readings in the log.
        return timeline.step if newest is not None and newest >= 2 * timeline.step else None

    newest = timeline.newest(seen_at)
    status = timeline.status(seen_at)
    progress = Progress(newest, timeline.total) if newest else None
    next_at = schedule.next_poll(ORIGIN, ORIGIN + answered, status, progress, step_known(newest))
    if progress is None:
        next_at = ORIGIN + answered + policy.first_poll
    while status != "succeeded":
        sent = next_at - ORIGIN
        round_trip = rtt + rng.random() * jitter
        answered = sent + round_trip
        seen_at = sent + round_trip / 2
        newest, status = timeline.newest(seen_at), timeline.status(seen_at)
        followed.polls.append((sent, answered, newest, status))
        assert len(followed.polls) < 500, "the schedule polls without end"
        progress = Progress(newest, timeline.total) if newest else None
        next_at = schedule.next_poll(
            ORIGIN + sent, ORIGIN + answered, status, progress, step_known(newest)
        )
        assert next_at > ORIGIN + sent
        previous = newest if newest is not None else previous
    return followed


def bench_like(seconds: float, queue: float) -> Timeline:
    """The benchmark's runs: 8 s of audio (400 tokens), a reading every 5 %."""
    return Timeline(start=queue, per_token=seconds / 400, total=400, step=20)


def every_token(seconds: float, queue: float) -> Timeline:
    """meta/musicgen itself: a reading for every token (50 a second of audio)."""
    return Timeline(start=queue, per_token=seconds / 1500, total=1500, step=1)


QUEUES = [0.2 + 0.5 * i / 12 for i in range(12)]  # phases of the line grid against the polls


def test_a_run_printing_every_token_is_caught_within_a_few_ms_of_its_end():
    for seconds, queue in itertools.product((5.0, 30.0), QUEUES):
        timeline = every_token(seconds, queue)
        followed = follow(timeline)
        late = followed.found_end - timeline.end
        assert 0 <= late <= 0.010, (seconds, queue, late)


def test_coarse_readings_are_enough_to_catch_the_end_within_a_few_ms():
    """Readings every 5 % only (the benchmark's emulator): a handful of aimed polls pin the
    phase, and the end is found a few milliseconds after it happens."""
    for seconds in (2.0, 10.0, 30.0):
        lates = sorted(
            follow(bench_like(seconds, queue)).found_end - bench_like(seconds, queue).end
            for queue in QUEUES
        )
        assert all(late >= 0 for late in lates)
        assert lates[len(lates) // 2] <= 0.025, (seconds, lates)
        assert lates[-1] <= 0.100, (seconds, lates)


def test_a_30_s_run_costs_at_most_a_third_of_the_official_clients_requests():
    """The official client polls every 0.5 s: ~61 polls for a 30 s run, 63 requests with the
    create and the download. A third of that leaves 19 polls."""
    counts = [len(follow(bench_like(30.0, queue)).polls) for queue in QUEUES]
    assert sum(counts) / len(counts) <= 19, counts


@pytest.mark.parametrize("timeline", [bench_like(30.0, 0.45), every_token(30.0, 0.45)])
def test_polls_are_never_further_apart_than_the_cadence_while_progress_flows(timeline):
    followed = follow(timeline)
    flowing = [s for s, _, newest, _ in followed.polls if newest is not None]
    gaps = [b - a for a, b in itertools.pairwise(flowing)]
    assert gaps and max(gaps) <= POLICY.progress_interval + 1e-9


def test_a_tail_after_the_last_token_is_followed_at_short_growing_intervals():
    timeline = every_token(10.0, 0.3)
    timeline.tail = 1.3  # encoding and upload
    followed = follow(timeline)
    after = [s for s in followed.sent if s >= timeline.tokens_end]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert gaps == sorted(gaps) and gaps[0] <= 0.02  # quick at first, then sparser
    assert len(after) <= 10
    late = followed.found_end - timeline.end
    assert 0 <= late <= max(gaps) + 0.003


def test_a_rate_that_changes_midway_is_recovered_from():
    """No steady rate explains every look once the model slows down: the oldest looks are
    forgotten and the end is still found soon after it happens."""
    for queue in QUEUES[::3]:
        timeline = every_token(20.0, queue)
        timeline.change = (600, timeline.per_token * 1.3)
        followed = follow(timeline)
        late = followed.found_end - timeline.end
        assert 0 <= late <= 0.030, (queue, late)


def test_an_infeasible_history_is_dropped_oldest_first_until_a_steady_rate_fits():
    schedule = PollSchedule(POLICY, started=0.0)
    progress = Progress(100, 1000)
    # Readings at 10 ms a token from t=1 s ...
    schedule.next_poll(1.9, 2.0, "processing", progress, 10)
    schedule.next_poll(2.9, 3.0, "processing", Progress(200, 1000), 10)
    # ... then the clock jumps back by 1.5 s (or the model sped up): reading 300 by t=2.2 s.
    at = schedule.next_poll(2.19, 2.2, "processing", Progress(300, 1000), 10)
    fit = schedule.fit
    assert fit is not None and fit.feasible
    assert 2.2 < at <= 2.19 + POLICY.progress_interval
    # The newest look holds in what is kept: reading 300 printed by 2.2 s, 310 not by 2.19 s.
    assert fit.when(300)[0] <= 2.2 + 1e-6
    assert fit.when(310)[1] > 2.19


def test_a_bracket_keeps_every_steady_rate_consistent_with_what_was_seen():
    """The polygon holds the truth: readings 20 tokens apart, 10 ms a token, from t=0.5."""
    truth_a, truth_b = 0.5, 0.01
    brackets = []
    for sent in (1.0, 1.37, 2.05, 2.61):
        newest = int((sent + 0.001 - truth_a) / truth_b) // 20 * 20
        brackets.append(Bracket(sent, sent + 0.002, newest))
    fit = Fit(brackets, floor=0.0, origin=1.0, total=400, step=20)
    end_lo, end_hi = fit.when(400)
    assert end_lo <= truth_a + truth_b * 400 <= end_hi
    for bracket in brackets:
        assert bracket.newest is not None
        assert fit.when(bracket.newest)[0] <= bracket.answered
        assert fit.when(bracket.newest + 20)[1] > bracket.sent


def test_aiming_can_be_turned_off_for_a_sparse_fallback():
    """A webhook tells the end: polling is then a fallback every `progress_interval`."""
    sparse = FollowPolicy(aim=False, progress_interval=10.0)
    followed = follow(bench_like(30.0, 0.45), policy=sparse)
    flowing = [s for s, _, newest, _ in followed.polls if newest is not None]
    gaps = [b - a for a, b in itertools.pairwise(flowing)]
    assert all(abs(gap - 10.0) < 1e-6 for gap in gaps)
