"""The page and its config, made once per address they are asked at, not once per visitor.

For every `GET /` and `GET /config` Gradio deep-copies its whole page config (about 460 KB of
JSON for this page) and walks it to write the root URL into every file URL: about 90 ms of CPU
per visitor, on the one Python thread that also runs everyone's takes. The config is fixed once
the app is launched; what differs between requests is only what the root URL is made from (the
host, the proxy's forwarded host and scheme, the mount path) and the query. So the answer is
kept per those (read as Gradio reads them: the first of a repeated header), and the same bytes
go to the next visitor. What is kept is the app's own answer: headers that middleware outside
this one adds for a caller (Gradio's CORS headers for its Origin) are added again for each.

Not kept: an answer that sets a cookie or is not a 200, and any request carrying Gradio's own
login cookie (the config then names the user). The store is bounded, so made-up Host headers
cannot grow it without end.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PATHS = frozenset({"/", "/config", "/config/"})
# What Gradio's root URL (and so every URL in the answer) is made from.
ROOT_HEADERS = ("host", "x-forwarded-host", "x-forwarded-proto", "x-gradio-server")
LOGIN_COOKIE = "access-token"  # Gradio's own auth: the config then carries the user's name
MAX_ENTRIES = 32  # distinct addresses the page is reached at; ~1 MB each

Key = tuple[Any, ...]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _key(scope: Scope) -> Key | None:
    """What the answer depends on, or None when it must not be shared."""
    if scope.get("type") != "http" or scope.get("method") != "GET":
        return None
    if scope.get("path") not in PATHS:
        return None
    # Read as Gradio and Starlette read them: the first of a repeated header counts.
    headers = Headers(scope=scope)
    if LOGIN_COOKIE in headers.get("cookie", ""):
        return None
    return (
        scope["path"],
        scope.get("query_string", b""),
        scope.get("scheme"),
        scope.get("root_path", ""),
        *(headers.get(name) for name in ROOT_HEADERS),
    )


class PageCache:
    """ASGI middleware: repeated `GET /` and `GET /config` answered from a kept copy."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._answers: OrderedDict[Key, Answer] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        kept = self._answers.get(key)
        if kept is not None:
            self._answers.move_to_end(key)
            await self._replay(kept, send)
            return
        await self.app(scope, receive, self._recorder(key, send))

    def _recorder(self, key: Key, send: Send) -> Send:
        """`send`, keeping a copy of a whole 200 answer without cookies once it is sent."""
        start: Message | None = None
        body: list[bytes] = []

        async def record(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                # Copied before it is sent: middleware outside this one (Gradio's CORS) adds
                # headers for this caller's Origin to the message it is handed.
                start = {**message, "headers": list(message.get("headers", []))}
            await send(message)
            if message["type"] == "http.response.body" and start is not None:
                body.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    self._keep(key, start, b"".join(body))

        return record

    def _keep(self, key: Key, start: Message, body: bytes) -> None:
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        if start.get("status") != 200 or any(k.lower() == b"set-cookie" for k, _ in headers):
            return
        self._answers[key] = (200, headers, body)
        while len(self._answers) > MAX_ENTRIES:
            self._answers.popitem(last=False)

    @staticmethod
    async def _replay(answer: Answer, send: Send) -> None:
        status, headers, body = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
