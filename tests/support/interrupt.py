"""Stopping a run part-way as a visitor or a crash would: a closed tab cancels the task that
follows it; a killed process gets no chance to tidy up. Every wait here waits for the run's own
state (with a give-up that fails the test), never for a guessed time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from services.library import Library, RunRecord
from tests.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]
GIVE_UP_S = 30.0

Update = TypeVar("Update")


async def cancel_when(
    updates: AsyncIterator[Update],
    ready: Callable[[list[Update]], bool],
    *,
    on_update: Callable[[Update], None] | None = None,
) -> list[Update]:
    """Follow `updates` in a task (calling `on_update` on each) until `ready(seen)`, then cancel
    that task as a closed tab does; returns the updates it had seen."""
    seen: list[Update] = []

    async def consume() -> None:
        async for update in updates:
            seen.append(update)
            if on_update is not None:
                on_update(update)

    task = asyncio.create_task(consume())
    give_up = time.monotonic() + GIVE_UP_S
    while not ready(seen):
        assert not task.done(), f"the run ended before it was ready to cancel: {seen[-1:]}"
        assert time.monotonic() < give_up, f"never ready to cancel; seen {seen[-1:]}"
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return seen


def run_module(module: str, *args: str) -> subprocess.Popen[str]:
    """`python -m <module> args...` from the repository, its output piped: a run in a process
    of its own, for a test to kill."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=REPO, stdout=subprocess.PIPE, text=True
    )


def start_generation_process(
    emulator: Emulator, data_dir: Path, duration: int, melody: Path | None = None
) -> subprocess.Popen[str]:
    """A run of `duration` s (with `melody`, if given) made in a process of its own
    (tests.support.generate_once), for a test to kill."""
    return run_module(
        "tests.support.generate_once", str(data_dir), emulator.base_url, emulator.token,
        "a run that outlives its process", str(duration), *([str(melody)] if melody else []),
    )  # fmt: skip


def wait_until(condition: Callable[[], object], timeout: float = GIVE_UP_S) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.05)


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL, as a crash or an out-of-memory kill would end it."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def kill_at_second_part(
    process: subprocess.Popen[str], library: Library, kind: str
) -> tuple[RunRecord, list[RunRecord]]:
    """Kill `process` once its composition (an entry of `kind`) has filed its first part and
    its second is on Replicate; returns the entry as the kill left it, and those two parts."""
    entry_ids: list[str] = []
    parts: list[RunRecord] = []

    def second_part_started() -> bool:
        entry_ids[:] = [r.id for r in library.list(None).items if r.kind == kind]
        found = library.children(entry_ids[0]) if entry_ids else []
        parts[:] = [r for r in found if r.kind == "part"]
        return len(parts) == 2 and bool(parts[1].prediction_id)

    wait_until(second_part_started, timeout=60)
    kill(process)
    entry = library.get(entry_ids[0])
    assert entry is not None, f"the {kind} is gone from the library"
    return entry, parts
