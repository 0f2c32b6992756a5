"""A full queue, said clearly: Gradio refuses a join past the queue's `max_size` with a 503.

Gradio's own answer is "Queue is full. Max size is N and size is M." (its page shows "This
application is currently busy. Please try again." and gradio_client raises "Queue is full!
Please try again."). API callers speaking HTTP get this instead: what happened, that nothing
was started, and when to come back.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

BUSY_MESSAGE = (
    "The studio is busy: as many requests are waiting as it holds. Nothing was started; try "
    "again in a minute."
)
JOIN_SUFFIX = "/queue/join"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BusyMessage:
    """ASGI middleware: a queue join refused as unavailable gets BUSY_MESSAGE as its detail."""

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).endswith(JOIN_SUFFIX):
            await self.app(scope, receive, send)
            return
        replaced = False

        async def relay(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message.get("status") == 503:
                replaced = True
                body = json.dumps({"detail": BUSY_MESSAGE}).encode()
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"content-length", b"content-type")
                ]
                headers += [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({**message, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            if not replaced:  # Gradio's own body of a replaced answer is dropped
                await send(message)

        await self.app(scope, receive, relay)
