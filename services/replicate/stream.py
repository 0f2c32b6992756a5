"""A run's event stream (`urls.stream`): server-sent events (the WHATWG format) over httpx."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass

import httpx

from services.errors import ConnectionFailed
from services.replicate.http import Api


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event; `id` is the stream's last event id when it was dispatched."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class SseParser:
    """Feeds lines (terminators already removed) and returns an event at each blank line."""

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None  # the server's reconnection delay hint, if it gave one
        self._event = ""
        self._data: list[str] = []
        self._first = True

    def feed(self, line: str) -> ServerSentEvent | None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, often a keep-alive
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event, self._data
        self._event, self._data = "", []
        if not data:
            return None  # the spec drops an event without data lines
        return ServerSentEvent(
            event=event or "message", data="\n".join(data), id=self.last_event_id
        )


async def iter_sse(
    lines: AsyncIterable[str], parser: SseParser | None = None
) -> AsyncIterator[ServerSentEvent]:
    """Turn a stream of text lines into events; an unfinished event at the end is dropped."""
    parser = parser or SseParser()
    async for line in lines:
        event = parser.feed(line.rstrip("\r\n"))
        if event is not None:
            yield event


class StreamUnavailable(Exception):
    """The run's event stream could not be opened; polling takes over."""


async def stream_events(
    api: Api, url: str, *, last_event_id: str | None = None
) -> AsyncGenerator[ServerSentEvent, None]:
    """The server-sent events of a run's `urls.stream`; StreamUnavailable if it won't open."""
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    t = api.timeouts
    try:
        async with api.stream(
            "GET", url, headers=headers, timeout=t.with_read(t.stream_idle)
        ) as response:
            kind = response.headers.get("content-type", "")
            if response.status_code != 200 or not kind.startswith("text/event-stream"):
                raise StreamUnavailable(
                    f"the stream answered {response.status_code} {kind or 'without a type'}"
                )
            async for event in iter_sse(response.aiter_lines(), SseParser()):
                yield event
    except httpx.TransportError as exc:
        raise ConnectionFailed(f"The run's event stream broke ({type(exc).__name__}).") from exc
