"""The emulator's knobs and injectable faults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# meta/musicgen's public version (same value as services.settings.DEFAULT_VERSION).
MUSICGEN_VERSION = "671ac645ce5e552cc63a54a2bbff63fcf798043055d2dac5fc9e36a837eedcfb"
MUSICGEN_MODEL = "meta/musicgen"
DEFAULT_TOKEN = "test-token"


DEFAULT_DEPLOYMENT = "acme/musicgen-studio"


@dataclass
class EmulatorConfig:
    """Behaviour knobs; changing them on a running emulator affects runs created afterwards.

    Timing: a run is `starting` for `queue_seconds`, then `processing` for `run_seconds` when set,
    otherwise for (tokens to generate) / `tokens_per_second` (50 tokens per second of audio).
    """

    tokens: list[str] = field(default_factory=lambda: [DEFAULT_TOKEN])
    no_credit_tokens: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=lambda: [MUSICGEN_VERSION])
    # Deployments (owner/name -> the version they run), for POST /v1/deployments/.../predictions.
    deployments: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_DEPLOYMENT: MUSICGEN_VERSION}
    )
    queue_seconds: float = 1.0
    run_seconds: float | None = None
    tokens_per_second: float = 100.0
    fail_seconds: float = 0.5  # how long a run the model refuses stays `processing`
    timeout_seconds: float = 1800.0  # Replicate's 30-minute limit
    cold_start: bool | None = None  # None: cold on the first run of each model_version
    progress_every_tokens: int | None = None  # None: about every 5 % of the run
    progress_separator: str = "\n"  # the model prints "\r"; Replicate may show either
    stream: bool = True  # give `urls.stream` and serve the SSE stream
    stream_poll_seconds: float = 0.05
    max_wait_seconds: float = 60.0  # cap for `Prefer: wait`
    wait_incomplete_status: int = 201  # status of a `Prefer: wait` answer that is not final
    min_cancel_after_seconds: float = 5.0
    output_ttl_seconds: float = 3600.0  # outputs, logs and inputs removed after this
    removal_clears_input: bool = True
    omit_fields_while_starting: bool = True  # output/started_at/metrics absent, not null
    page_size: int = 100
    max_file_bytes: int = 100 * 1024 * 1024
    file_ttl_seconds: float = 24 * 3600.0
    create_limit_per_minute: int = 600
    read_limit_per_minute: int = 3000
    public_base_url: str | None = None  # URLs in answers; default: the request's own origin
    # A new prediction shows in `GET /v1/predictions` only this long after it was created
    # (the real listing may lag behind a create); GET by id sees it at once.
    listing_lag_seconds: float = 0.0
    # Webhooks: `logs`/`output` events at most once per `webhook_throttle_seconds`; a delivery
    # answered non-2xx (or not at all) is tried `webhook_attempts` times in all, waiting
    # `webhook_backoff_seconds` x 2^n between tries. Each token's signing secret is made up
    # on first use unless given in `webhook_secrets` (token -> "whsec_...").
    webhook_throttle_seconds: float = 0.5
    webhook_attempts: int = 4
    webhook_backoff_seconds: float = 0.2
    webhook_timeout_seconds: float = 5.0
    webhook_secrets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fast(cls, **changes: Any) -> EmulatorConfig:
        """Timings for tests: runs start in 50 ms and an 8 s clip takes 0.2 s."""
        config = cls(
            queue_seconds=0.05,
            tokens_per_second=2000.0,
            fail_seconds=0.05,
            stream_poll_seconds=0.01,
        )
        config.update(changes)
        return config

    def update(self, changes: dict[str, Any]) -> None:
        """Set knobs from a mapping, refusing unknown names."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise KeyError(f"unknown emulator config keys: {sorted(unknown)}")
        for key, value in changes.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FAULT_KINDS = (
    "status",
    "drop",
    "drop_after",
    "slow",
    "late",
    "malformed",
    "garbage",
    "truncate",
    "cut",
    "expire",
)


@dataclass
class Fault:
    """A misbehaviour for requests matching `method` (or "*") and the path prefix `path`.

    kinds: `status` answers `status` with `body` (and `Retry-After: retry_after` when set);
    `drop` closes the connection before the request is handled (nothing is created);
    `drop_after` handles the request (a create really creates) then closes without answering;
    `slow` waits `delay` seconds, then handles the request (a create creates only then);
    `late` handles the request at once (a create really creates), then holds the answer back
    for `delay` seconds (past a client's timeout, typically);
    `malformed` answers 200 with a body that is not JSON;
    `garbage` answers 200 with bytes that are not audio (`body`, or a default);
    `truncate` answers with the first `fraction` of the real body (Content-Length to match,
    as a proxy cutting a file would); `cut` announces the whole body, sends `fraction` of it
    and closes the connection;
    `expire` removes every finished run's outputs (the one-hour retention), then handles the
    request normally.
    `headers` are added to a `status` answer (e.g. {"ratelimit-reset": "1"}).
    With `after`, a `status` or `malformed` fault answers only once the request was handled (a
    create really creates, as a server that fails while answering would).
    The fault fires `times` times (None: forever); `fired` counts how often it did.
    """

    kind: str = "status"
    method: str = "*"
    path: str = "/v1/"
    times: int | None = 1
    status: int = 503
    body: Any = None
    retry_after: str | None = None
    delay: float = 0.0
    fraction: float = 0.5
    headers: dict[str, str] = field(default_factory=dict)
    after: bool = False
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {FAULT_KINDS}")
        self.method = self.method.upper()

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        return self.method in ("*", method.upper()) and path.startswith(self.path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


WEBHOOK_FAULT_KINDS = ("drop", "delay", "bad_signature", "unsigned")


@dataclass
class WebhookFault:
    """A misbehaviour of the webhooks the emulator sends, for events in `events` (empty: any).

    kinds: `drop` never sends the delivery (no retry either: the webhook is lost);
    `delay` waits `delay` seconds before sending it; `bad_signature` signs it with another
    secret; `unsigned` sends it without the webhook-* headers.
    The fault fires `times` times (None: forever); `fired` counts how often it did.
    """

    kind: str = "drop"
    events: list[str] = field(default_factory=list)
    times: int | None = 1
    delay: float = 0.0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in WEBHOOK_FAULT_KINDS:
            raise ValueError(
                f"unknown webhook fault kind {self.kind!r}; one of {WEBHOOK_FAULT_KINDS}"
            )

    def matches(self, event: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        return not self.events or event in self.events

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
