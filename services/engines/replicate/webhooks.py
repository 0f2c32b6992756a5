"""Webhooks for the Replicate engine: which runs wait for news, and handing a genuine webhook over.

Where the app has a public address (MUSICGEN_PUBLIC_URL, as a Space has), Replicate runs are
created with a webhook to `{public_url}{WEBHOOK_PATH}`. One `WebhookRegistry` per process (made
by `Engines`, handed to each `ReplicateEngine`) knows every run being followed: its follower's
`Nudges` and its account's signing secret. The app's route hands each POST to `receive`, which
checks the signature before anything else happens and passes the prediction to the follower as
if it had polled it. The follower then polls only as a fallback (`fallback_policy`), rarely.

Events asked for: `completed` (the end, at once) and `logs` — the model's progress readings
reach the page within Replicate's 500 ms throttle without a single poll, where polling would
show them up to `progress_interval` late; the model prints about twenty readings a run, so a run
brings a few dozen small POSTs at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, cast

from services.replicate.budget import FALLBACK
from services.replicate.client import ReplicateClient
from services.replicate.follow import FollowPolicy, Nudges
from services.replicate.predictions import Prediction
from services.replicate.webhooks import (
    DEFAULT_TOLERANCE,
    WebhookRejected,
    WebhookSecret,
    WebhookSecrets,
)

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/replicate"
WEBHOOK_EVENTS = ("logs", "completed")
DEFAULT_FALLBACK_POLL = 5.0  # seconds between polls while webhooks bring the news
MAX_BODY_BYTES = 4 * 1024 * 1024  # a prediction with its logs is far smaller
MAX_ID_CHARS = 128  # Replicate's ids have 26 characters
NOT_A_PREDICTION = "The body is not a prediction."


@dataclass
class RefusalLog:
    """Refused webhooks, logged sparingly: a flood of them must not flood the log.

    In each `window` seconds the first `burst` refusals are logged one by one, then only the
    10th, 100th, 1000th ... of the window, each line saying how many were refused and not
    logged; the first line of the next window says how many the last one left unlogged.
    """

    burst: int = 5
    window: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _since: float | None = None
    _count: int = 0
    _unlogged: int = 0

    def refused(self, status: int, reason: str) -> None:
        now = self.clock()
        carried = 0
        if self._since is None or now - self._since >= self.window:
            carried, self._since, self._count, self._unlogged = self._unlogged, now, 0, 0
        self._count += 1
        n = self._count
        if n > self.burst and not _power_of_ten(n):
            self._unlogged += 1
            return
        note = ""
        if self._unlogged or carried:
            note = f" ({n} refused in this stretch; {self._unlogged + carried} not logged)"
        log.warning("refused a webhook (%d): %s%s", status, reason, note)
        self._unlogged = 0


def _power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


@dataclass(frozen=True)
class Verdict:
    """The answer to one webhook delivery: an HTTP status and a short reason (no secrets)."""

    status: int
    detail: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class _Watch:
    """A followed run: where its news goes and the secret its webhooks are signed with."""

    nudges: Nudges
    secret: WebhookSecret
    loop: asyncio.AbstractEventLoop
    seen: set[str] = field(default_factory=set)  # webhook-ids handed over (retries repeat one)


class WebhookRegistry:
    """The runs of this process that wait for webhooks, by prediction id.

    `public_url` is the app's public origin; without it webhooks are off (`armed` is false) and
    runs are created and followed exactly as before. `fallback_poll` is the interval of the
    polls kept as the fallback; `tolerance` how old (in seconds) a webhook may be.
    """

    def __init__(
        self,
        public_url: str | None,
        *,
        path: str = WEBHOOK_PATH,
        events: tuple[str, ...] = WEBHOOK_EVENTS,
        fallback_poll: float = DEFAULT_FALLBACK_POLL,
        tolerance: float = DEFAULT_TOLERANCE,
        remember_ended: int = 256,
    ):
        self.public_url = public_url.rstrip("/") if public_url else None
        self.path = path
        self.events = events
        self.fallback_poll = fallback_poll
        self.tolerance = tolerance
        self._secrets = WebhookSecrets()
        self._watches: dict[str, _Watch] = {}
        # Runs whose follower is done: their late webhooks (a retry, a last logs event) are
        # answered 200 with no effect, so Replicate stops retrying them.
        self._ended: OrderedDict[str, _Watch] = OrderedDict()
        self._remember_ended = remember_ended
        self.refusals = RefusalLog()

    @property
    def armed(self) -> bool:
        """Whether runs are created with a webhook."""
        return self.public_url is not None

    @property
    def url(self) -> str | None:
        """The webhook URL given to Replicate, when armed."""
        return f"{self.public_url}{self.path}" if self.public_url else None

    def __repr__(self) -> str:
        return f"WebhookRegistry(url={self.url!r}, watching={len(self._watches)})"

    async def secret(self, client: ReplicateClient) -> WebhookSecret:
        """The signing secret of `client`'s account, fetched with its token once per process."""
        return await self._secrets.get(client.webhooks)

    def fallback_policy(self, policy: FollowPolicy) -> FollowPolicy:
        """`policy` with polls only every `fallback_poll` seconds: no quick first look, no poll
        aimed at the predicted end, no quick polls while the output is encoded."""
        every = max(self.fallback_poll, policy.first_poll, policy.progress_interval)
        sparse: dict[str, Any] = {
            "first_poll": every,
            "progress_interval": every,
            "idle_interval": every,
            "starting_max": max(policy.starting_max, every),
            "loading_max": max(policy.loading_max, every),
            "settle": policy.timeout,
            "end_interval": every,
            # Knobs of newer schedules, where present: no poll aimed at the end, no quick ones.
            "end_max": every,
            "aim": False,
            # ... and held to the fallback's share of the token's read budget.
            "budget_lane": FALLBACK,
        }
        known = {f.name for f in fields(policy)}
        return replace(policy, **{name: v for name, v in sparse.items() if name in known})

    @contextlib.contextmanager
    def watching(self, prediction_id: str, secret: WebhookSecret) -> Iterator[Nudges]:
        """While the block runs, webhooks for `prediction_id` signed with `secret` reach the
        yielded Nudges (from any thread: they are handed over on the caller's event loop)."""
        watch = _Watch(Nudges(), secret, asyncio.get_running_loop())
        self._ended.pop(prediction_id, None)
        self._watches[prediction_id] = watch
        try:
            yield watch.nudges
        finally:
            if self._watches.get(prediction_id) is watch:
                del self._watches[prediction_id]
            self._ended[prediction_id] = watch
            while len(self._ended) > self._remember_ended:
                self._ended.popitem(last=False)

    def watched(self, prediction_id: str) -> bool:
        return prediction_id in self._watches

    def receive(self, headers: Mapping[str, str], body: bytes) -> Verdict:
        """Check one webhook delivery and hand its prediction to the run's follower.

        `headers` must be case-insensitive. Unknown run: 404; bad or missing signature, or a
        stale timestamp: 401; either way nothing changes. A genuine one: 200.
        """
        if len(body) > MAX_BODY_BYTES:
            return self._refuse(Verdict(413, "Too large."))
        prediction = _prediction(body)
        if isinstance(prediction, Verdict):
            return self._refuse(prediction)
        pid = prediction["id"]
        watch = self._watches.get(pid)
        ended = watch is None
        if watch is None:
            watch = self._ended.get(pid)
        if watch is None:
            return self._refuse(Verdict(404, "No run here waits for this prediction."))
        try:
            msg_id = watch.secret.verify(headers, body, tolerance=self.tolerance)
        except WebhookRejected as exc:
            return self._refuse(Verdict(401, str(exc)), f"run {pid}")
        if ended or msg_id in watch.seen:
            return Verdict(200, "Already known.")
        watch.seen.add(msg_id)
        with contextlib.suppress(RuntimeError):  # the follower's loop has closed: nothing to do
            watch.loop.call_soon_threadsafe(watch.nudges.push, prediction)
        return Verdict(200, "Received.")

    def _refuse(self, verdict: Verdict, about: str = "") -> Verdict:
        self.refusals.refused(
            verdict.status, f"{about}: {verdict.detail}" if about else verdict.detail
        )
        return verdict


def _prediction(body: bytes) -> Prediction | Verdict:
    """The body as a prediction (a JSON object with a string `id`), or the 400
    that refuses it: not JSON, nested too deep to parse, a list, a string, no id."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return Verdict(400, "The body is not JSON (or is nested too deeply).")
    if not isinstance(parsed, dict):
        return Verdict(400, NOT_A_PREDICTION)
    pid = parsed.get("id")
    if not isinstance(pid, str) or not pid or len(pid) > MAX_ID_CHARS:
        return Verdict(400, NOT_A_PREDICTION)
    return cast(Prediction, parsed)
