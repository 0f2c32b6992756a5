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
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, cast

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
            return Verdict(413, "Too large.")
        try:
            prediction = json.loads(body)
        except ValueError:
            return Verdict(400, "The body is not JSON.")
        pid = prediction.get("id") if isinstance(prediction, dict) else None
        if not isinstance(pid, str) or not pid:
            return Verdict(400, "The body is not a prediction.")
        watch = self._watches.get(pid)
        ended = watch is None
        if watch is None:
            watch = self._ended.get(pid)
        if watch is None:
            return Verdict(404, "No run here waits for this prediction.")
        try:
            msg_id = watch.secret.verify(headers, body, tolerance=self.tolerance)
        except WebhookRejected as exc:
            log.warning("refused a webhook for run %s: %s", pid, exc)
            return Verdict(401, str(exc))
        if ended or msg_id in watch.seen:
            return Verdict(200, "Already known.")
        watch.seen.add(msg_id)
        with contextlib.suppress(RuntimeError):  # the follower's loop has closed: nothing to do
            watch.loop.call_soon_threadsafe(watch.nudges.push, cast(Prediction, prediction))
        return Verdict(200, "Received.")
