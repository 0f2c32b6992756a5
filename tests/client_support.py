"""Shared pieces of the client and follower tests: a client aimed at the emulator, test audio."""

from __future__ import annotations

import array
import math
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from services.events import RunUpdate
from services.replicate import ReplicateClient
from services.replicate.follow import FollowPolicy
from services.replicate.retry import CreateCheck, RetryPolicy
from tests.emulator import MUSICGEN_VERSION, Emulator

# Quick retries and polls so a test's emulator run (a fraction of a second) is followed briskly.
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.02, max_delay=0.1)
# An unclear create is settled by three looks at the listing 0.15 s apart.
FAST_CREATE_CHECK = CreateCheck(listings=3, interval=0.15)
FAST_DOWNLOAD_RETRY = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2)
FAST_FOLLOW = FollowPolicy(
    first_poll=0.05,
    progress_interval=0.1,
    idle_interval=0.05,
    starting_max=0.2,
    loading_max=0.2,
    settle=0.02,
    end_interval=0.05,
    stream_backoff=0.05,
)


def make_client(emulator: Emulator, **options: Any) -> ReplicateClient:
    """A client for the emulator's valid token with quick test timings (overridable)."""
    settings: dict[str, Any] = {
        "base_url": emulator.base_url,
        "version": MUSICGEN_VERSION,
        "retry": FAST_RETRY,
        "follow_policy": FAST_FOLLOW,
        "create_check": FAST_CREATE_CHECK,
        "download_retry": FAST_DOWNLOAD_RETRY,
    }
    settings.update(options)
    token = settings.pop("token", emulator.token)
    return ReplicateClient(token, **settings)


async def collect(updates: AsyncIterator[RunUpdate]) -> list[RunUpdate]:
    return [update async for update in updates]


def all_lines(updates: list[RunUpdate]) -> list[str]:
    return [line for update in updates for line in update.new_logs]


def write_wav(path: Path, seconds: float, *, rate: int = 32000, channels: int = 1) -> Path:
    """A real 16-bit PCM tone (440 Hz) of the given length."""
    frames = int(seconds * rate)
    samples = array.array(
        "h",
        (
            int(8000 * math.sin(2 * math.pi * 440 * (i // channels) / rate))
            for i in range(frames * channels)
        ),
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path
