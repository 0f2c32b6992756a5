"""The Replicate HTTP client: predictions, files and outputs over httpx, with retries that never
start a run twice.

Errors are the typed ones of services.errors, carrying the API's own words. The API token lives
only inside an httpx.Auth object and is never part of a message, a repr or a log record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import logging
import mimetypes
import os
import ssl
import time
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from services.audio import DATA_URL_MAX_BYTES, MAX_UPLOAD_BYTES
from services.cost import cancel_after_header, cancel_after_seconds
from services.errors import (
    ApiError,
    AudioError,
    ConnectionFailed,
    CreateUnclear,
    InsufficientCredit,
    InvalidInput,
    NotFound,
    OutputExpired,
    RateLimited,
    ServerError,
    StudioError,
    Unauthenticated,
)
from services.events import TERMINAL_STATUSES, RunUpdate
from services.follow import FollowPolicy, StreamUnavailable, follow_run
from services.retry import (
    DOWNLOAD_RETRY,
    CreateCheck,
    NeverSent,
    RetryPolicy,
    Unanswered,
    refused_or_never_sent,
    retrying,
    server_wait,
    transient,
)
from services.retry import parse_retry_after as parse_retry_after
from services.settings import DEFAULT_BASE_URL, DEFAULT_VERSION
from services.sse import ServerSentEvent, SseParser, iter_sse

log = logging.getLogger(__name__)
T = TypeVar("T")

APP_VERSION = "0.1.0"
USER_AGENT = f"musicgen-studio/{APP_VERSION} (+httpx)"
# Short: a quick run still ends within the create, while a longer one shows its status and
# progress after a second instead of sitting silent for the whole wait.
DEFAULT_WAIT_SECONDS = 1


@dataclass(frozen=True)
class Timeouts:
    """Seconds; the read timeout of a create is its Prefer: wait plus `wait_margin`."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 60.0
    wait_margin: float = 15.0
    download: float = 120.0
    stream_idle: float = 60.0  # an SSE stream silent this long is reopened


UNSURE = (
    "It is not known whether the run started; check your predictions on replicate.com "
    "before trying again."
)


@dataclass(frozen=True)
class Created:
    """A run started by `ReplicateClient.start`. `unclear` holds the unclear answers met on
    the way (empty for a plain create): after any, the account may hold a stray run that a
    lagging listing hid, so the caller sweeps for orphans a little later."""

    prediction: dict[str, Any]
    unclear: tuple[str, ...] = field(default=())


def _nothing_created(exc: StudioError) -> StudioError:
    """The error for a create that kept failing while the listing showed nothing made."""
    message = f"{exc} The account's listing shows that no run was started; try again later."
    if isinstance(exc, ApiError):
        return type(exc)(message, status=exc.status, title=exc.title)
    return ConnectionFailed(message)


# Failures that happen before a single byte of the request is sent.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _BearerAuth(httpx.Auth):
    """Adds the token only for the API's own origin and Replicate's https hosts."""

    def __init__(self, token: str, api_origin: tuple[str, str, int | None]):
        self._token = token
        self._api_origin = api_origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = request.url
        trusted = _origin(url) == self._api_origin or (
            url.scheme == "https"
            and (url.host == "replicate.com" or url.host.endswith(".replicate.com"))
        )
        if trusted:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "<BearerAuth [redacted]>"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def parse_timestamp(value: str | None) -> datetime | None:
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
    invalid_fields: list[dict] | None = None
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


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServerError(
            f"The Replicate API answered {response.status_code} with a malformed body "
            "(not valid JSON).",
            status=response.status_code,
        ) from None


def _prediction(response: httpx.Response) -> dict[str, Any]:
    body = _json_body(response)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise ServerError(
            "The Replicate API answered with something that is not a prediction.",
            status=response.status_code,
        )
    return body


def decode_data_url(url: str) -> bytes:
    """The bytes of a `data:` URL (base64 or percent-encoded)."""
    header, sep, payload = url.partition(",")
    if not header.startswith("data:") or not sep:
        raise AudioError("The output is a malformed data: URL.")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise AudioError("The output is a data: URL with broken base64 content.") from exc
    return urllib.parse.unquote_to_bytes(payload)


class _Present:
    """Matches any non-empty value: for an input whose sent form is no longer known."""

    def __repr__(self) -> str:
        return "PRESENT"


PRESENT: Any = _Present()


# Fixed here because the platform's MIME table varies (Debian's media-types says audio/wav).
_AUDIO_TYPES = {".wav": "audio/x-wav", ".mp3": "audio/mpeg", ".flac": "audio/flac"}


def _guess_content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _AUDIO_TYPES:
        return _AUDIO_TYPES[suffix]
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def same_input(sent: dict[str, Any], seen: Any) -> bool:
    """Whether a listed prediction's input is the one we sent.

    The API may store an inline data: URL as a file of its own, so such a value (or PRESENT,
    for a clip whose upload URL was never recorded) only has to be present on the other side.
    """
    if not isinstance(seen, dict) or set(sent) != set(seen):
        return False
    for key, value in sent.items():
        if value is PRESENT or (isinstance(value, str) and value.startswith("data:")):
            if not seen[key]:
                return False
        elif seen[key] != value:
            return False
    return True


class ReplicateClient:
    """Talks to Replicate's HTTP API (or the project's emulator) for one token."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        version: str = DEFAULT_VERSION,
        wait_seconds: int = DEFAULT_WAIT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        follow_policy: FollowPolicy | None = None,
        clock_slack: float = 3.0,
        unknown_clock_slack: float = 60.0,
        find_pages: int = 3,
        create_check: CreateCheck | None = None,
        download_retry: RetryPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        deployment: str | None = None,
    ):
        """`ssl_context` lets many clients share one: building one costs ~20 ms of CPU.

        With `deployment` ("owner/name") runs are created on that deployment, which fixes the
        version itself, instead of on `version`.
        """
        if not token or not token.strip():
            raise Unauthenticated("No Replicate API token was given.", status=401)
        self.base_url = base_url.rstrip("/")
        self.version = version
        self.deployment = deployment
        self.wait_seconds = max(0, min(60, int(wait_seconds)))
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self.follow_policy = follow_policy or FollowPolicy()
        # A lost create is searched for from this long before it was sent (server time; the
        # Date header has whole seconds). Without a known clock offset, `unknown_clock_slack`.
        self.clock_slack = clock_slack
        self.unknown_clock_slack = unknown_clock_slack
        self.find_pages = find_pages
        self.create_check = create_check or CreateCheck()
        self.download_retry = download_retry or DOWNLOAD_RETRY
        api = httpx.URL(self.base_url)
        self._api_origin = _origin(api)
        self._known_ids: set[str] = set()  # runs this client already created or adopted
        self._clock_offset: float | None = None  # server clock minus ours, from Date headers
        t = self.timeouts
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=_BearerAuth(token.strip(), self._api_origin),
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(t.read, connect=t.connect, write=t.write, pool=t.connect),
            transport=transport,
            follow_redirects=True,
            verify=ssl_context if ssl_context is not None else True,
        )

    def __repr__(self) -> str:
        return f"ReplicateClient(base_url={self.base_url!r}, version={self.version!r})"

    async def __aenter__(self) -> ReplicateClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- requests -------------------------------------------------------------------------

    def _describe(self, method: str, url: str) -> str:
        parsed = httpx.URL(url)
        return f"{method} {parsed.path if parsed.is_relative_url else parsed.copy_with(query=None)}"

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One try of one request; raises the typed error of whatever went wrong."""
        try:
            response = await self._http.request(method, url, **kwargs)
        except _NEVER_SENT as exc:
            raise NeverSent(
                f"Could not connect to the Replicate API at {self.base_url} ({type(exc).__name__})."
            ) from exc
        except httpx.TransportError as exc:
            raise Unanswered(
                f"The connection to the Replicate API broke during "
                f"{self._describe(method, url)} ({type(exc).__name__}); no answer was received."
            ) from exc
        self._note_server_clock(response)
        if not response.is_success:
            raise error_from_response(response)
        return response

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """An idempotent request under the retry policy (services.retry)."""
        return await retrying(
            lambda: self._request(method, url, **kwargs),
            self.retry,
            what=self._describe(method, url),
        )

    async def _read(self, method: str, url: str, parse: Callable[[httpx.Response], Any]) -> Any:
        """A request whose answer must parse: a garbled answer is retried like a 5xx."""

        async def once() -> Any:
            return parse(await self._request(method, url))

        return await retrying(once, self.retry, what=self._describe(method, url))

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

    def _server_time(self, local: datetime) -> datetime:
        """The earliest server time a create sent at `local` can carry, allowing for skew."""
        if self._clock_offset is None:
            return local - timedelta(seconds=self.unknown_clock_slack)
        return local + timedelta(seconds=self._clock_offset - self.clock_slack)

    async def _get_json(self, url: str) -> Any:
        return await self._read("GET", url, _json_body)

    def _api_url(self, url: str) -> str:
        """An absolute or relative URL the API gave us, checked to stay on the API's origin."""
        joined = httpx.URL(self.base_url + "/").join(url)
        if _origin(joined) != self._api_origin:
            raise ApiError(f"The Replicate API pointed to another server ({joined.host}).")
        return str(joined)

    # ---- predictions ----------------------------------------------------------------------

    async def create(self, input: dict[str, Any], *, wait: int | None = None) -> dict[str, Any]:
        """Start a run (POST /v1/predictions), blocking up to `wait` seconds for it to end."""
        return (await self.start(input, wait=wait)).prediction

    async def start(self, input: dict[str, Any], *, wait: int | None = None) -> Created:
        """Start a run exactly once, whatever the network does; see `Created`.

        Safe to cancel: a create already on its way is awaited and the run it made canceled.
        """
        wait = self.wait_seconds if wait is None else max(0, min(60, int(wait)))
        since = datetime.now(UTC)
        task = asyncio.create_task(self._create(input, wait, since))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await self._undo_create(task, input, since, wait)
            raise

    async def _create(self, input: dict[str, Any], wait: int, since: datetime) -> Created:
        """Send the create; after an unclear answer, send it again only once the listing has
        shown, look after look, that nothing was created (and adopt the run if it was)."""
        unclear: list[str] = []
        for attempt in range(self.create_check.retries + 1):
            try:
                prediction = await self._post_create(input, wait)
            except (Unanswered, ServerError) as exc:
                unclear.append(str(exc))
                found = await self._settle_unclear(input, since, exc)
                if found is None and attempt < self.create_check.retries:
                    log.warning("create got no clear answer (%s) and made no run: sent again", exc)
                    continue
                if found is None:
                    raise _nothing_created(exc) from exc
                log.warning("create got no clear answer (%s); adopted run %s", exc, found["id"])
                prediction = found
            self._known_ids.add(prediction["id"])
            return Created(prediction, tuple(unclear))
        raise AssertionError("unreachable")

    async def _post_create(self, input: dict[str, Any], wait: int) -> dict[str, Any]:
        """One create, repeated only while it provably never arrived (or met a 429)."""
        duration = input.get("duration", 8)
        headers = {
            "Cancel-After": cancel_after_header(
                cancel_after_seconds(duration if isinstance(duration, int | float) else 8)
            )
        }
        if wait > 0:
            headers["Prefer"] = f"wait={wait}"
        t = self.timeouts
        timeout = httpx.Timeout(
            wait + t.wait_margin, connect=t.connect, write=t.write, pool=t.connect
        )
        if self.deployment:
            path = f"/v1/deployments/{self.deployment}/predictions"
            body: dict[str, Any] = {"input": input}
        else:
            path, body = "/v1/predictions", {"version": self.version, "input": input}
        response = await retrying(
            lambda: self._request("POST", path, json=body, headers=headers, timeout=timeout),
            self.retry,
            what=f"POST {path}",
            retry_on=refused_or_never_sent,
        )
        return _prediction(response)

    async def _settle_unclear(
        self, input: dict[str, Any], since: datetime, exc: StudioError
    ) -> dict[str, Any] | None:
        """The run an unclear create made, or None once the listing repeatedly shows none."""
        try:
            return await self.look_for_created(input, since)
        except StudioError as lookup:
            raise CreateUnclear(f"{exc} {UNSURE} (Looking it up failed too: {lookup})") from exc

    async def look_for_created(
        self, input: dict[str, Any], since: datetime
    ) -> dict[str, Any] | None:
        """`find_created`, looked at `create_check.listings` times: the listing may lag."""
        check = self.create_check
        for look in range(check.listings):
            found = await self.find_created(input, since)
            if found is not None or look == check.listings - 1:
                return found
            await asyncio.sleep(check.interval)
        return None

    async def _undo_create(
        self, task: asyncio.Task[Created], input: dict[str, Any], since: datetime, wait: int
    ) -> None:
        """After the caller gave up on a create: find the run it made and cancel it.

        The blocking answer may take `wait` seconds, so the run is also looked for in the list
        meanwhile; canceling it there ends the server's wait at once.
        """
        give_up = time.monotonic() + wait + self.timeouts.wait_margin
        canceled: set[str] = set()
        pause = 0.2
        try:
            while not task.done() and time.monotonic() < give_up:
                found = await self.find_created(input, since)
                if found is not None:
                    await self._cancel_quietly(found, canceled)
                    break
                await asyncio.wait({task}, timeout=min(pause, max(0.0, give_up - time.monotonic())))
                pause = min(2.0, pause * 1.5)
            await asyncio.wait({task}, timeout=max(0.0, give_up - time.monotonic()))
            if not task.done():
                task.cancel()
                found = await self.find_created(input, since)
                if found is not None:
                    await self._cancel_quietly(found, canceled)
            elif not task.cancelled() and task.exception() is None:
                await self._cancel_quietly(task.result().prediction, canceled)
            # else the create failed (and already looked for its run): nothing to cancel
        except StudioError as exc:
            log.warning("could not cancel the run of an abandoned create: %s", exc)
        finally:
            if not task.done():
                task.cancel()

    async def _cancel_quietly(self, prediction: dict[str, Any], done: set[str]) -> None:
        pid = prediction["id"]
        if pid in done or prediction.get("status") in TERMINAL_STATUSES:
            return
        done.add(pid)
        await self.cancel(pid)
        log.info("canceled run %s: its create was abandoned", pid)

    async def get(self, prediction_id: str) -> dict[str, Any]:
        """The prediction as it is now (GET /v1/predictions/{id})."""
        return await self._read("GET", f"/v1/predictions/{_quote(prediction_id)}", _prediction)

    async def cancel(self, prediction_id: str) -> dict[str, Any]:
        """Ask the API to cancel a run; canceling twice is harmless, so this is retried."""
        path = f"/v1/predictions/{_quote(prediction_id)}/cancel"
        return await self._read("POST", path, _prediction)

    async def list_predictions(self) -> AsyncIterator[dict[str, Any]]:
        """Every prediction of the account, newest first, page after page."""
        url: str | None = "/v1/predictions"
        seen: set[str] = set()
        while url and url not in seen:
            seen.add(url)
            page = await self._get_json(url)
            if not isinstance(page, dict):
                raise ServerError("The Replicate API answered the list with something unexpected.")
            for item in page.get("results") or []:
                if isinstance(item, dict):
                    yield item
            nxt = page.get("next")
            url = self._api_url(nxt) if isinstance(nxt, str) and nxt else None

    async def find_created(self, input: dict[str, Any], since: datetime) -> dict[str, Any] | None:
        """The run this client made with `input` at or after `since` (local time), if listed."""
        url = "/v1/predictions"
        for _ in range(self.find_pages):
            page = await self._get_json(url)
            cutoff = self._server_time(since)
            results = page.get("results") if isinstance(page, dict) else None
            if not isinstance(results, list):
                return None
            for item in results:
                if not isinstance(item, dict):
                    continue
                created = parse_timestamp(item.get("created_at"))
                if created is not None and created < cutoff:
                    return None  # newest first: everything further is older still
                if (
                    item.get("id") not in self._known_ids
                    and self._ours(item)
                    and same_input(input, item.get("input"))
                ):
                    self._known_ids.add(item["id"])
                    return item
            nxt = page.get("next")
            if not isinstance(nxt, str) or not nxt:
                return None
            url = self._api_url(nxt)
        return None

    async def predictions_since(self, since: datetime) -> list[dict[str, Any]]:
        """The account's predictions created at or after `since` (local time), newest first."""
        cutoff = self._server_time(since)
        found: list[dict[str, Any]] = []
        async for item in self.list_predictions():
            created = parse_timestamp(item.get("created_at"))
            if created is not None and created < cutoff:
                break  # newest first: everything further is older still
            found.append(item)
        return found

    def ours(self, prediction: dict[str, Any]) -> bool:
        """Made by what this client creates on: its deployment, else its version."""
        return self._ours(prediction)

    def _ours(self, prediction: dict[str, Any]) -> bool:
        """Made by what this client creates on: its deployment, else its version."""
        if self.deployment:
            return prediction.get("deployment") in (None, self.deployment)
        return prediction.get("version") == self.version

    def follow(
        self, prediction: dict[str, Any], *, started: float | None = None
    ) -> AsyncIterator[RunUpdate]:
        """Updates for every change of the run until it ends; the last one is terminal."""
        return follow_run(
            self,
            prediction,
            started=time.monotonic() if started is None else started,
            policy=self.follow_policy,
        )

    async def stream_events(
        self, url: str, *, last_event_id: str | None = None
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """The server-sent events of a run's `urls.stream`; StreamUnavailable if it won't open."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        t = self.timeouts
        timeout = httpx.Timeout(t.stream_idle, connect=t.connect, write=t.write, pool=t.connect)
        try:
            async with self._http.stream("GET", url, headers=headers, timeout=timeout) as response:
                kind = response.headers.get("content-type", "")
                if response.status_code != 200 or not kind.startswith("text/event-stream"):
                    raise StreamUnavailable(
                        f"the stream answered {response.status_code} {kind or 'without a type'}"
                    )
                async for event in iter_sse(response.aiter_lines(), SseParser()):
                    yield event
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"The run's event stream broke ({type(exc).__name__}).") from exc

    # ---- files ----------------------------------------------------------------------------

    async def upload(self, path: Path, content_type: str | None = None) -> str:
        """A URI the model can read `path` from: a data: URL when small, else the files API."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise AudioError(f"input_audio: the file {path.name} cannot be read.") from exc
        if size > MAX_UPLOAD_BYTES:
            raise AudioError(
                f"input_audio: {path.name} is {size / 2**20:.0f} MB; Replicate accepts files up "
                "to 100 MB. Use a shorter clip or a compressed format (mp3, ogg)."
            )
        ctype = content_type or _guess_content_type(path)
        data = await asyncio.to_thread(path.read_bytes)
        if size <= DATA_URL_MAX_BYTES:
            return f"data:{ctype};base64,{base64.b64encode(data).decode('ascii')}"
        t = self.timeouts
        # An upload retried after a lost answer only leaves an orphan file behind: harmless.
        response = await self._send(
            "POST",
            "/v1/files",
            files={"content": (path.name, data, ctype)},
            timeout=httpx.Timeout(t.download, connect=t.connect, write=t.download, pool=t.connect),
        )
        body = _json_body(response)
        url = (body.get("urls") or {}).get("get") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise ServerError("The Replicate files API answered without the file's URL.")
        return url

    async def download(self, url: str, dest: Path) -> Path:
        """Fetch an output (https or data: URL) to `dest`, atomically; OutputExpired if gone."""
        await self.download_checked(url, Path(dest), _unchecked)
        return Path(dest)

    async def download_checked(self, url: str, dest: Path, check: Callable[[Path], T]) -> T:
        """Fetch an output to `dest` and return `check(file)`.

        `check` (blocking, run in a thread) raises AudioError for a file that will not do:
        garbage, or cut short. Such a file, a broken transfer, a 5xx or a 429 are fetched
        again under `download_retry` while the URL lives; only a good file ever replaces
        `dest`. An expired URL (404/410) raises OutputExpired at once.
        """
        dest = Path(dest)
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        return await retrying(
            lambda: self._fetch_checked(url, dest, check),
            self.download_retry,
            what="download of the run's output",
            retry_on=lambda failure: transient(failure) or isinstance(failure, AudioError),
        )

    async def _fetch_checked(self, url: str, dest: Path, check: Callable[[Path], T]) -> T:
        data = await self._fetch_output(url)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            await asyncio.to_thread(part.write_bytes, data)
            result = await asyncio.to_thread(check, part)
            await asyncio.to_thread(os.replace, part, dest)
        finally:
            part.unlink(missing_ok=True)
        return result

    async def _fetch_output(self, url: str) -> bytes:
        """The bytes of an output, in one try."""
        if url.startswith("data:"):
            return decode_data_url(url)
        scheme = httpx.URL(url).scheme
        if scheme not in ("http", "https"):
            raise ApiError(f"The run's output has an address this app cannot fetch ({scheme}).")
        t = self.timeouts
        timeout = httpx.Timeout(t.download, connect=t.connect, write=t.write, pool=t.connect)
        try:
            response = await self._request("GET", url, timeout=timeout)
        except NotFound as exc:
            raise OutputExpired(
                "The run's output is no longer available: Replicate deletes outputs of API "
                "runs after about an hour."
            ) from exc
        except ApiError as exc:
            if exc.status == 410:
                raise OutputExpired(
                    "The run's output is no longer available (the server says it is gone)."
                ) from exc
            raise
        return response.content


def _unchecked(path: Path) -> None:
    return None


def _quote(prediction_id: str) -> str:
    return urllib.parse.quote(prediction_id, safe="")
