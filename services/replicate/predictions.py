"""Predictions: create (exactly once, whatever the network does), get, cancel, list, find.

Nothing here knows the model: the caller gives the input, the version or deployment, and how
long Replicate may let the run go on (`Cancel-After`).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack, cast

import httpx

from services.errors import (
    ApiError,
    ConnectionFailed,
    CreateUnclear,
    ServerError,
    StudioError,
)
from services.events import TERMINAL_STATUSES
from services.replicate.budget import STEADY, URGENT, Lane
from services.replicate.http import Api, json_body, parse_timestamp
from services.replicate.retry import CreateCheck, Unanswered, refused_or_never_sent, retrying
from services.replicate.stream import ServerSentEvent, stream_events

log = logging.getLogger(__name__)

# Short: a quick run still ends within the create, while a longer one shows its status and
# progress after a second instead of sitting silent for the whole wait.
DEFAULT_WAIT_SECONDS = 1
CANCEL_AFTER_MIN_S = 5  # the API refuses a shorter Cancel-After

UNSURE = (
    "It is not known whether the run started; check your predictions on replicate.com "
    "before trying again."
)


class PredictionUrls(TypedDict, total=False):
    get: str
    cancel: str
    stream: str
    web: str


class Prediction(TypedDict, total=False):
    """A prediction as the API returns it (GET /v1/predictions/{id})."""

    id: str
    model: str
    version: str
    deployment: str | None
    status: str
    input: dict[str, Any]
    output: Any
    logs: str | None
    error: Any
    metrics: dict[str, Any]
    urls: PredictionUrls
    created_at: str
    started_at: str | None
    completed_at: str | None
    source: str
    webhook: str | None
    data_removed: bool


@dataclass(frozen=True)
class Created:
    """A run started by `Predictions.start`. `unclear` holds the unclear answers met on the way
    (empty for a plain create): after any, the account may hold a stray run that a lagging
    listing hid, so the caller sweeps for orphans a little later."""

    prediction: Prediction
    unclear: tuple[str, ...] = field(default=())


class _Present:
    """Matches any non-empty value: for an input whose sent form is no longer known."""

    def __repr__(self) -> str:
        return "PRESENT"


PRESENT: Any = _Present()


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


def prediction_body(response: httpx.Response) -> Prediction:
    body = json_body(response)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise ServerError(
            "The Replicate API answered with something that is not a prediction.",
            status=response.status_code,
        )
    return cast(Prediction, body)


def cancel_after_header(seconds: float) -> str:
    """`Cancel-After`'s value for `seconds`, in the API's form: 45s, 15m, 1h30m20s."""
    hours, rest = divmod(max(CANCEL_AFTER_MIN_S, round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


class StartOptions(TypedDict, total=False):
    """How `Predictions.start` creates a run (its keyword arguments)."""

    wait: int | None
    cancel_after: float | None
    webhook: str | None
    webhook_events: tuple[str, ...]


def _nothing_created(exc: StudioError) -> StudioError:
    """The error for a create that kept failing while the listing showed nothing made."""
    message = f"{exc} The account's listing shows that no run was started; try again later."
    if isinstance(exc, ApiError):
        return type(exc)(message, status=exc.status, title=exc.title)
    return ConnectionFailed(message)


def _quote(prediction_id: str) -> str:
    return urllib.parse.quote(prediction_id, safe="")


class Predictions:
    """The predictions of one account, made on one version or one deployment."""

    def __init__(
        self,
        api: Api,
        *,
        version: str | None = None,
        deployment: str | None = None,
        wait_seconds: int = DEFAULT_WAIT_SECONDS,
        create_check: CreateCheck | None = None,
        find_pages: int = 3,
    ):
        if not version and not deployment:
            raise ValueError("Predictions need a model version or a deployment to run on.")
        self.api = api
        self.version = version
        self.deployment = deployment
        self.wait_seconds = max(0, min(60, int(wait_seconds)))
        self.create_check = create_check or CreateCheck()
        self.find_pages = find_pages
        self._known_ids: set[str] = set()  # runs already created or adopted here

    async def create(self, input: dict[str, Any], **options: Unpack[StartOptions]) -> Prediction:
        """Start a run (POST), blocking up to `wait` seconds for it to end (see `start`)."""
        return (await self.start(input, **options)).prediction

    async def start(
        self,
        input: dict[str, Any],
        *,
        wait: int | None = None,
        cancel_after: float | None = None,
        webhook: str | None = None,
        webhook_events: tuple[str, ...] = ("completed",),
    ) -> Created:
        """Start a run exactly once, whatever the network does; see `Created`.

        `cancel_after` (seconds) has Replicate stop the run by itself if nobody does: a run
        this app lost track of still ends. Safe to cancel: a create already on its way is
        awaited and the run it made canceled.
        """
        wait = self.wait_seconds if wait is None else max(0, min(60, int(wait)))
        since = datetime.now(UTC)
        headers = {"Cancel-After": cancel_after_header(cancel_after)} if cancel_after else {}
        if wait > 0:
            headers["Prefer"] = f"wait={wait}"
        body: dict[str, Any] = {"input": input}
        if not self.deployment:
            body["version"] = self.version
        if webhook:
            body["webhook"] = webhook
            body["webhook_events_filter"] = list(webhook_events)
        task = asyncio.create_task(self._create(body, headers, wait, since))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await self._undo_create(task, input, since, wait)
            raise

    async def _create(
        self, body: dict[str, Any], headers: dict[str, str], wait: int, since: datetime
    ) -> Created:
        """Send the create; after an unclear answer, send it again only once the listing has
        shown, look after look, that nothing was created (and adopt the run if it was)."""
        unclear: list[str] = []
        input = body["input"]
        for attempt in range(self.create_check.retries + 1):
            try:
                prediction = await self._post_create(body, headers, wait)
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

    async def _post_create(
        self, body: dict[str, Any], headers: dict[str, str], wait: int
    ) -> Prediction:
        """One create, repeated only while it provably never arrived (or met a 429)."""
        t = self.api.timeouts
        timeout = t.with_read(wait + t.wait_margin)
        if self.deployment:
            path = f"/v1/deployments/{self.deployment}/predictions"
        else:
            path = "/v1/predictions"
        # Not held to the read budget: creates have a limit of their own (600 a minute).
        response = await retrying(
            lambda: self.api.request(
                "POST", path, json=body, headers=headers, timeout=timeout, lane=None
            ),
            self.api.retry,
            what=f"POST {path}",
            retry_on=refused_or_never_sent,
        )
        return prediction_body(response)

    async def _settle_unclear(
        self, input: dict[str, Any], since: datetime, exc: StudioError
    ) -> Prediction | None:
        """The run an unclear create made, or None once the listing repeatedly shows none."""
        try:
            return await self.look_for_created(input, since)
        except StudioError as lookup:
            raise CreateUnclear(f"{exc} {UNSURE} (Looking it up failed too: {lookup})") from exc

    async def look_for_created(self, input: dict[str, Any], since: datetime) -> Prediction | None:
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
        give_up = time.monotonic() + wait + self.api.timeouts.wait_margin
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

    async def _cancel_quietly(self, prediction: Prediction, done: set[str]) -> None:
        pid = prediction["id"]
        if pid in done or prediction.get("status") in TERMINAL_STATUSES:
            return
        done.add(pid)
        await self.cancel(pid)
        log.info("canceled run %s: its create was abandoned", pid)

    async def get(
        self, prediction_id: str, *, lane: Lane = STEADY, due: float | None = None
    ) -> Prediction:
        """The prediction as it is now (GET /v1/predictions/{id}); `lane` and `due` rank it in
        the account's read budget (see services.replicate.budget)."""
        return await self.api.read(
            "GET", f"/v1/predictions/{_quote(prediction_id)}", prediction_body, lane=lane, due=due
        )

    async def cancel(self, prediction_id: str) -> Prediction:
        """Ask the API to cancel a run; canceling twice is harmless, so this is retried."""
        path = f"/v1/predictions/{_quote(prediction_id)}/cancel"
        return await self.api.read("POST", path, prediction_body, lane=URGENT)

    async def list(self) -> AsyncIterator[Prediction]:
        """Every prediction of the account, newest first, page after page."""
        url: str | None = "/v1/predictions"
        seen: set[str] = set()
        while url and url not in seen:
            seen.add(url)
            page = await self.api.get_json(url)
            if not isinstance(page, dict):
                raise ServerError("The Replicate API answered the list with something unexpected.")
            for item in page.get("results") or []:
                if isinstance(item, dict):
                    yield cast(Prediction, item)
            nxt = page.get("next")
            url = self.api.same_origin(nxt) if isinstance(nxt, str) and nxt else None

    async def find_created(self, input: dict[str, Any], since: datetime) -> Prediction | None:
        """The run made here with `input` at or after `since` (local time), if listed."""
        url = "/v1/predictions"
        for _ in range(self.find_pages):
            page = await self.api.get_json(url)
            cutoff = self.api.server_time(since)
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
                    and self.ours(cast(Prediction, item))
                    and same_input(input, item.get("input"))
                ):
                    self._known_ids.add(item["id"])
                    return cast(Prediction, item)
            nxt = page.get("next")
            if not isinstance(nxt, str) or not nxt:
                return None
            url = self.api.same_origin(nxt)
        return None

    async def since(self, since: datetime) -> builtins.list[Prediction]:
        """The account's predictions created at or after `since` (local time), newest first."""
        cutoff = self.api.server_time(since)
        found: builtins.list[Prediction] = []
        async for item in self.list():
            created = parse_timestamp(item.get("created_at"))
            if created is not None and created < cutoff:
                break  # newest first: everything further is older still
            found.append(item)
        return found

    def stream_events(
        self, url: str, *, last_event_id: str | None = None
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """The run's server-sent events (see services.replicate.stream)."""
        return stream_events(self.api, url, last_event_id=last_event_id)

    def ours(self, prediction: Prediction) -> bool:
        """Made on what this creates on: its deployment, else its version."""
        if self.deployment:
            return prediction.get("deployment") in (None, self.deployment)
        return prediction.get("version") == self.version
