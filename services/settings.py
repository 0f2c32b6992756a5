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


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment.

    `api_token` is the optional server-wide token; without it each visitor brings their own.
    `shared` turns on per-browser owners (automatic on Hugging Face Spaces, where SPACE_ID is set).
    `engine` is MUSICGEN_ENGINE (auto, local or replicate); `deployment` (owner/name) sends
    Replicate runs to a deployment instead of the public model's version.
    `public_url` (MUSICGEN_PUBLIC_URL) is where Replicate can reach the app's webhook route.
    Spending: `gpu_price_per_second` (MUSICGEN_GPU_PRICE_PER_SECOND, dollars) prices Replicate
    runs; `max_gpu_seconds_per_visitor` (MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR, per 24 h) and
    `max_runs_in_flight` (MUSICGEN_MAX_RUNS_IN_FLIGHT; 4 by default on a shared deployment, no
    cap on a private one; 0 for no cap) refuse further runs.
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
    # MUSICGEN_PUBLIC_URL: the app's public origin (a Space's URL); Replicate runs then ask for
    # a webhook to it, and polling becomes the fallback.
    public_url: str | None = None
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
            public_url=_public_url(env.get("MUSICGEN_PUBLIC_URL", "")),
            stems_model=env.get("MUSICGEN_STEMS_MODEL", "").strip() or "htdemucs",
            **_spending(env, shared=_flag(env.get("MUSICGEN_SHARED")) or bool(env.get("SPACE_ID"))),
        )


def _public_url(text: str) -> str | None:
    """MUSICGEN_PUBLIC_URL without its trailing slash, or None when unset."""
    url = text.strip().rstrip("/")
    if not url:
        return None
    if not url.startswith(("https://", "http://")) or "?" in url or "#" in url:
        raise ValueError(f"MUSICGEN_PUBLIC_URL must be an http(s) URL (it is {text.strip()!r}).")
    return url


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
        "max_runs_in_flight": (DEFAULT_MAX_RUNS_IN_FLIGHT if runs is None else (int(runs) or None)),
    }
