"""The emulator's memory: predictions, files, recorded requests, faults, and their JSON views."""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .audio import DecodedAudio, render_output
from .config import MUSICGEN_MODEL, MUSICGEN_VERSION, EmulatorConfig, Fault, WebhookFault
from .model import RunPlan, plan_run

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})


def new_id() -> str:
    """A 26-character lowercase base32 id like Replicate's."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def iso(ts: float) -> str:
    """RFC 3339 UTC with microseconds and a trailing Z, as the API writes timestamps."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RecordedRequest:
    """One request the emulator received (the token kept apart from the redacted headers)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    token: str | None
    auth_scheme: str | None
    json: Any
    time: float
    fault: str | None = None
    status: int | None = None
    peer: str = ""  # the client's address and port: one per connection

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "token": self.token,
            "auth_scheme": self.auth_scheme,
            "json": self.json,
            "time": self.time,
            "fault": self.fault,
            "status": self.status,
        }


@dataclass
class StoredFile:
    """A file uploaded through `POST /v1/files`."""

    id: str
    token: str
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any]
    created: float
    ttl: float

    def to_json(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.data),
            "etag": '"' + hashlib.md5(self.data).hexdigest() + '"',
            "checksums": {
                "sha256": hashlib.sha256(self.data).hexdigest(),
                "md5": hashlib.md5(self.data).hexdigest(),
            },
            "metadata": self.metadata,
            "created_at": iso(self.created),
            "expires_at": iso(self.created + self.ttl),
            "urls": {"get": f"{base}/v1/files/{self.id}"},
        }


@dataclass
class Prediction:
    """One run. Its status at any moment follows from its timestamps and plan."""

    id: str
    token: str
    version: str
    input: dict[str, Any]
    created: float
    queue_seconds: float
    plan: RunPlan
    output_ttl: float
    stream: bool
    omit_while_starting: bool
    removal_clears_input: bool
    source: str = "api"
    deadline: float | None = None
    canceled_at: float | None = None
    removed: bool = False
    output_key: str = field(default_factory=lambda: secrets.token_hex(20))
    output_bytes: bytes | None = None
    prompt_audio: DecodedAudio | None = None
    input_audio_info: dict[str, Any] | None = None
    input_audio_error: str | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    render_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def started(self) -> float:
        return self.created + self.queue_seconds

    def ending(self) -> tuple[float, str]:
        """When the run ends and how: the earliest of finishing, cancel and deadline."""
        natural = "failed" if self.plan.error is not None else "succeeded"
        endings = [(self.started + self.plan.seconds, natural)]
        if self.canceled_at is not None:
            endings.append((self.canceled_at, "canceled"))
        if self.deadline is not None:
            endings.append(
                (self.deadline, "aborted" if self.deadline < self.started else "canceled")
            )
        return min(endings, key=lambda item: item[0])

    def status(self, now: float) -> str:
        end, how = self.ending()
        if now >= end:
            return how
        return "processing" if now >= self.started else "starting"

    def is_removed(self, now: float) -> bool:
        end, _ = self.ending()
        return self.removed or (self.status(now) in TERMINAL and now >= end + self.output_ttl)

    def log_lines(self, now: float) -> list[tuple[str, str]]:
        """The (text, terminator) pairs written by `now`."""
        end, _ = self.ending()
        elapsed = min(now, end) - self.started
        if elapsed < 0:
            return []
        # The tolerance absorbs float rounding in started + seconds - started.
        return [(text, term) for at, text, term in self.plan.lines if at <= elapsed + 1e-6]

    def logs(self, now: float) -> str:
        return "".join(text + term for text, term in self.log_lines(now))

    def output_url(self, base: str) -> str:
        return f"{base}/delivery/xezq/{self.output_key}/out.{self.plan.output_format}"

    def ensure_output(self) -> bytes:
        """Render the output file once (blocking: ffmpeg for mp3)."""
        with self.render_lock:
            if self.output_bytes is None:
                prefix = None
                if self.prompt_audio is not None and self.plan.prompt_slice is not None:
                    start, end = self.plan.prompt_slice
                    prefix = self.prompt_audio.segment[int(start * 1000) : int(end * 1000)]
                self.output_bytes = render_output(
                    seconds=self.plan.output_seconds,
                    channels=self.plan.channels,
                    seed=self.plan.seed or 0,
                    prompt=str(self.input.get("prompt") or ""),
                    output_format=self.plan.output_format,
                    prefix=prefix,
                )
            return self.output_bytes

    def to_json(self, base: str, now: float) -> dict[str, Any]:
        """The prediction object exactly as the API would answer it at `now`."""
        status = self.status(now)
        removed = self.is_removed(now)
        end, _ = self.ending()
        started = status not in ("starting", "aborted") and not (
            self.canceled_at is not None and self.canceled_at < self.started
        )
        urls = {
            "cancel": f"{base}/v1/predictions/{self.id}/cancel",
            "get": f"{base}/v1/predictions/{self.id}",
            "web": f"https://replicate.com/p/{self.id}",
        }
        if self.stream:
            urls["stream"] = f"{base}/v1/streams/{self.id}"
        body: dict[str, Any] = {
            "id": self.id,
            "model": MUSICGEN_MODEL,
            "version": self.version,
            "input": {} if removed and self.removal_clears_input else self.input,
            "logs": "" if removed else self.logs(now),
            "output": None,
            "data_removed": removed,
            "error": self.plan.error if status == "failed" else None,
            "status": status,
            "created_at": iso(self.created),
            "urls": urls,
            "source": self.source,
        }
        if status == "succeeded" and not removed:
            body["output"] = self.output_url(base)
        if started:
            body["started_at"] = iso(self.started)
        if status in TERMINAL:
            body["completed_at"] = iso(end)
            metrics: dict[str, Any] = {"total_time": round(end - self.created, 6)}
            if started:
                metrics["predict_time"] = round(end - self.started, 6)
            body["metrics"] = metrics
        if self.deadline is not None:
            body["deadline"] = iso(self.deadline)
        if status == "starting" and self.omit_while_starting:
            body.pop("output")
        return body


@dataclass
class RateWindow:
    start: float
    count: int = 0


class EmulatorState:
    """Everything the running emulator knows; safe to touch from the test thread."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.lock = threading.RLock()
        self.rng = random.Random()
        self.server: Any = None  # the uvicorn.Server, used to drop connections
        self.webhook_tasks: set[Any] = set()  # deliveries in flight (asyncio tasks), held
        self.webhook_client: Any = None  # httpx.AsyncClient on the server's loop, for webhooks
        self._clear()

    def _clear(self) -> None:
        self.predictions: dict[str, Prediction] = {}
        self.files: dict[str, StoredFile] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.loaded_models: set[str] = set()
        self.mbd_loaded = False
        self.creates = 0
        self.rate_windows: dict[tuple[str, str], RateWindow] = {}
        self.webhook_faults: list[WebhookFault] = []
        self.webhooks: list[Any] = []  # webhooks.SentWebhook, every delivery attempt
        self.webhook_secrets: dict[str, str] = {}  # token -> secret made up on first use

    def reset(self, config: EmulatorConfig | None = None) -> None:
        """Forget everything (and optionally swap in a new config), as if freshly started."""
        with self.lock:
            self._clear()
            if config is not None:
                self.config = config

    # --- requests and faults -------------------------------------------------------------
    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def add_fault(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first matching fault, counted as fired."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.fired += 1
                    return fault
        return None

    def add_webhook_fault(self, fault: WebhookFault) -> WebhookFault:
        with self.lock:
            self.webhook_faults.append(fault)
        return fault

    def take_webhook_fault(self, event: str) -> WebhookFault | None:
        """The first webhook fault matching `event`, counted as fired."""
        with self.lock:
            for fault in self.webhook_faults:
                if fault.matches(event):
                    fault.fired += 1
                    return fault
        return None

    def record_webhook(self, sent: Any) -> None:
        with self.lock:
            self.webhooks.append(sent)

    def webhook_secret(self, token: str) -> str:
        """The account's signing secret (`GET /v1/webhooks/default/secret`), one per token."""
        from .webhooks import new_secret

        with self.lock:
            given = self.config.webhook_secrets.get(token)
            if given:
                return given
            return self.webhook_secrets.setdefault(token, new_secret())

    def rate_limit(self, token: str, bucket: str, now: float) -> tuple[int, int, bool]:
        """(remaining, seconds to reset, allowed) for one request in a per-minute window."""
        limit = (
            self.config.create_limit_per_minute
            if bucket == "create"
            else self.config.read_limit_per_minute
        )
        with self.lock:
            window = self.rate_windows.get((token, bucket))
            if window is None or now - window.start >= 60:
                window = self.rate_windows[(token, bucket)] = RateWindow(start=now)
            window.count += 1
            reset = max(1, int(60 - (now - window.start) + 0.999))
            return max(0, limit - window.count), reset, window.count <= limit

    # --- predictions ---------------------------------------------------------------------
    def create_prediction(
        self,
        *,
        token: str,
        version: str,
        inputs: dict[str, Any],
        model_inputs: dict[str, Any],
        audio: DecodedAudio | None,
        audio_error: str | None,
        deadline_seconds: float | None,
        webhook: str | None = None,
        webhook_events_filter: list[str] | None = None,
        count_create: bool = True,
        created: float | None = None,
    ) -> Prediction:
        """Plan and store a new run as the model would carry it out."""
        with self.lock:
            cfg = self.config
            model_version = model_inputs["model_version"]
            cold = (
                cfg.cold_start
                if cfg.cold_start is not None
                else model_version not in self.loaded_models
            )
            mbd_cold = bool(cfg.cold_start) or not self.mbd_loaded
            plan = plan_run(
                model_inputs,
                config=cfg,
                cold=cold,
                mbd_cold=mbd_cold,
                audio=audio,
                audio_error=audio_error,
                rng=self.rng,
            )
            if any(text.startswith("Loading model ") for _, text, _ in plan.lines):
                self.loaded_models.add(model_version)
            if any(text.startswith("Loading MultiBand") for _, text, _ in plan.lines):
                self.mbd_loaded = True
            now = time.time() if created is None else created
            prediction = Prediction(
                id=new_id(),
                token=token,
                version=version,
                input=inputs,
                created=now,
                queue_seconds=cfg.queue_seconds,
                plan=plan,
                output_ttl=cfg.output_ttl_seconds,
                stream=cfg.stream,
                omit_while_starting=cfg.omit_fields_while_starting,
                removal_clears_input=cfg.removal_clears_input,
                deadline=None if deadline_seconds is None else now + deadline_seconds,
                prompt_audio=audio if plan.prompt_slice is not None else None,
                input_audio_info=None if audio is None else audio.info(),
                input_audio_error=audio_error,
                webhook=webhook,
                webhook_events_filter=webhook_events_filter,
            )
            self.predictions[prediction.id] = prediction
            if count_create:
                self.creates += 1
            return prediction

    def get_prediction(self, prediction_id: str, token: str | None = None) -> Prediction | None:
        with self.lock:
            prediction = self.predictions.get(prediction_id)
        if prediction is None or (token is not None and prediction.token != token):
            return None
        return prediction

    def cancel(self, prediction: Prediction, now: float) -> None:
        with self.lock:
            if prediction.status(now) not in TERMINAL:
                prediction.canceled_at = now

    def listing(self, token: str) -> list[Prediction]:
        """The token's predictions, newest first (those younger than the listing lag hidden)."""
        shown_before = time.time() - self.config.listing_lag_seconds
        with self.lock:
            mine = [
                p
                for p in self.predictions.values()
                if p.token == token and p.created <= shown_before
            ]
        return sorted(mine, key=lambda p: (p.created, p.id), reverse=True)

    def by_output_key(self, key: str) -> Prediction | None:
        with self.lock:
            for prediction in self.predictions.values():
                if prediction.output_key == key:
                    return prediction
        return None

    def expire_outputs(self) -> None:
        """Remove every finished run's data now, as the one-hour retention would."""
        now = time.time()
        with self.lock:
            for prediction in self.predictions.values():
                if prediction.status(now) in TERMINAL:
                    prediction.removed = True

    # --- files ---------------------------------------------------------------------------
    def add_file(
        self, *, token: str, name: str, content_type: str, data: bytes, metadata: dict[str, Any]
    ) -> StoredFile:
        stored = StoredFile(
            id=new_id(),
            token=token,
            name=name,
            content_type=content_type,
            data=data,
            metadata=metadata,
            created=time.time(),
            ttl=self.config.file_ttl_seconds,
        )
        with self.lock:
            self.files[stored.id] = stored
        return stored

    def get_file(self, file_id: str, token: str | None = None) -> StoredFile | None:
        with self.lock:
            stored = self.files.get(file_id)
        if stored is None or (token is not None and stored.token != token):
            return None
        if time.time() >= stored.created + stored.ttl:
            return None
        return stored


def data_url_bytes(url: str) -> bytes:
    """Decode a `data:` URL's payload (base64 or percent-encoded)."""
    from urllib.parse import unquote_to_bytes

    header, _, payload = url.partition(",")
    if header.endswith(";base64"):
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=False)
    return unquote_to_bytes(payload)


__all__ = [
    "MUSICGEN_VERSION",
    "EmulatorState",
    "Prediction",
    "RecordedRequest",
    "StoredFile",
    "data_url_bytes",
    "iso",
    "new_id",
]
