"""The one retry policy of the Replicate client: what is retried, how often, and how long to wait.

Every request the studio makes to Replicate goes through `retrying` with a `RetryPolicy`:
- reads (GET, list), cancels and file uploads are retried on connection errors, 429 and 5xx
  (and on an answer that is not the JSON asked for), with capped, jittered exponential backoff;
- a 429 waits what the server says: `Retry-After`, else `ratelimit-reset`, else the backoff;
  a server asking for longer than `max_retry_after` is reported instead of waited out;
- a create is retried by `retrying` only when the request provably never left (a refused
  connection) or was refused with 429. Any unclear answer (5xx, a dropped connection, a timeout,
  a malformed body) goes to the client's create check instead, which retries only once the
  account's listing has shown, over `CreateCheck.listings` looks, that nothing was created;
- an output download is fetched again a few times at once (`DOWNLOAD_RETRY`), then, while its
  URL lives, again and again with a longer backoff (`DOWNLOAD_PATIENCE`); an expired URL is final.
The run follower's own patience (polls in a row that failed after these retries, stream
reconnects) is about a run that may last 30 minutes, and is set in `FollowPolicy`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from services.errors import ApiError, ConnectionFailed, RateLimited, ServerError, StudioError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one request is retried."""

    attempts: int = 5  # tries in all, the first included
    base_delay: float = 0.5
    max_delay: float = 8.0
    # A server asking for a longer pause than this is reported rather than waited out.
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Capped exponential delay after failed try number `attempt` (1-based), with jitter."""
        delay = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return float(delay * random.uniform(0.5, 1))


# Downloads: a bad or cut-off file is fetched again a few times, a little more patiently.
DOWNLOAD_RETRY = RetryPolicy(attempts=4, base_delay=1.0, max_delay=8.0)
# Then, while the output's URL lives (about an hour), one try after each of these pauses: a paid
# take is never given up while it can still be had. (`attempts` is unused: the URL's life counts.)
DOWNLOAD_PATIENCE = RetryPolicy(attempts=1, base_delay=5.0, max_delay=120.0)


@dataclass(frozen=True)
class CreateCheck:
    """How an unclear create is settled: `listings` looks at the account's listing,
    `interval` seconds apart (the listing may lag behind a create), before concluding that
    nothing was created; then the create is sent again, at most `retries` times."""

    listings: int = 3
    interval: float = 1.0
    retries: int = 2


class NeverSent(ConnectionFailed):
    """The request failed before a byte left (refused connection): safe to send again."""


class Unanswered(ConnectionFailed):
    """The request may have reached the server, but no answer came back."""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def parse_ratelimit_reset(value: str | None) -> float | None:
    """Seconds until the rate limit resets, from `ratelimit-reset` (seconds; or an epoch time)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds > 1e9:  # an absolute epoch time rather than a delay
        seconds -= datetime.now(UTC).timestamp()
    return max(0.0, seconds)


def server_wait(status: int, headers: Mapping[str, str]) -> float | None:
    """How long the server asked us to wait: Retry-After, else (429) ratelimit-reset."""
    wait = parse_retry_after(headers.get("retry-after"))
    if wait is None and status == 429:
        wait = parse_ratelimit_reset(headers.get("ratelimit-reset"))
    return wait


# Failures worth another try of an idempotent request (the follower's polls use them too).
TRANSIENT_ERRORS = (ConnectionFailed, RateLimited, ServerError)


def transient(failure: StudioError) -> bool:
    """A failure worth another try of an idempotent request."""
    return isinstance(failure, TRANSIENT_ERRORS)


def refused_or_never_sent(failure: StudioError) -> bool:
    """A create failure that provably created nothing: retried like any read."""
    return isinstance(failure, NeverSent | RateLimited)


def _wait_of(failure: StudioError) -> float | None:
    return failure.retry_after if isinstance(failure, ApiError) else None


async def retrying(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    retry_on: Callable[[StudioError], bool] = transient,
) -> T:
    """`call()` until it succeeds, a failure is not for `retry_on`, or the tries run out."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except StudioError as failure:
            wait = _wait_of(failure)
            final = attempt == policy.attempts or not retry_on(failure)
            if final or (wait is not None and wait > policy.max_retry_after):
                raise
            delay = wait if wait is not None else policy.backoff(attempt)
            log.warning(
                "%s failed (%s); retrying in %.2f s (try %d of %d)",
                what,
                failure,
                delay,
                attempt + 1,
                policy.attempts,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
