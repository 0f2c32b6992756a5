"""Settings read once from the environment by the composition root (app.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.cost import DEFAULT_GPU_PRICE_PER_SECOND

DEFAULT_BASE_URL = "https://api.replicate.com"
# meta/musicgen on Replicate; its input schema matches replicate/cog-musicgen at commit 647e795.
DEFAULT_VERSION = "671ac645ce5e552cc63a54a2bbff63fcf798043055d2dac5fc9e36a837eedcfb"
DEFAULT_DATA_DIR = "musicgen-data"
ENGINE_MODES = ("auto", "local", "replicate")
DEFAULT_MAX_RUNS_IN_FLIGHT = 4
DEFAULT_QUEUE_MAX_SIZE = 256  # events waiting in Gradio's queue before it says it is busy
# Reads (polls, listings, cancels) each Replicate token may make a minute, all runs together:
# Replicate allows 3,000; a fifth is left for the token's other users (the owner's scripts,
# replicate.com) and for the create lookups that must not wait.
DEFAULT_READS_PER_MINUTE = 2400


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment.

    `api_token` is the optional server-wide token; without it each visitor brings their own.
    `shared` turns on per-browser owners (automatic on Hugging Face Spaces, where SPACE_ID is set).
    `engine` is MUSICGEN_ENGINE (auto, local or replicate); `deployment` (owner/name) sends
    Replicate runs to a deployment instead of the public model's version.
    `public_url` (MUSICGEN_PUBLIC_URL) is where Replicate can reach the app's webhook route; on
    a Hugging Face Space it defaults to https://$SPACE_HOST, so webhooks are on there.
    `reads_per_minute` (MUSICGEN_REPLICATE_READS_PER_MINUTE) is the budget of API reads that all
    runs under one token share (Replicate allows 3,000 a minute).
    Spending: `gpu_price_per_second` (MUSICGEN_GPU_PRICE_PER_SECOND, dollars) prices Replicate
    runs; `max_gpu_seconds_per_visitor` (MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR, per 24 h),
    `max_gpu_seconds_per_day` (MUSICGEN_MAX_GPU_SECONDS_PER_DAY, the whole deployment) and
    `max_runs_in_flight` (MUSICGEN_MAX_RUNS_IN_FLIGHT; 4 by default on a shared deployment, no
    cap on a private one; 0 for no cap) refuse further runs.
    Who a visitor is (ui.identity): `sign_in` shows Hugging Face sign-in (on a Space whose
    README asks for `hf_oauth: true`, which sets OAUTH_CLIENT_ID); `behind_proxy`
    (MUSICGEN_BEHIND_PROXY, on by default on a Space) reads the client's address from the
    proxy's X-Forwarded-For.
    """

    api_token: str | None
    base_url: str
    version: str
    data_dir: Path
    shared: bool
    max_library_mb: float | None
    engine: str = "auto"
    deployment: str | None = None
    gpu_price_per_second: float = DEFAULT_GPU_PRICE_PER_SECOND
    max_gpu_seconds_per_visitor: float | None = None  # per day; None: no daily cap
    max_runs_in_flight: int | None = None  # per visitor; None: no cap
    max_gpu_seconds_per_day: float | None = None  # the whole deployment; None: no cap
    sign_in: bool = False
    behind_proxy: bool = False
    queue_max_size: int = DEFAULT_QUEUE_MAX_SIZE  # MUSICGEN_QUEUE_MAX_SIZE
    # MUSICGEN_PUBLIC_URL: the app's public origin (a Space's URL); Replicate runs then ask for
    # a webhook to it, and polling becomes the fallback.
    public_url: str | None = None
    reads_per_minute: int = DEFAULT_READS_PER_MINUTE
    # MUSICGEN_STEMS_MODEL: the demucs model that splits results into stems.
    stems_model: str = "htdemucs"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        cap = env.get("MUSICGEN_MAX_LIBRARY_MB", "").strip()
        engine = env.get("MUSICGEN_ENGINE", "").strip().lower() or "auto"
        if engine not in ENGINE_MODES:
            raise ValueError(
                f"MUSICGEN_ENGINE must be one of {', '.join(ENGINE_MODES)} (it is {engine!r})."
            )
        deployment = env.get("MUSICGEN_DEPLOYMENT", "").strip().strip("/") or None
        if deployment is not None and deployment.count("/") != 1:
            raise ValueError(f"MUSICGEN_DEPLOYMENT must be owner/name (it is {deployment!r}).")
        return cls(
            api_token=env.get("REPLICATE_API_TOKEN", "").strip() or None,
            base_url=(env.get("REPLICATE_BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/"),
            version=env.get("MUSICGEN_VERSION", "").strip() or DEFAULT_VERSION,
            data_dir=Path(env.get("MUSICGEN_DATA_DIR", "").strip() or DEFAULT_DATA_DIR),
            shared=_flag(env.get("MUSICGEN_SHARED")) or bool(env.get("SPACE_ID")),
            max_library_mb=float(cap) if cap else None,
            engine=engine,
            deployment=deployment,
            public_url=_public_url(env.get("MUSICGEN_PUBLIC_URL", ""))
            or _space_url(env.get("SPACE_HOST", "")),
            reads_per_minute=_reads_per_minute(env),
            stems_model=env.get("MUSICGEN_STEMS_MODEL", "").strip() or "htdemucs",
            **_spending(env, shared=_flag(env.get("MUSICGEN_SHARED")) or bool(env.get("SPACE_ID"))),
            **_visitors(env),
        )


def _public_url(text: str) -> str | None:
    """MUSICGEN_PUBLIC_URL without its trailing slash, or None when unset."""
    url = text.strip().rstrip("/")
    if not url:
        return None
    if not url.startswith(("https://", "http://")) or "?" in url or "#" in url:
        raise ValueError(f"MUSICGEN_PUBLIC_URL must be an http(s) URL (it is {text.strip()!r}).")
    return url


def _space_url(host: str) -> str | None:
    """A Hugging Face Space's public origin from its SPACE_HOST (e.g. owner-name.hf.space)."""
    host = host.strip().strip("/")
    if not host or any(c in host for c in "/?#@ "):
        return None
    return f"https://{host}"


def _reads_per_minute(env: Mapping[str, str]) -> int:
    value = _number(env, "MUSICGEN_REPLICATE_READS_PER_MINUTE")
    if value is None:
        return DEFAULT_READS_PER_MINUTE
    if value < 60:
        raise ValueError(
            f"MUSICGEN_REPLICATE_READS_PER_MINUTE must be at least 60 (it is {value:g})."
        )
    return int(value)


def _number(env: Mapping[str, str], name: str) -> float | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number (it is {text!r}).") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative (it is {text!r}).")
    return value


def _spending(env: Mapping[str, str], *, shared: bool) -> dict[str, Any]:
    """The price and spending limits, from their environment variables."""
    price = _number(env, "MUSICGEN_GPU_PRICE_PER_SECOND")
    runs = _number(env, "MUSICGEN_MAX_RUNS_IN_FLIGHT")
    if runs is None:
        runs = DEFAULT_MAX_RUNS_IN_FLIGHT if shared else 0
    return {
        "gpu_price_per_second": DEFAULT_GPU_PRICE_PER_SECOND if price is None else price,
        "max_gpu_seconds_per_visitor": _number(env, "MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR"),
        "max_gpu_seconds_per_day": _number(env, "MUSICGEN_MAX_GPU_SECONDS_PER_DAY"),
        "max_runs_in_flight": (DEFAULT_MAX_RUNS_IN_FLIGHT if runs is None else (int(runs) or None)),
    }


def _visitors(env: Mapping[str, str]) -> dict[str, Any]:
    """How visitors are told apart (sign-in on a Space with OAuth, the proxy's client address)
    and how many events may wait in Gradio's queue."""
    on_space = bool(env.get("SPACE_ID"))
    proxy = env.get("MUSICGEN_BEHIND_PROXY", "").strip()
    queue = _number(env, "MUSICGEN_QUEUE_MAX_SIZE")
    return {
        # Gradio's LoginButton off a Space mocks sign-in with this machine's own HF account
        # (and fails without one): it is shown only where the Space's OAuth app exists.
        "sign_in": on_space and bool(env.get("OAUTH_CLIENT_ID", "").strip()),
        "behind_proxy": _flag(proxy) if proxy else on_space,
        "queue_max_size": DEFAULT_QUEUE_MAX_SIZE if queue is None else max(1, int(queue)),
    }
