"""The webhook route under hostile bodies and floods (issue #20, item 7): a body that is not a
prediction gets a 400 (never a 500), and refused webhooks are logged sparingly.

The app's real route is served on loopback; the requests are real HTTP.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette

from services.engines.replicate.webhooks import WEBHOOK_PATH, RefusalLog, WebhookRegistry
from tests.support.asgi import serve
from ui.webhooks import webhook_routes

LOGGER = "services.engines.replicate.webhooks"

NOT_PREDICTIONS = {
    "deeply nested JSON": b'{"id": "p1", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested list": b"[" * 50_000 + b"]" * 50_000,
    "a list": b'[{"id": "p1", "status": "succeeded"}]',
    "a string": b'"p1"',
    "a number": b"42",
    "null": b"null",
    "no id": b'{"status": "succeeded"}',
    "an id that is not a string": b'{"id": 7, "status": "succeeded"}',
    "an empty id": b'{"id": "", "status": "succeeded"}',
    "an id far too long": b'{"id": "' + b"x" * 10_000 + b'", "status": "succeeded"}',
    "not JSON": b"{nope",
}


@pytest.fixture(scope="module")
def route() -> str:
    registry = WebhookRegistry("https://studio.example")
    with serve(Starlette(routes=webhook_routes(registry))) as origin:
        yield origin + WEBHOOK_PATH


@pytest.mark.parametrize("body", list(NOT_PREDICTIONS.values()), ids=list(NOT_PREDICTIONS))
def test_a_body_that_is_not_a_prediction_gets_a_400(route: str, body: bytes) -> None:
    answer = httpx.post(route, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert "prediction" in answer.json()["detail"] or "JSON" in answer.json()["detail"]


def test_a_flood_of_refused_webhooks_writes_a_few_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    registry = WebhookRegistry("https://studio.example")  # what the route hands each POST to
    for n in range(1100):  # unsigned news of a run nobody here waits for
        body = b'{"id": "stranger%d", "status": "succeeded"}' % n
        assert registry.receive({}, body).status == 404
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert 1 <= len(lines) <= 10, lines
    assert "1000 refused in this stretch; 899 not logged" in lines[-1]


def test_after_a_quiet_stretch_refusals_are_logged_again_with_what_went_unlogged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    now = [0.0]
    refusals = RefusalLog(burst=2, window=60.0, clock=lambda: now[0])
    for _ in range(7):
        refusals.refused(401, "bad signature")
    now[0] = 61.0
    refusals.refused(401, "bad signature")
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 3  # the first two of the stretch, then the next stretch's first
    assert "5 not logged" in lines[-1]
