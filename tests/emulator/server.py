"""Running the emulator on loopback in a background thread, and the handle tests hold."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from .app import create_app
from .config import EmulatorConfig, Fault, WebhookFault
from .model import traceback
from .schema import with_defaults
from .state import TERMINAL, EmulatorState, Prediction, RecordedRequest
from .webhooks import SentWebhook

DEFAULT_SEED_INPUT = {"prompt": "seeded run: lo-fi piano", "duration": 2}


class Emulator:
    """A running emulator: its address, its knobs, and what it has seen."""

    def __init__(self, state: EmulatorState, base_url: str) -> None:
        self.state = state
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"Emulator({self.base_url})"

    # --- what tests read ---------------------------------------------------------------------
    @property
    def token(self) -> str:
        """The first valid token (default "test-token")."""
        return self.state.config.tokens[0]

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def creates(self) -> int:
        """How many predictions `POST /v1/predictions` created (seeded ones not counted)."""
        return self.state.creates

    @property
    def predictions(self) -> dict[str, Prediction]:
        with self.state.lock:
            return dict(self.state.predictions)

    @property
    def faults(self) -> list[Fault]:
        with self.state.lock:
            return list(self.state.faults)

    @property
    def webhooks(self) -> list[SentWebhook]:
        """Every webhook delivery attempt made so far, oldest first."""
        with self.state.lock:
            return list(self.state.webhooks)

    def webhook_secret(self, token: str | None = None) -> str:
        """The signing secret of `token`'s account (default: the first valid token)."""
        return self.state.webhook_secret(token or self.token)

    def url(self, path: str) -> str:
        """An absolute URL on the emulator, e.g. url("/v1/predictions")."""
        return self.base_url + path

    @property
    def headers(self) -> dict[str, str]:
        """Authorization headers with the valid token."""
        return {"Authorization": f"Bearer {self.token}"}

    def count(self, method: str = "*", path_prefix: str = "/") -> int:
        """How many recorded requests match the method ("*" for any) and path prefix."""
        wanted = method.upper()
        return sum(
            1 for r in self.requests if wanted in ("*", r.method) and r.path.startswith(path_prefix)
        )

    def prediction(self, prediction_id: str) -> Prediction:
        return self.state.predictions[prediction_id]

    def status(self, prediction_id: str) -> str:
        return self.prediction(prediction_id).status(time.time())

    def wait_for(
        self, prediction_id: str, status: str | set[str] = TERMINAL, timeout: float = 30
    ) -> str:
        """Block until the prediction reaches `status` (one or a set); return the status."""
        wanted = {status} if isinstance(status, str) else set(status)
        give_up = time.monotonic() + timeout
        while True:
            current = self.status(prediction_id)
            if current in wanted:
                return current
            if time.monotonic() > give_up:
                raise TimeoutError(f"{prediction_id} still {current}, wanted {sorted(wanted)}")
            time.sleep(0.01)

    def output_bytes(self, prediction_id: str) -> bytes:
        """The rendered output file of a succeeded run."""
        return self.prediction(prediction_id).ensure_output()

    # --- what tests change -------------------------------------------------------------------
    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change knobs (e.g. run_seconds=0.2); affects runs created afterwards."""
        self.state.config.update(changes)
        return self.state.config

    def inject(self, fault: Fault) -> Fault:
        return self.state.add_fault(fault)

    def add_fault(self, kind: str = "status", **options: Any) -> Fault:
        """Inject a fault: add_fault("status", status=503, path="/v1/predictions", times=2)."""
        return self.state.add_fault(Fault(kind=kind, **options))

    def add_webhook_fault(self, kind: str = "drop", **options: Any) -> WebhookFault:
        """Misbehave on outgoing webhooks: add_webhook_fault("drop", times=None)."""
        return self.state.add_webhook_fault(WebhookFault(kind=kind, **options))

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()
            self.state.webhook_faults.clear()

    def reset(self, config: EmulatorConfig | None = None) -> None:
        """Forget predictions, files, requests and faults (and optionally replace the config)."""
        self.state.reset(config)

    def expire_outputs(self) -> None:
        """Remove every finished run's data now (then output URLs 404, data_removed true)."""
        self.state.expire_outputs()

    def add_existing_prediction(
        self,
        *,
        status: str = "succeeded",
        input: dict[str, Any] | None = None,
        token: str | None = None,
        created_at: float | None = None,
        error: str | None = None,
        data_removed: bool = False,
        source: str = "api",
        seed: int | None = None,
    ) -> str:
        """Seed a prediction as if made earlier (for listing / import tests); return its id.

        `status` may be any status; `starting` and `processing` runs carry on from now with the
        current timings. `created_at` (epoch seconds) places a finished run in time.
        """
        if status not in {"starting", "processing", *TERMINAL}:
            raise ValueError(f"unknown status {status!r}")
        state = self.state
        payload = dict(DEFAULT_SEED_INPUT if input is None else input)
        if seed is not None:
            payload.setdefault("seed", seed)
        model_inputs = with_defaults(payload)
        # A seeded run never fetches its input audio; plan it as a text-only run.
        model_inputs.update(input_audio=None, continuation=False)
        if model_inputs.get("prompt") is None:
            model_inputs["prompt"] = ""
        prediction = state.create_prediction(
            token=token or self.token,
            version=state.config.versions[0],
            inputs=payload,
            model_inputs=model_inputs,
            audio=None,
            audio_error=None,
            deadline_seconds=None,
            count_create=False,
        )
        now = time.time()
        plan = prediction.plan
        with state.lock:
            prediction.source = source
            if status == "failed":
                message = error or "CUDA out of memory. Tried to allocate 2.00 GiB"
                plan.error = message
                plan.lines.append(
                    (
                        plan.seconds,
                        traceback("RuntimeError", message, 230, "wav, tokens = model.generate("),
                        "\n",
                    )
                )
            queue, run = prediction.queue_seconds, plan.seconds
            if status == "processing":
                prediction.created = now - queue
            elif status in TERMINAL:
                finished = (
                    (created_at if created_at is not None else now - queue - run - 1) + queue + run
                )
                prediction.created = finished - queue - run
                if status == "canceled":
                    prediction.canceled_at = prediction.started + run / 2
                elif status == "aborted":
                    prediction.queue_seconds = queue + run + 1
                    prediction.deadline = prediction.created + queue
            prediction.removed = data_removed
        return prediction.id


class _QuietDrops(logging.Filter):
    """Hide uvicorn's complaint about the answers a `drop` fault deliberately never sends."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without starting response" not in record.getMessage()


_QUIET_DROPS = _QuietDrops()


class _Server(uvicorn.Server):
    """uvicorn's server, noticing `should_exit` within 10 ms instead of 100 ms."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)


@contextmanager
def run_emulator(
    config: EmulatorConfig | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    wait_shutdown: bool = False,
) -> Iterator[Emulator]:
    """Serve an emulator on `host:port` (0: a free port) in a background thread.

    On exit the server is told to stop; `wait_shutdown` also waits until it has.
    """
    state = EmulatorState(config)
    error_log = logging.getLogger("uvicorn.error")
    if _QUIET_DROPS not in error_log.filters:
        error_log.addFilter(_QUIET_DROPS)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            create_app(state),
            log_level="warning",
            log_config=None,  # leave the host process's logging alone
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    state.server = server
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"emulator-{bound_port}", daemon=True
    )
    thread.start()
    give_up = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > give_up:
            raise RuntimeError("the Replicate emulator did not start")
        time.sleep(0.005)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        yield Emulator(state, f"http://{shown}:{bound_port}")
    finally:
        server.should_exit = True
        server.force_exit = True
        # uvicorn closes the socket itself; its shutdown pauses 0.1 s, which the tests need not
        # wait for unless asked (the thread is a daemon and ends on its own).
        if wait_shutdown:
            thread.join(timeout=5)
