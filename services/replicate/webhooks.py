"""Replicate's webhooks: the account's signing secret, and checking that a webhook is genuine.

Replicate signs every webhook the Standard Webhooks way: `webhook-id`, `webhook-timestamp` (Unix
seconds) and `webhook-signature` (space-separated `v1,<base64>` signatures) headers; each
signature is HMAC-SHA256 over `"{id}.{timestamp}.{raw body}"` keyed with the base64-decoded part
after `whsec_` of the secret from `GET /v1/webhooks/default/secret`.

The secret is a credential: `WebhookSecret` never shows it (repr, str, logs), `WebhookSecrets`
keeps it in memory only, per account, and nothing here writes it anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from services.errors import ServerError
from services.replicate.http import Api

SECRET_PATH = "/v1/webhooks/default/secret"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 5 * 60.0  # seconds a webhook's timestamp may be off: older ones are replays


class WebhookRejected(Exception):
    """A webhook that is not Replicate's, or not now: its signature or timestamp is wrong."""


class WebhookSecret:
    """An account's webhook signing secret; its value never appears in a repr or a message."""

    __slots__ = ("_key",)

    def __init__(self, value: str):
        encoded = value.strip().removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("The webhook secret is not a whsec_ base64 key.") from None
        if not key:
            raise ValueError("The webhook secret is empty.")
        self._key = key

    def __repr__(self) -> str:
        return "<WebhookSecret [redacted]>"

    __str__ = __repr__

    def sign(self, msg_id: str, timestamp: str, body: bytes) -> str:
        """The signature Replicate sends for this message (`v1,<base64>`)."""
        content = f"{msg_id}.{timestamp}.".encode() + body
        digest = hmac.new(self._key, content, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        now: float | None = None,
    ) -> str:
        """Check a webhook's headers against its raw body; returns its `webhook-id`.

        `headers` must be looked up case-insensitively (as Starlette's and httpx's are).
        Raises WebhookRejected when a header is missing, the timestamp is more than `tolerance`
        seconds from `now`, or no `v1` signature matches (compared in constant time).
        """
        msg_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not msg_id or not timestamp or not signatures:
            raise WebhookRejected("The webhook is not signed.")
        try:
            sent = int(timestamp)
        except ValueError:
            raise WebhookRejected("The webhook's timestamp is not a number.") from None
        if abs((time.time() if now is None else now) - sent) > tolerance:
            raise WebhookRejected("The webhook's timestamp is too far from now (a replay?).")
        expected = self.sign(msg_id, timestamp, body).encode()
        for signature in signatures.split():
            version, _, _ = signature.partition(",")
            if version == "v1" and hmac.compare_digest(signature.encode(), expected):
                return msg_id
        raise WebhookRejected("The webhook's signature does not match.")


class Webhooks:
    """One account's webhook settings on the API (`replicate.webhooks.default` in the official
    client)."""

    def __init__(self, api: Api):
        self.api = api

    async def default_secret(self) -> WebhookSecret:
        """The account's signing secret (GET /v1/webhooks/default/secret)."""
        body = await self.api.get_json(SECRET_PATH)
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key.startswith(SECRET_PREFIX):
            raise ServerError("The Replicate API answered the webhook secret with something else.")
        try:
            return WebhookSecret(key)
        except ValueError as exc:
            raise ServerError(f"The Replicate API's webhook secret is unusable: {exc}") from None


class WebhookSecrets:
    """Each account's secret, fetched once with its token and kept in this process's memory."""

    def __init__(self) -> None:
        self._secrets: dict[str, WebhookSecret] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, webhooks: Webhooks) -> WebhookSecret:
        """The secret of `webhooks`' account: from memory, else fetched (once at a time)."""
        account = webhooks.api.account
        known = self._secrets.get(account)
        if known is not None:
            return known
        lock = self._locks.setdefault(account, asyncio.Lock())
        async with lock:
            known = self._secrets.get(account)
            if known is None:
                known = self._secrets[account] = await webhooks.default_secret()
            return known

    def forget(self, webhooks: Webhooks) -> None:
        """Drop an account's secret (e.g. after it was rotated): the next `get` fetches it."""
        self._secrets.pop(webhooks.api.account, None)
