"""Webhooks as Replicate sends them: signed POSTs of the prediction at start, logs, output and end.

The body is the prediction exactly as `GET /v1/predictions/{id}` answers it. Headers follow
Standard Webhooks (Svix): `webhook-id` (the same on every retry), `webhook-timestamp` (Unix
seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256>` of `"{id}.{timestamp}.{body}"` keyed
with the base64-decoded part after `whsec_` of the account's secret). `logs` and `output` events
are throttled to one per `webhook_throttle_seconds`; `start` and `completed` are always sent.
A delivery answered non-2xx (or not at all) is tried again with a growing pause.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool

from .state import TERMINAL, EmulatorState, Prediction

EVENTS = ("start", "output", "logs", "completed")
# What Replicate sends when the create gives no `webhook_events_filter`: "whenever there are new
# outputs or the prediction has finished" (the API reference).
DEFAULT_EVENTS = ("output", "completed")
THROTTLED = frozenset({"logs", "output"})


def new_secret() -> str:
    """A signing secret in Replicate's form: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` value for one delivery."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass
class SentWebhook:
    """One delivery attempt the emulator made."""

    prediction_id: str
    event: str
    status: str  # the prediction's status in the body
    url: str
    msg_id: str
    attempt: int
    time: float  # when this attempt was sent
    event_time: float  # when the event happened (the throttle spaces these)
    answer: int | None = None  # the receiver's HTTP status; None: no answer (or not sent)
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def watch(state: EmulatorState, prediction: Prediction, base: str) -> None:
    """Start sending `prediction`'s webhooks (from the running loop); no-op without a webhook."""
    if not prediction.webhook:
        return
    task = asyncio.get_running_loop().create_task(_watch(state, prediction, base))
    state.webhook_tasks.add(task)
    task.add_done_callback(state.webhook_tasks.discard)


async def _watch(state: EmulatorState, prediction: Prediction, base: str) -> None:
    """Look at the run often; send each event the filter asks for as it happens."""
    wanted = set(
        DEFAULT_EVENTS
        if prediction.webhook_events_filter is None
        else prediction.webhook_events_filter
    )
    started_sent = False
    sent_logs = ""
    last_throttled = float("-inf")
    pending_logs = False
    while state.predictions.get(prediction.id) is prediction:  # a reset forgets the run
        now = time.time()
        status = prediction.status(now)
        if status in TERMINAL:
            if "completed" in wanted:
                if status == "succeeded" and not prediction.is_removed(now):
                    await run_in_threadpool(prediction.ensure_output)
                _deliver(state, prediction, base, "completed")
            return
        if status == "processing" and not started_sent:
            started_sent = True
            if "start" in wanted:
                _deliver(state, prediction, base, "start")
        logs = prediction.logs(now)
        if logs != sent_logs and "logs" in wanted:
            pending_logs = True
            sent_logs = logs
        if pending_logs and now - last_throttled >= state.config.webhook_throttle_seconds:
            pending_logs = False
            last_throttled = now
            _deliver(state, prediction, base, "logs")
        # `output` events: meta/musicgen's only output appears as the run succeeds, and the
        # `completed` event carries it.
        await asyncio.sleep(state.config.stream_poll_seconds)


def _deliver(state: EmulatorState, prediction: Prediction, base: str, event: str) -> None:
    """Send one event's webhook in the background, with its retries."""
    now = time.time()
    body = json.dumps(prediction.to_json(base, now)).encode()
    task = asyncio.get_running_loop().create_task(_send(state, prediction, event, body, now))
    state.webhook_tasks.add(task)
    task.add_done_callback(state.webhook_tasks.discard)


async def _send(
    state: EmulatorState, prediction: Prediction, event: str, body: bytes, at: float
) -> None:
    config = state.config
    url = str(prediction.webhook)
    msg_id = "msg_" + secrets.token_urlsafe(18)
    status = json.loads(body).get("status", "")
    fault = state.take_webhook_fault(event)
    if fault is not None and fault.kind == "drop":
        state.record_webhook(
            SentWebhook(prediction.id, event, status, url, msg_id, 1, time.time(), at, fault="drop")
        )
        return
    if fault is not None and fault.kind == "delay":
        await asyncio.sleep(fault.delay)
    secret = state.webhook_secret(prediction.token)
    client = _client(state)
    for attempt in range(1, max(1, config.webhook_attempts) + 1):
        timestamp = str(int(time.time()))
        headers = {"content-type": "application/json", "user-agent": "Replicate-Webhooks"}
        if fault is None or fault.kind != "unsigned":
            key = new_secret() if fault is not None and fault.kind == "bad_signature" else secret
            headers.update(
                {
                    "webhook-id": msg_id,
                    "webhook-timestamp": timestamp,
                    "webhook-signature": sign(key, msg_id, timestamp, body),
                }
            )
        record = SentWebhook(
            prediction.id,
            event,
            status,
            url,
            msg_id,
            attempt,
            time.time(),
            at,
            fault=None if fault is None else fault.kind,
        )
        try:
            answer = await client.post(
                url, content=body, headers=headers, timeout=config.webhook_timeout_seconds
            )
            record.answer = answer.status_code
        except httpx.HTTPError:
            record.answer = None
        state.record_webhook(record)
        if record.answer is not None and 200 <= record.answer < 300:
            return
        if attempt < config.webhook_attempts:
            await asyncio.sleep(config.webhook_backoff_seconds * 2 ** (attempt - 1))


def _client(state: EmulatorState) -> httpx.AsyncClient:
    """The emulator's one client for webhooks, made on the server's loop at first use."""
    if state.webhook_client is None:
        state.webhook_client = httpx.AsyncClient(follow_redirects=False)
    return state.webhook_client
