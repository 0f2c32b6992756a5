"""Replicate's webhooks end to end: the emulator sends them signed, the service verifies them, the
app's route hands them to the run's follower, and polling stays only as the fallback.

Real HTTP throughout: the emulator and the receiving servers run on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.engines.registry import Engines
from services.engines.replicate.webhooks import WEBHOOK_PATH, WebhookRegistry
from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.replicate.follow import FollowPolicy
from services.replicate.webhooks import WebhookRejected, WebhookSecret
from services.settings import Settings
from tests.client_support import make_client
from tests.emulator import MUSICGEN_VERSION, Emulator, EmulatorConfig
from tests.emulator.webhooks import sign
from tests.support.asgi import serve
from ui.webhooks import webhook_routes

# REPLICATE.md's test vector (from replicate-python's tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = "1614265330"
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
V2_SIGNATURE = "v2" + VECTOR_SIGNATURE[2:]  # right digest, unknown scheme

TOKEN = "r8_" + "WebhookTestToken0123456789abcdefghijklmno"  # fake; split for secret scanners
OTHER_TOKEN = "r8_" + "OtherWebhookToken123456789abcdefghijklmno"


def vector_headers(**changes: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": VECTOR_TIMESTAMP,
        "webhook-signature": VECTOR_SIGNATURE,
    }
    headers.update(changes)
    return headers


# --- signing and verification ----------------------------------------------------------------
def test_the_emulator_signs_like_replicate() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_service_signs_and_verifies_the_test_vector() -> None:
    secret = WebhookSecret(VECTOR_SECRET)
    assert secret.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    now = float(VECTOR_TIMESTAMP)
    assert secret.verify(vector_headers(), VECTOR_BODY, now=now) == VECTOR_ID
    # Any of several space-separated signatures may match (a rotated secret signs twice).
    several = vector_headers(**{"webhook-signature": f"v1,AAAA {VECTOR_SIGNATURE}"})
    assert secret.verify(several, VECTOR_BODY, now=now) == VECTOR_ID


@pytest.mark.parametrize(
    ("headers", "body", "now"),
    [
        (vector_headers(), b'{"test": 2432232315}', 1614265330),  # body changed
        (vector_headers(**{"webhook-id": "msg_other"}), VECTOR_BODY, 1614265330),
        (vector_headers(**{"webhook-signature": "v1,AAAA"}), VECTOR_BODY, 1614265330),
        (vector_headers(**{"webhook-signature": V2_SIGNATURE}), VECTOR_BODY, 1614265330),
        (vector_headers(**{"webhook-timestamp": "1614265331"}), VECTOR_BODY, 1614265330),
        (vector_headers(**{"webhook-timestamp": "soon"}), VECTOR_BODY, 1614265330),
        ({"webhook-id": VECTOR_ID, "webhook-timestamp": VECTOR_TIMESTAMP}, VECTOR_BODY, 1614265330),
        (vector_headers(), VECTOR_BODY, 1614265330 + 301),  # a replay, 5 minutes later
        (vector_headers(), VECTOR_BODY, 1614265330 - 301),
    ],
)  # fmt: skip
def test_a_wrong_or_stale_webhook_is_rejected(
    headers: dict[str, str], body: bytes, now: float
) -> None:
    with pytest.raises(WebhookRejected):
        WebhookSecret(VECTOR_SECRET).verify(headers, body, now=now)


def test_the_secret_never_shows() -> None:
    secret = WebhookSecret(VECTOR_SECRET)
    shown = f"{secret!r} {secret} {[secret]}"
    assert "MfKQ9r8" not in shown and "redacted" in shown
    with pytest.raises(ValueError) as refused:
        WebhookSecret("whsec_not base64!")
    assert "not base64" not in str(refused.value)


# --- a receiver on loopback ------------------------------------------------------------------
class Receiver:
    """Records every webhook POSTed to it; `answers` are the statuses to give, then 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        self.answers: list[int] = []

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body(), time.monotonic()))
            return Response(status_code=self.answers.pop(0) if self.answers else 200)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, _ in self.received]

    def wait(self, condition: Callable[[], bool], timeout: float = 15) -> None:
        give_up = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < give_up, f"timed out; received {self.bodies()}"
            time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    recv = Receiver()
    with serve(recv.app()) as origin:
        yield recv, origin + "/hook"


def create(emulator: Emulator, token: str | None = None, **body: Any) -> dict[str, Any]:
    payload = {"version": MUSICGEN_VERSION, "input": {"prompt": "calm piano", "duration": 1}}
    payload.update(body)
    answer = httpx.post(
        emulator.url("/v1/predictions"),
        json=payload,
        headers={"Authorization": f"Bearer {token or emulator.token}"},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def get(emulator: Emulator, prediction_id: str) -> dict[str, Any]:
    return httpx.get(
        emulator.url(f"/v1/predictions/{prediction_id}"), headers=emulator.headers
    ).json()


# --- the emulator sends webhooks ------------------------------------------------------------
def test_the_emulator_sends_signed_webhooks_for_the_asked_events(
    emulator: Emulator, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    emulator.configure(run_seconds=2.0, progress_every_tokens=5)
    secret_answer = httpx.get(emulator.url("/v1/webhooks/default/secret"), headers=emulator.headers)
    secret = WebhookSecret(secret_answer.json()["key"])
    run = create(emulator, webhook=url, webhook_events_filter=["start", "logs", "completed"])
    recv.wait(lambda: any(b["status"] == "succeeded" for b in recv.bodies()))
    time.sleep(0.3)  # nothing comes after `completed`

    events = [(h, body, at) for h, body, at in recv.received]
    for headers, body, _ in events:
        secret.verify(headers, body)  # every delivery is genuine
        assert headers["webhook-id"].startswith("msg_")
    bodies = recv.bodies()
    assert {b["id"] for b in bodies} == {run["id"]}
    assert bodies[0]["status"] == "processing"  # start
    assert bodies[-1] == get(emulator, run["id"])  # completed: the same body as a GET
    assert bodies[-1]["output"]
    sent = emulator.webhooks
    logs = sorted(w.event_time for w in sent if w.event == "logs")
    assert len(logs) >= 2  # progress flows as logs events ...
    gaps = [later - earlier for earlier, later in itertools.pairwise(logs)]
    assert min(gaps) >= 0.49  # ... at most one per 500 ms
    # Deliveries go out side by side (as Replicate's do): the end is sent last.
    assert {w.event for w in sent} == {"start", "logs", "completed"}
    assert max(sent, key=lambda w: w.time).event == "completed"
    assert [w.event for w in sent].count("start") == 1
    assert all(w.answer == 200 for w in sent)


def test_by_default_only_the_end_is_sent_and_secrets_are_per_account(
    emulator: Emulator, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    emulator.configure(tokens=[emulator.token, OTHER_TOKEN])
    run = create(emulator, token=OTHER_TOKEN, webhook=url)  # no filter: output and completed
    recv.wait(lambda: len(recv.received) >= 1)
    time.sleep(0.3)
    ((headers, body, _),) = recv.received
    assert json.loads(body)["status"] == "succeeded" and json.loads(body)["id"] == run["id"]
    WebhookSecret(emulator.webhook_secret(OTHER_TOKEN)).verify(headers, body)
    with pytest.raises(WebhookRejected):  # another account's secret does not fit
        WebhookSecret(emulator.webhook_secret()).verify(headers, body)
    assert emulator.webhook_secret() != emulator.webhook_secret(OTHER_TOKEN)
    key = httpx.get(
        emulator.url("/v1/webhooks/default/secret"),
        headers={"Authorization": f"Bearer {OTHER_TOKEN}"},
    ).json()["key"]
    assert key == emulator.webhook_secret(OTHER_TOKEN) and key.startswith("whsec_")
    assert len(base64.b64decode(key.removeprefix("whsec_"))) >= 24
    # Without a webhook nothing is sent; a malformed one is refused like the API does.
    create(emulator)
    bad = httpx.post(
        emulator.url("/v1/predictions"),
        json={"version": MUSICGEN_VERSION, "input": {"prompt": "x"}, "webhook": "not a url"},
        headers=emulator.headers,
    )
    assert bad.status_code == 422
    time.sleep(0.4)
    assert len(recv.received) == 1


def test_the_emulator_retries_a_refused_webhook_with_the_same_id(
    emulator: Emulator, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    emulator.configure(webhook_backoff_seconds=0.05)
    recv.answers = [500, 404]
    create(emulator, webhook=url, webhook_events_filter=["completed"])
    recv.wait(lambda: len(recv.received) >= 3)
    time.sleep(0.3)
    assert len(recv.received) == 3
    ids = {headers["webhook-id"] for headers, _, _ in recv.received}
    assert len(ids) == 1
    _, first, second = (at for _, _, at in recv.received)
    assert second - first >= 0.09  # the pause grows
    assert [w.answer for w in emulator.webhooks] == [500, 404, 200]


def test_webhook_faults_drop_delay_and_forge(
    emulator: Emulator, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    secret = WebhookSecret(emulator.webhook_secret())
    emulator.add_webhook_fault("drop")
    dropped = create(emulator, webhook=url, webhook_events_filter=["completed"])
    emulator.wait_for(dropped["id"])
    time.sleep(0.4)
    assert recv.received == [] and emulator.webhooks[0].fault == "drop"

    emulator.add_webhook_fault("bad_signature")
    create(emulator, webhook=url, webhook_events_filter=["completed"])
    recv.wait(lambda: len(recv.received) == 1)
    headers, body, _ = recv.received[0]
    with pytest.raises(WebhookRejected):
        secret.verify(headers, body)

    emulator.add_webhook_fault("unsigned")
    create(emulator, webhook=url, webhook_events_filter=["completed"])
    recv.wait(lambda: len(recv.received) == 2)
    assert "webhook-signature" not in recv.received[1][0]

    emulator.add_webhook_fault("delay", delay=0.6)
    late = create(emulator, webhook=url, webhook_events_filter=["completed"])
    emulator.wait_for(late["id"])
    ended = time.monotonic()
    recv.wait(lambda: len(recv.received) == 3)
    assert recv.received[2][2] - ended >= 0.5
    secret.verify(recv.received[2][0], recv.received[2][1])


# --- the registry ----------------------------------------------------------------------------
def signed(secret: str, body: bytes, msg_id: str = "msg_1", at: float | None = None) -> dict:
    timestamp = str(int(time.time() if at is None else at))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


async def test_the_registry_hands_only_genuine_webhooks_to_the_run() -> None:
    registry = WebhookRegistry("https://studio.example/")
    assert registry.url == "https://studio.example" + WEBHOOK_PATH
    body = json.dumps({"id": "p1", "status": "succeeded", "output": "https://x/out.wav"}).encode()
    stranger = json.dumps({"id": "p2", "status": "succeeded"}).encode()
    with registry.watching("p1", WebhookSecret(VECTOR_SECRET)) as nudges:
        forged = "whsec_" + base64.b64encode(b"another account's key").decode()
        assert registry.receive(signed(forged, body), body).status == 401
        assert registry.receive({}, body).status == 401
        stale = signed(VECTOR_SECRET, body, at=time.time() - 600)
        assert registry.receive(stale, body).status == 401
        assert registry.receive(signed(VECTOR_SECRET, stranger), stranger).status == 404
        assert registry.receive({}, b"not json").status == 400
        assert await nudges.until(time.monotonic() + 0.05) is None  # nothing reached the run

        genuine = signed(VECTOR_SECRET, body)
        assert registry.receive(genuine, body).status == 200
        assert registry.receive(genuine, body).status == 200  # a retry: taken once
        assert (await nudges.until(time.monotonic() + 1))["status"] == "succeeded"
        assert await nudges.until(time.monotonic() + 0.05) is None
    # After the run: a late delivery is acknowledged (no more retries) and goes nowhere.
    assert registry.receive(signed(VECTOR_SECRET, body, "msg_2"), body).status == 200
    assert registry.receive(signed(forged, body, "msg_3"), body).status == 401
    assert not registry.watched("p1")


def test_the_fallback_polls_rarely() -> None:
    policy = FollowPolicy()
    sparse = WebhookRegistry("https://studio.example", fallback_poll=4.0).fallback_policy(policy)
    assert sparse.first_poll == sparse.progress_interval == sparse.end_interval == 4.0
    assert sparse.idle_interval == 4.0 and sparse.settle >= policy.timeout
    assert sparse.timeout == policy.timeout


# --- through the service and the app's route -------------------------------------------------
@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # meta/musicgen has no event stream: following it is polling, or webhooks.
    return EmulatorConfig.fast(tokens=[TOKEN], stream=False, max_wait_seconds=0.2)


@contextmanager
def studio(
    emulator: Emulator, data_dir: Path, *, public: bool = True, fallback_poll: float = 5.0
) -> Iterator[tuple[GenerationService, WebhookRegistry]]:
    """The generation service, and the app's webhook route served on loopback (its public
    address) handing deliveries to the service's registry."""
    env = {"MUSICGEN_DATA_DIR": str(data_dir), "REPLICATE_BASE_URL": emulator.base_url}
    registry_box: list[WebhookRegistry] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await Starlette(routes=webhook_routes(registry_box[0]))(scope, receive, send)

    with serve(app) as origin:
        if public:
            env["MUSICGEN_PUBLIC_URL"] = origin
        settings = Settings.from_env(env)
        registry = WebhookRegistry(settings.public_url, fallback_poll=fallback_poll)
        registry_box.append(registry)
        engines = Engines(settings, None, webhooks=registry)
        yield GenerationService(settings, Library(data_dir), engines=engines), registry


def polls(emulator: Emulator, prediction_id: str) -> int:
    return emulator.count("GET", f"/v1/predictions/{prediction_id}")


async def generate(service: GenerationService, **request: Any) -> list[Any]:
    run = GenerationRequest(**{"prompt": "rain on a tin roof", "duration": 2, **request})
    return [u async for u in service.generate(run, token=TOKEN, owner=None)]


async def test_a_run_is_noticed_by_its_webhook_and_filed(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.configure(run_seconds=4.0)
    with studio(emulator, tmp_path / "polled", public=False) as (service, _):
        polled = await generate(service)
    polled_id = polled[-1].prediction_id
    assert polled[-1].status == "succeeded"
    creates = [
        r.json for r in emulator.requests if r.method == "POST" and r.path == "/v1/predictions"
    ]
    assert "webhook" not in creates[0] and "webhook_events_filter" not in creates[0]
    assert emulator.count("GET", "/v1/webhooks") == 0  # without a public address: as before

    with studio(emulator, tmp_path / "hooked") as (service, registry):
        updates = await generate(service)
        final = updates[-1]
        assert final.status == "succeeded", final.error
        pid = final.prediction_id
        run_end = emulator.prediction(pid).ending()[0]
        noticed = time.time()
    creates = [
        r.json for r in emulator.requests if r.method == "POST" and r.path == "/v1/predictions"
    ]
    assert creates[-1]["webhook"] == registry.url
    assert creates[-1]["webhook_events_filter"] == ["logs", "completed"]
    # Not one poll (polling made several), yet the end was noticed at once and the run filed.
    assert polls(emulator, polled_id) >= 3
    assert polls(emulator, pid) == 0
    assert noticed - run_end < 1.0
    record = Library(tmp_path / "hooked").get(final.run_id)
    assert record.status == "succeeded" and Library(tmp_path / "hooked").audio_file(record)
    assert [u.progress for u in updates if u.progress], "progress came by the logs webhooks"
    completed = [w for w in emulator.webhooks if w.event == "completed"]
    assert [w.answer for w in completed] == [200]
    # The secret was fetched once, with the token, and neither shows in any log line.
    assert emulator.count("GET", "/v1/webhooks/default/secret") == 1
    secret = emulator.webhook_secret()
    for record_ in caplog.records:
        line = record_.getMessage()
        assert TOKEN not in line and secret not in line
        assert secret.removeprefix("whsec_") not in line


async def test_a_forged_or_unsigned_webhook_is_refused_and_changes_nothing(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.configure(run_seconds=2.0)
    with studio(emulator, tmp_path) as (service, registry):
        task = asyncio.create_task(generate(service))
        give_up = time.monotonic() + 10
        while not emulator.predictions or not registry.watched(next(iter(emulator.predictions))):
            assert time.monotonic() < give_up
            await asyncio.sleep(0.02)
        (pid,) = emulator.predictions
        fake = json.dumps(
            {"id": pid, "status": "failed", "error": "forged", "logs": "", "output": None}
        ).encode()
        forged_key = "whsec_" + base64.b64encode(b"not the account's secret").decode()
        async with httpx.AsyncClient() as http:
            url = str(registry.url)
            answers = [
                await http.post(url, content=fake, headers=signed(forged_key, fake)),
                await http.post(url, content=fake),
                await http.post(
                    url,
                    content=fake,
                    headers=signed(emulator.webhook_secret(), fake, at=time.time() - 3600),
                ),
            ]
            other = json.dumps({"id": "someoneelse", "status": "succeeded"}).encode()
            unknown = await http.post(
                url, content=other, headers=signed(emulator.webhook_secret(), other)
            )
        assert [a.status_code for a in answers] == [401, 401, 401]
        assert unknown.status_code == 404
        await asyncio.sleep(0.2)
        assert not task.done()  # the forged "failed" ended nothing
        updates = await task
    assert updates[-1].status == "succeeded"
    assert all(u.error != "forged" for u in updates)
    assert Library(tmp_path).get(updates[-1].run_id).status == "succeeded"
    assert "forged" not in caplog.text and forged_key not in caplog.text


async def test_when_webhooks_never_come_polling_still_files_the_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(run_seconds=1.0)
    emulator.add_webhook_fault("drop", times=None)
    with studio(emulator, tmp_path, fallback_poll=0.8) as (service, _):
        updates = await generate(service)
    final = updates[-1]
    assert final.status == "succeeded", final.error
    assert Library(tmp_path).get(final.run_id).status == "succeeded"
    assert polls(emulator, final.prediction_id) >= 1
    assert emulator.webhooks and all(w.fault == "drop" for w in emulator.webhooks)


async def test_a_secret_that_cannot_be_had_means_no_webhook(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(run_seconds=1.0)
    emulator.add_fault("status", status=404, path="/v1/webhooks/default/secret", times=None)
    with studio(emulator, tmp_path) as (service, _):
        updates = await generate(service)
    assert updates[-1].status == "succeeded"
    created = [
        r.json for r in emulator.requests if r.method == "POST" and r.path == "/v1/predictions"
    ]
    assert "webhook" not in created[0]
    assert polls(emulator, updates[-1].prediction_id) >= 1


async def test_a_client_fetches_the_accounts_secret(emulator: Emulator) -> None:
    async with make_client(emulator) as client:
        secret = await client.webhooks.default_secret()
    body = b'{"id": "x"}'
    # The fetched secret is this account's: its webhooks pass, another account's do not.
    assert secret.verify(signed(emulator.webhook_secret(), body, msg_id="msg_7"), body) == "msg_7"
    with pytest.raises(WebhookRejected):
        secret.verify(signed(emulator.webhook_secret("r8_another-account"), body), body)


def test_python_app_py_takes_replicate_webhooks_on_its_own_server(
    emulator: Emulator, tmp_path: Path
) -> None:
    """`python app.py` with MUSICGEN_PUBLIC_URL: /generate's run ends by its webhook, received
    on Gradio's own server next to the page and the MCP server."""
    from gradio_client import Client

    from tests.browser_support import AppProcess, app_env

    emulator.configure(run_seconds=2.0)
    env = app_env(emulator, tmp_path / "data", REPLICATE_API_TOKEN=TOKEN)
    app = AppProcess(env, tmp_path / "app.log")
    app.env["MUSICGEN_PUBLIC_URL"] = app.url.rstrip("/")
    app.start()
    try:
        _, record = Client(app.url, verbose=False).predict(
            prompt="Webhook waltz", duration=2, api_name="/generate"
        )
        assert record["status"] == "succeeded", record
        pid = record["prediction_id"]
        completed = [w for w in emulator.webhooks if w.event == "completed"]
        assert [(w.prediction_id, w.answer) for w in completed] == [(pid, 200)]
        assert polls(emulator, pid) == 0
        # Not ours: refused with nothing changed; the page and MCP are still served.
        forged = httpx.post(
            app.url + WEBHOOK_PATH.lstrip("/"), content=b'{"id": "' + pid.encode() + b'"}'
        )
        assert forged.status_code == 401
        assert httpx.get(app.url).status_code == 200
        assert httpx.get(app.url + "gradio_api/mcp/schema").status_code == 200
    finally:
        app.stop()
    log = (tmp_path / "app.log").read_text()
    secret = emulator.webhook_secret()
    assert TOKEN not in log and secret not in log and secret.removeprefix("whsec_") not in log
