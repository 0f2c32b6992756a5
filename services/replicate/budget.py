"""One budget of API reads per token, shared by every run that follows under it.

Replicate allows each token 3,000 reads a minute (polls, listings, cancels, uploads; creates
have their own 600). A hundred runs polled at the follower's cadence would pass that, so every
request to the API under one token first takes a token from that account's bucket: at most
`per_minute` in any minute (a bucket of `burst`, refilled at (per_minute - burst) / 60 a
second). When the bucket is empty, requests wait in order of their lane, then of when they were
due: a poll aimed at a run's predicted end (URGENT) goes before a poll that only refreshes
progress (STEADY); polls kept as a webhook's fallback (FALLBACK) also share a smaller bucket of
their own (`fallback_share` of the budget), since the webhook brings the news anyway. Each
follower has at most one request waiting, so as runs grow their polls' cadence stretches by
itself, and the studio never draws a 429 on itself.

Creates are not counted here (their own limit, and a click must never wait on polls);
downloads of outputs go to other hosts and are not counted by Replicate either.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

URGENT = 0  # a poll aimed at a predicted end, a cancel: served first
STEADY = 1  # a poll while progress flows, a listing, an upload
FALLBACK = 2  # a poll kept as a webhook's fallback: also held to the fallback's share

Lane = int


@dataclass(frozen=True)
class BudgetPolicy:
    """At most `per_minute` reads in any minute per token; `burst` of them at once; polls kept
    as a webhook's fallback at most `fallback_share` of the budget."""

    per_minute: int = 2400
    burst: int = 40
    fallback_share: float = 1 / 3


class TokenBucket:
    """`capacity` tokens, refilled at `rate` a second; waiters served by rank, lowest first."""

    def __init__(
        self, rate: float, capacity: float, *, clock: Callable[[], float] = time.monotonic
    ):
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()
        self._waiters: list[tuple[tuple[int, float], int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._waiters if not fut.done())

    @property
    def idle(self) -> bool:
        """Full and nobody waiting: the same as a new bucket."""
        self._refill()
        return not self._waiters and self._tokens >= self.capacity

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def take(self, rank: tuple[int, float]) -> None:
        """Wait for a token; among waiters, the lowest `rank` (lane, due time) goes first."""
        self._refill()
        if not self._waiters and self._tokens >= 1:
            self._tokens -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rank, next(self._order), fut))
        self._arm()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._tokens += 1  # granted as the waiter left: give it back
            self._arm()
            raise

    def _arm(self) -> None:
        """Wake the waiters when the next token is there."""
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        if not self._waiters or self._timer is not None:
            return
        self._refill()
        delay = max(0.0, (1 - self._tokens) / self.rate)
        self._timer = asyncio.get_running_loop().call_later(delay, self._release)

    def _release(self) -> None:
        self._timer = None
        self._refill()
        while self._waiters and self._tokens >= 1:
            *_, fut = heapq.heappop(self._waiters)
            if fut.done():
                continue
            self._tokens -= 1
            fut.set_result(None)
        self._arm()


class ReadBudget:
    """One token's reads: the whole budget, and the fallback polls' share of it."""

    def __init__(
        self, policy: BudgetPolicy | None = None, *, clock: Callable[[], float] = time.monotonic
    ):
        self.policy = p = policy or BudgetPolicy()
        burst = min(p.burst, max(1, p.per_minute // 60))
        self.all = TokenBucket((p.per_minute - burst) / 60.0, burst, clock=clock)
        share = p.per_minute * p.fallback_share
        small = max(1.0, burst * p.fallback_share)
        self.fallback = TokenBucket((share - small) / 60.0, small, clock=clock)
        self._clock = clock

    @property
    def idle(self) -> bool:
        return self.all.idle and self.fallback.idle

    async def take(self, lane: Lane = STEADY, due: float | None = None) -> None:
        """Wait until this read fits the budget; `due`: when it was meant to go (monotonic)."""
        rank = (lane, self._clock() if due is None else due)
        if lane == FALLBACK:
            await self.fallback.take(rank)
        await self.all.take(rank)
