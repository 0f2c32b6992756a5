"""Concurrency: 1, 10 and 100 simultaneous runs through ONE GenerationService in one process.

The emulator runs in its own process (bench.emulator), so neither its CPU nor its event loop is
charged here. Reported per batch: wall time of the whole batch over one run's wall time, CPU
seconds per run of this process (Python) and of its children (ffmpeg), the emulator's CPU, each
run's added latency, and the event loop's worst lag (a 10 ms ticker's largest overshoot).
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.emulator import EmulatorProcess
from bench.stats import p50, p95
from services.generation import GenerationService
from services.library import Library
from services.request import GenerationRequest
from services.settings import DEFAULT_VERSION, Settings

QUEUE_SECONDS = 0.2
TICK = 0.01


@dataclass
class Batch:
    runs: int
    stream: bool
    run_seconds: float
    wall: float = 0.0
    cpu_self: float = 0.0  # seconds, this process, the whole batch
    cpu_children: float = 0.0  # seconds, ffmpeg and other children, the whole batch
    cpu_emulator: float = 0.0
    added: list[float] = field(default_factory=list)
    loop_lag_max: float = 0.0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "stream": self.stream,
            "run_seconds": self.run_seconds,
            "wall": self.wall,
            "cpu_per_run": (self.cpu_self + self.cpu_children) / self.runs,
            "cpu_self_per_run": self.cpu_self / self.runs,
            "cpu_children_per_run": self.cpu_children / self.runs,
            "cpu_emulator_per_run": self.cpu_emulator / self.runs,
            "added_p50": p50(self.added),
            "added_p95": p95(self.added),
            "added_max": max(self.added) if self.added else None,
            "loop_lag_max": self.loop_lag_max,
            "requests_per_run": self.requests / self.runs,
            "failed": self.failed,
            "errors": self.errors[:5],
        }


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


async def _one(service: GenerationService, token: str, seed: int) -> tuple[float, str | None]:
    request = GenerationRequest(prompt="bench: concurrency", seed=seed)
    start = time.perf_counter()
    final = None
    async for update in service.generate(request, token=token, owner=None):
        final = update
    elapsed = time.perf_counter() - start
    if final is None or final.status != "succeeded" or not final.audio_path:
        return elapsed, f"{getattr(final, 'status', None)}: {getattr(final, 'error', None)}"
    return elapsed, None


async def _ticker(stop: asyncio.Event, batch: Batch) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        batch.loop_lag_max = max(batch.loop_lag_max, time.perf_counter() - before - TICK)


async def _batch(service: GenerationService, token: str, batch: Batch, seed0: int) -> None:
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stop, batch))
    start = time.perf_counter()
    results = await asyncio.gather(*(_one(service, token, seed0 + i) for i in range(batch.runs)))
    batch.wall = time.perf_counter() - start
    stop.set()
    await ticker
    for elapsed, error in results:
        batch.added.append(elapsed - QUEUE_SECONDS - batch.run_seconds)
        if error:
            batch.failed += 1
            batch.errors.append(error)


def run_concurrency(
    emulator: EmulatorProcess, counts: list[int], run_seconds: float, streams: list[bool]
) -> list[Batch]:
    """Every count with every stream setting, one fresh library each; warm-up run first."""
    batches: list[Batch] = []
    seed = 50_000
    for stream in streams:
        emulator.configure(stream=stream, queue_seconds=QUEUE_SECONDS, run_seconds=run_seconds)
        for count in counts:
            emulator.reset()
            with tempfile.TemporaryDirectory(prefix="bench-conc-") as scratch:
                settings = Settings(
                    api_token=None,
                    base_url=emulator.base_url,
                    version=DEFAULT_VERSION,
                    data_dir=Path(scratch),
                    shared=False,
                    max_library_mb=None,
                )
                with Library(Path(scratch)) as library:
                    service = GenerationService(settings, library)
                    warm = Batch(1, stream, run_seconds)
                    emulator.configure(run_seconds=0.1)
                    asyncio.run(_batch(service, emulator.token, warm, seed))
                    emulator.configure(run_seconds=run_seconds)
                    emulator.reset()
                    batch = Batch(count, stream, run_seconds)
                    self0, kids0 = _cpu()
                    emu0 = emulator.cpu_seconds()
                    asyncio.run(_batch(service, emulator.token, batch, seed + 1))
                    self1, kids1 = _cpu()
                    batch.cpu_self, batch.cpu_children = self1 - self0, kids1 - kids0
                    batch.cpu_emulator = emulator.cpu_seconds() - emu0
                    batch.requests = len(emulator.requests())
                    seed += count + 1
            batches.append(batch)
    return batches
