"""What the library holds about one run, and the rules of its rows: owners, statuses, secrets."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.musicgen import GenerationRequest

STATUSES = (
    "pending",  # written before the prediction is created
    "starting",
    "processing",
    # The run succeeded but its audio is not filed yet: fetched again while its URL lives.
    "downloading",
    "succeeded",  # only once the audio is stored in the library
    "failed",
    "canceled",
    "aborted",
    "lost",  # the run's output is gone (expired or removed by Replicate) before it was stored
)
IN_FLIGHT_STATUSES = frozenset({"pending", "starting", "processing", "downloading"})
# What an entry is. Runs (made by an engine, resumed after a restart): a take; a part of a long
# piece; one take of a group of variations; the raw take a loop is cut from. Compositions (made
# by the studio from runs, listed in the history with their runs inside): the rest.
RUN_KINDS = ("take", "part", "variation", "loop-source")
# Runs shown inside their composition rather than as entries of their own.
INNER_KINDS = ("part", "variation", "loop-source")
FINISHED_STATUSES = frozenset(STATUSES) - IN_FLIGHT_STATUSES
LOGS_TAIL_CHARS = 4096
REDACTED = "[redacted]"

# Replicate tokens ("r8_" + 37 characters), and anything sent as an Authorization value.
_TOKEN_TEXT = re.compile(
    r"\br8_[A-Za-z0-9]{8,}|(?i:\b(bearer|token)(\s+|=|:\s*))[A-Za-z0-9_\-.]{20,}"
)


def check_owner(owner: str | None) -> None:
    """Refuse an owner that is neither None (a local install) nor an identity string."""
    # An empty identity would silently become a shared bucket for every broken browser.
    if owner is not None and (not isinstance(owner, str) or not owner.strip()):
        raise ValueError("owner must be None (local install) or a non-empty identity string")


def owner_clause(owner: str | None, column: str = "owner") -> tuple[str, list[Any]]:
    """The SQL condition (" AND owner = ?") and its argument that keep a query to `owner`'s
    rows; nothing for None (everyone's)."""
    return ("", []) if owner is None else (f" AND {column} = ?", [owner])


def check_status(status: str) -> None:
    """Refuse a status the library does not know."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")


def scrub_text(text: str) -> str:
    """`text` with anything that looks like an API token replaced by [redacted]."""

    def repl(m: re.Match[str]) -> str:
        return f"{m.group(1)}{m.group(2)}{REDACTED}" if m.group(1) else REDACTED

    return _TOKEN_TEXT.sub(repl, text)


def clean_request(request: dict[str, Any]) -> dict[str, Any]:
    """A copy of `request` without token-like keys and with token-like text scrubbed."""
    clean: dict[str, Any] = {}
    for key, value in request.items():
        if "token" in str(key).lower():
            continue
        if isinstance(value, dict):
            value = clean_request(value)
        elif isinstance(value, str):
            value = scrub_text(value)
        clean[str(key)] = value
    return clean


def logs_tail(text: str) -> str:
    """The last LOGS_TAIL_CHARS of `text`, cut at a line start when possible, scrubbed."""
    text = scrub_text(text)
    if len(text) <= LOGS_TAIL_CHARS:
        return text
    tail = text[-LOGS_TAIL_CHARS:]
    newline = tail.find("\n")
    return tail[newline + 1 :] if 0 <= newline < len(tail) - 1 else tail


def to_epoch(value: float | str | None) -> float | None:
    """Epoch seconds from a number or an API timestamp ("2024-05-01T10:00:00.123456789Z")."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if stamp.tzinfo is None:  # the API always says UTC; treat a naive stamp the same way
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class RunRecord:
    """One run in the library. Times are epoch seconds (UTC)."""

    id: str
    owner: str | None
    request: dict[str, Any]
    prediction_id: str | None
    status: str
    created_at: float
    started_at: float | None
    completed_at: float | None
    predict_time: float | None
    seed: int | None
    error: str | None
    logs_tail: str
    audio_path: str | None
    audio_format: str | None
    audio_seconds: float | None
    audio_bytes: int | None
    parent_id: str | None
    favourite: bool
    source: str
    data_removed: bool
    engine: str = "replicate"
    checkpoint: str | None = None
    device: str | None = None
    realtime_factor: float | None = None
    kind: str = "take"
    compose: dict[str, Any] | None = None
    cost_usd: float | None = None
    bpm: float | None = None
    key: str | None = None
    stems: dict[str, Any] | None = None
    midi: dict[str, Any] | None = None

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt") or "")

    @property
    def model_version(self) -> str | None:
        return self.request.get("model_version")

    @property
    def duration(self) -> int | None:
        return self.request.get("duration")

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT_STATUSES

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def has_audio(self) -> bool:
        return self.audio_path is not None

    def generation_request(self) -> GenerationRequest:
        """The request again, e.g. to reuse its settings."""
        return GenerationRequest.from_dict(self.request)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, times as ISO 8601 strings."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["request"] = dict(self.request)
        for name in ("created_at", "started_at", "completed_at"):
            data[name] = iso(data[name])
        return data

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        return cls(
            id=row["id"],
            owner=row["owner"],
            request=json.loads(row["request"]),
            prediction_id=row["prediction_id"],
            status=row["status"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
            predict_time=row["predict_time"],
            seed=row["seed"],
            error=row["error"],
            logs_tail=row["logs_tail"],
            audio_path=row["audio_path"],
            audio_format=row["audio_format"],
            audio_seconds=row["audio_seconds"],
            audio_bytes=row["audio_bytes"],
            parent_id=row["parent_id"],
            favourite=bool(row["favourite"]),
            source=row["source"],
            data_removed=bool(row["data_removed"]),
            engine=row["engine"],
            checkpoint=row["checkpoint"],
            device=row["device"],
            realtime_factor=row["realtime_factor"],
            kind=row["kind"],
            compose=json.loads(row["compose"]) if row["compose"] else None,
            cost_usd=row["cost_usd"],
            bpm=row["bpm"],
            key=row["key"],
            stems=json.loads(row["stems"]) if row["stems"] else None,
            midi=json.loads(row["midi"]) if row["midi"] else None,
        )
