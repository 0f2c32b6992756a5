"""Run one long CPU job (a separation, a transcription) in a worker thread, with progress and
cancel, for the event loop: progress readings stream out, cancelling the consumer stops the job."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.errors import StudioError

T = TypeVar("T")
POLL_S = 0.25  # how often a waiting page hears the job's progress


class JobCanceled(StudioError):
    """The visitor stopped the job; nothing was kept."""


@dataclass
class Job(Generic[T]):
    """What a job reports as it goes: a share done (0..1) and a short note; the result last."""

    done: float = 0.0
    note: str = ""
    result: T | None = None


class JobControl:
    """What the worker sees: report progress, and learn (by an exception) that it was stopped."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.done = 0.0
        self.note = ""

    def report(self, done: float, note: str = "") -> None:
        """Record progress; raises JobCanceled once the job was asked to stop."""
        if self.cancel.is_set():
            raise JobCanceled("Stopped: nothing was kept.")
        self.done = min(1.0, max(self.done, done))
        if note:
            self.note = note


async def follow_job(work: Callable[[JobControl], T]) -> AsyncIterator[Job[T]]:
    """`work(control)` in a thread; yields its progress while it runs, then one Job with the
    result. Cancelling the consumer asks the worker to stop and waits until it has."""
    control = JobControl()
    task = asyncio.ensure_future(asyncio.to_thread(work, control))
    try:
        yield Job(0.0, "Starting…")  # the page answers the click at once, however short the job
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL_S)
            if done:
                yield Job(1.0, control.note, task.result())
                return
            yield Job(control.done, control.note)
    finally:
        if not task.done():
            control.cancel.set()
            # The worker stops at its next progress report; nothing half-written is kept.
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: a JobCanceled is the expected end
