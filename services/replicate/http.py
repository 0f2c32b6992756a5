"""HTTP to the Replicate API: one connection pool per process, one token per account, typed errors.

`HttpPool` is the process's one `httpx.AsyncClient` (connections reused by every run of every
visitor, closed on shutdown). `Api` is one account's view of it: the token rides on each request
as an `httpx.Auth` that never shows it, and every request goes through the one retry policy
(`services.replicate.retry`). Nothing here knows which model runs.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import itertools
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx

from services.errors import (
    ApiError,
    InsufficientCredit,
    InvalidInput,
    NotFound,
    RateLimited,
    ServerError,
    Unauthenticated,
)
from services.replicate.budget import STEADY, BudgetPolicy, Lane, ReadBudget
from services.replicate.retry import NeverSent, RetryPolicy, Unanswered, retrying, server_wait

T = TypeVar("T")

APP_VERSION = "0.1.0"
USER_AGENT = f"musicgen-studio/{APP_VERSION} (+httpx)"
DEFAULT_BASE_URL = "https://api.replicate.com"

# Failures that happen before a single byte of the request is sent.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Timeouts:
    """Seconds; the read timeout of a create is its Prefer: wait plus `wait_margin`."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 60.0
    wait_margin: float = 15.0
    download: float = 120.0
    stream_idle: float = 60.0  # an SSE stream silent this long is reopened

    def with_read(self, read: float, *, write: float | None = None) -> httpx.Timeout:
        """An httpx timeout with this read (and write) time and the usual connect time."""
        return httpx.Timeout(
            read,
            connect=self.connect,
            write=self.write if write is None else write,
            pool=self.connect,
        )


Origin = tuple[str, str, int | None]


def origin(url: httpx.URL) -> Origin:
    return (url.scheme, url.host, url.port)


class BearerAuth(httpx.Auth):
    """Adds the token only for the API's own origin and Replicate's https hosts."""

    def __init__(self, token: str, api_origin: Origin):
        self._token = token
        self._api_origin = api_origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = request.url
        trusted = origin(url) == self._api_origin or (
            url.scheme == "https"
            and (url.host == "replicate.com" or url.host.endswith(".replicate.com"))
        )
        if trusted:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "<BearerAuth [redacted]>"


def parse_timestamp(value: object) -> datetime | None:
    """An API timestamp (ends in Z, 0 to 9 fractional digits) as an aware datetime."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # datetime takes at most 6 fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}" if digits else head + rest
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthenticated,
    402: InsufficientCredit,
    404: NotFound,
    422: InvalidInput,
    429: RateLimited,
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for an error answer, with the API's own `detail` when it gave one."""
    status = response.status_code
    title: str | None = None
    invalid_fields: list[dict[str, Any]] | None = None
    detail: str | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        title = body.get("title") if isinstance(body.get("title"), str) else None
        raw = body.get("detail")
        detail = raw if isinstance(raw, str) else (str(raw) if raw else None)
        fields = body.get("invalid_fields")
        if isinstance(fields, list):
            invalid_fields = [f for f in fields if isinstance(f, dict)]
        detail = detail or title
    elif body is None:
        text = response.text.strip()
        plain = response.headers.get("content-type", "").startswith("text/plain")
        if plain and text and len(text) <= 300:
            detail = text
        elif text:
            detail = f"The Replicate API answered {status} with a body that is not valid JSON."
    if not detail:
        reason = response.reason_phrase or "error"
        detail = f"The Replicate API answered {status} {reason}."
    cls = _ERRORS_BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(
        detail.strip(),
        status=status,
        title=title,
        invalid_fields=invalid_fields,
        retry_after=server_wait(status, response.headers),
    )


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServerError(
            f"The Replicate API answered {response.status_code} with a malformed body "
            "(not valid JSON).",
            status=response.status_code,
        ) from None


class HttpPool:
    """The process's one HTTP client: connections kept alive and shared by every account.

    Internally `shards` httpx clients take the requests in turn: httpcore finds a connection for
    each request by scanning every connection of its pool for every waiting request, which with
    100 runs in flight on one pool cost more CPU than the runs themselves (the concurrency
    benchmark: 66 ms of CPU per run on one pool, against 25 on several). Each shard keeps its
    connections alive for the requests that follow.

    An httpx client belongs to the event loop it first ran in; the app has one loop, so it has
    one set. A caller on another loop (a test's own loop, a thread's `asyncio.run`) gets clients
    of its own for that loop rather than broken shared ones.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 200,
        shards: int = 16,
        budget: BudgetPolicy | None = None,
    ):
        self.timeouts = timeouts or Timeouts()
        # Each account's reads share one budget in this process (see services.replicate.budget).
        self.budget_policy = budget or BudgetPolicy()
        self._budgets: dict[tuple[asyncio.AbstractEventLoop, str], ReadBudget] = {}
        self._transport = transport
        # A given transport is one pool already: sharding it would change nothing.
        self._shards = 1 if transport is not None else max(1, shards)
        per_shard = max(1, max_connections // self._shards)
        self._limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        # One SSL context for every connection: building one costs ~20 ms of CPU.
        self._ssl = httpx.create_ssl_context()
        self._clients: dict[asyncio.AbstractEventLoop, list[httpx.AsyncClient]] = {}
        self._turn = itertools.count()

    def client(self) -> httpx.AsyncClient:
        """A client of the running event loop (the shards take turns), made on first use."""
        loop = asyncio.get_running_loop()
        for other in [other for other in self._clients if other.is_closed()]:
            del self._clients[other]
        shards = self._clients.get(loop)
        if shards is None or shards[0].is_closed:
            shards = self._clients[loop] = [self._new_client() for _ in range(self._shards)]
        return shards[next(self._turn) % len(shards)]

    def budget(self, account: str) -> ReadBudget:
        """The read budget of `account` (see Api.account) on the running event loop."""
        key = (asyncio.get_running_loop(), account)
        found = self._budgets.get(key)
        if found is None:
            # Budgets that are full with nobody waiting are as good as new: forget them, so a
            # deployment where every visitor brings a token keeps only the busy ones.
            for other in [k for k, b in self._budgets.items() if b.idle or k[0].is_closed()]:
                del self._budgets[other]
            found = self._budgets[key] = ReadBudget(self.budget_policy)
        return found

    def _new_client(self) -> httpx.AsyncClient:
        t = self.timeouts
        return httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT},
            timeout=t.with_read(t.read),
            transport=self._transport,
            follow_redirects=True,
            verify=self._ssl,
            limits=self._limits,
        )

    async def aclose(self) -> None:
        """Close the running loop's clients (the others' loops are gone or will close them)."""
        loop = asyncio.get_running_loop()
        for client in self._clients.pop(loop, []):
            await client.aclose()


class Api:
    """One account on one API origin: requests with its token, retried under one policy."""

    def __init__(
        self,
        token: str,
        *,
        pool: HttpPool,
        base_url: str = DEFAULT_BASE_URL,
        retry: RetryPolicy | None = None,
        clock_slack: float = 3.0,
        unknown_clock_slack: float = 60.0,
    ):
        if not token or not token.strip():
            raise Unauthenticated("No Replicate API token was given.", status=401)
        self.base_url = base_url.rstrip("/")
        self.pool = pool
        self.timeouts = pool.timeouts
        self.retry = retry or RetryPolicy()
        # A lost create is searched for from this long before it was sent (server time; the
        # Date header has whole seconds). Without a known clock offset, `unknown_clock_slack`.
        self.clock_slack = clock_slack
        self.unknown_clock_slack = unknown_clock_slack
        self.origin = origin(httpx.URL(self.base_url))
        self._auth = BearerAuth(token.strip(), self.origin)
        # Names the account (for per-account caches) without holding or revealing its token.
        self.account = hashlib.sha256(f"{self.base_url}\n{token.strip()}".encode()).hexdigest()
        self._clock_offset: float | None = None  # server clock minus ours, from Date headers

    def __repr__(self) -> str:
        return f"Api(base_url={self.base_url!r})"

    def url(self, url: str) -> str:
        """An API path or URL made absolute on the API's origin."""
        return str(httpx.URL(self.base_url + "/").join(url))

    def describe(self, method: str, url: str) -> str:
        parsed = httpx.URL(url)
        return f"{method} {parsed.path if parsed.is_relative_url else parsed.copy_with(query=None)}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        lane: Lane | None = STEADY,
        due: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One try of one request; raises the typed error of whatever went wrong.

        A request to the API (/v1/) first waits for the account's read budget, in `lane`
        (None: not counted, as for a create), ranked by when it was `due` (monotonic).
        """
        if lane is not None and self._counted(url):
            await self.pool.budget(self.account).take(lane, due)
        try:
            response = await self.pool.client().request(
                method, self.url(url), auth=self._auth, **kwargs
            )
        except _NEVER_SENT as exc:
            raise NeverSent(
                f"Could not connect to the Replicate API at {self.base_url} ({type(exc).__name__})."
            ) from exc
        except httpx.TransportError as exc:
            raise Unanswered(
                f"The connection to the Replicate API broke during "
                f"{self.describe(method, url)} ({type(exc).__name__}); no answer was received."
            ) from exc
        self._note_server_clock(response)
        if not response.is_success:
            raise error_from_response(response)
        return response

    def _counted(self, url: str) -> bool:
        """Whether Replicate counts this request against the token's reads: the API's own."""
        joined = httpx.URL(self.base_url + "/").join(url)
        return origin(joined) == self.origin and joined.path.startswith("/v1/")

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """An idempotent request under the retry policy."""
        return await retrying(
            lambda: self.request(method, url, **kwargs), self.retry, what=self.describe(method, url)
        )

    async def read(
        self,
        method: str,
        url: str,
        parse: Callable[[httpx.Response], T],
        *,
        lane: Lane = STEADY,
        due: float | None = None,
    ) -> T:
        """A request whose answer must parse: a garbled answer is retried like a 5xx."""

        async def once() -> T:
            return parse(await self.request(method, url, lane=lane, due=due))

        return await retrying(once, self.retry, what=self.describe(method, url))

    async def get_json(self, url: str) -> Any:
        return await self.read("GET", url, json_body)

    def stream(self, method: str, url: str, **kwargs: Any) -> Any:
        """An open streaming request (an async context manager), with the token."""
        return self.pool.client().stream(method, self.url(url), auth=self._auth, **kwargs)

    def same_origin(self, url: str) -> str:
        """An absolute or relative URL the API gave us, checked to stay on the API's origin."""
        joined = httpx.URL(self.base_url + "/").join(url)
        if origin(joined) != self.origin:
            raise ApiError(f"The Replicate API pointed to another server ({joined.host}).")
        return str(joined)

    def _note_server_clock(self, response: httpx.Response) -> None:
        """Learn how far the server's clock is from ours, from the Date header."""
        date = response.headers.get("date")
        if not date:
            return
        try:
            server = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return
        if server.tzinfo is None:
            server = server.replace(tzinfo=UTC)
        self._clock_offset = (server - datetime.now(UTC)).total_seconds()

    def server_time(self, local: datetime) -> datetime:
        """The earliest server time a request sent at `local` can carry, allowing for skew."""
        if self._clock_offset is None:
            return local - timedelta(seconds=self.unknown_clock_slack)
        return local + timedelta(seconds=self._clock_offset - self.clock_slack)
