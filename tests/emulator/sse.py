"""The prediction's server-sent event stream (`urls.stream`).

Event ids are stable across reconnects: a `logs` event's id is the number of log lines sent up
to and including it; after the N log lines of a finished run come `output` (N+1), `error` (N+2)
and `done` (N+3). `Last-Event-ID: k` resumes after event k.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .origin import base_of
from .state import TERMINAL, Prediction


def sse_event(event: str, data: str, event_id: int) -> bytes:
    """One event; multi-line data becomes repeated `data:` lines."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    body = "".join(f"data: {line}\n" for line in lines)
    return f"event: {event}\nid: {event_id}\n{body}\n".encode()


async def prediction_events(
    prediction: Prediction, base: str, last_id: int, poll: float
) -> AsyncIterator[bytes]:
    """Logs as they appear, then output / error / done once the run ends."""
    sent = last_id
    while True:
        now = time.time()
        status = prediction.status(now)
        removed = prediction.is_removed(now)
        lines = [] if removed else prediction.log_lines(now)
        if len(lines) > sent:
            yield sse_event("logs", "\n".join(text for text, _ in lines[sent:]), len(lines))
            sent = len(lines)
        if status in TERMINAL:
            total = len(lines)
            if status == "succeeded" and not removed and sent < total + 1:
                await run_in_threadpool(prediction.ensure_output)
                yield sse_event("output", prediction.output_url(base), total + 1)
            if status == "failed" and sent < total + 2:
                yield sse_event("error", json.dumps({"detail": prediction.plan.error}), total + 2)
            if sent < total + 3:
                reason = {"succeeded": {}, "failed": {"reason": "error"}}.get(
                    status, {"reason": "canceled"}
                )
                yield sse_event("done", json.dumps(reason), total + 3)
            return
        await asyncio.sleep(poll)


async def stream_endpoint(request: Request) -> Response:
    """GET urls.stream: text/event-stream until the run is done."""
    state = request.app.state.emulator
    prediction = state.get_prediction(request.path_params["id"])
    if prediction is None or not prediction.stream:
        return JSONResponse({"detail": "Not found."}, status_code=404)
    last = request.headers.get("last-event-id", "").strip()
    last_id = int(last) if last.isdigit() else 0
    events = prediction_events(
        prediction, base_of(request, state.config), last_id, state.config.stream_poll_seconds
    )
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
