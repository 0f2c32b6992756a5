"""Concurrency: 1, 10 and 100 simultaneous runs through ONE GenerationService in one process.

The emulator runs in its own process (bench.emulator), so neither its CPU nor its event loop is
charged here. Reported per batch: wall time of the whole batch over one run's wall time, CPU
seconds per run of this process (Python) and of its children (ffmpeg), the emulator's CPU, each
run's added latency, and the event loop's worst lag (a 10 ms ticker's largest overshoot).
"""

from __future__ import annotations

import asyncio
import functools
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.emulator import EmulatorProcess
from bench.proposed import make_service
from bench.stats import p50, p95
from services.events import TERMINAL_STATUSES
from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.settings import DEFAULT_VERSION, Settings

QUEUE_SECONDS = 0.2
TICK = 0.01
ORACLE_RETRY = 0.05
STREAM_POLL_SECONDS = 0.05  # the emulator's default: 100 open streams at 10 ms would eat a core


@dataclass
class Batch:
    runs: int
    stream: bool
    run_seconds: float
    client: str = "ours"
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
            "client": self.client,
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


Outcome = tuple[float, str | None]  # (seconds from request to audio on disk, error)


async def _ours(service: GenerationService, token: str, seed: int) -> Outcome:
    request = GenerationRequest(prompt="bench: concurrency", seed=seed)
    start = time.perf_counter()
    final = None
    async for update in service.generate(request, token=token, owner=None):
        final = update
    elapsed = time.perf_counter() - start
    if final is None or final.status != "succeeded" or not final.audio_path:
        return elapsed, f"{getattr(final, 'status', None)}: {getattr(final, 'error', None)}"
    return elapsed, None


async def _oracle(
    base_url: str, token: str, run_seconds: float, workdir: Path, seed: int
) -> Outcome:
    """The floor: a client that knows when the run ends. It creates, sleeps until just after the
    end, reads the prediction (again every ORACLE_RETRY until it is final), downloads the file
    and writes it: the fewest requests at the best moments, with no checks and no library."""
    auth = {"Authorization": f"Bearer {token}"}
    payload = GenerationRequest(prompt="bench: concurrency", seed=seed).to_api_input()
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=120, verify=False) as http:
        return await _oracle_run(http, auth, payload, start, run_seconds, workdir / f"{seed}.wav")


async def _oracle_run(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    payload: dict[str, object],
    start: float,
    run_seconds: float,
    dest: Path,
) -> Outcome:
    response = await http.post(
        "/v1/predictions", json={"version": DEFAULT_VERSION, "input": payload}, headers=auth
    )
    prediction = response.json()
    end = start + QUEUE_SECONDS + run_seconds + ORACLE_RETRY / 2
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    while prediction.get("status") not in TERMINAL_STATUSES:
        prediction = (await _get(http, f"/v1/predictions/{prediction['id']}", auth)).json()
        if prediction.get("status") not in TERMINAL_STATUSES:
            await asyncio.sleep(ORACLE_RETRY)
    if prediction["status"] != "succeeded":
        return time.perf_counter() - start, str(prediction.get("error"))
    data = (await _get(http, prediction["output"], auth)).content
    await asyncio.to_thread(dest.write_bytes, data)
    return time.perf_counter() - start, None


async def _get(http: httpx.AsyncClient, url: str, auth: dict[str, str]) -> httpx.Response:
    """GET, once more if the server dropped the idle keep-alive connection meanwhile (uvicorn
    closes one after 5 s idle, and the oracle sleeps through the whole run)."""
    try:
        return await http.get(url, headers=auth)
    except httpx.TransportError:
        return await http.get(url, headers=auth)


async def _ticker(stop: asyncio.Event, batch: Batch) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        batch.loop_lag_max = max(batch.loop_lag_max, time.perf_counter() - before - TICK)


async def _batch(run_one: Callable[[int], Awaitable[Outcome]], batch: Batch, seed0: int) -> None:
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stop, batch))
    start = time.perf_counter()
    results = await asyncio.gather(*(run_one(seed0 + i) for i in range(batch.runs)))
    batch.wall = time.perf_counter() - start
    stop.set()
    await ticker
    for elapsed, error in results:
        batch.added.append(elapsed - QUEUE_SECONDS - batch.run_seconds)
        if error:
            batch.failed += 1
            batch.errors.append(error)


def _measure(emulator: EmulatorProcess, batch: Batch, job: Callable[[], Awaitable[None]]) -> Batch:
    emulator.reset()
    self0, kids0 = _cpu()
    emu0 = emulator.cpu_seconds()
    asyncio.run(job())
    self1, kids1 = _cpu()
    batch.cpu_self, batch.cpu_children = self1 - self0, kids1 - kids0
    batch.cpu_emulator = emulator.cpu_seconds() - emu0
    batch.requests = len(emulator.requests())
    return batch


def run_floor(emulator: EmulatorProcess, counts: list[int], run_seconds: float) -> list[Batch]:
    """The oracle client's batches: what this emulator and machine allow at best."""
    emulator.configure(
        stream=True,
        queue_seconds=QUEUE_SECONDS,
        run_seconds=run_seconds,
        stream_poll_seconds=STREAM_POLL_SECONDS,
    )
    batches = []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as scratch:
        for count in counts:
            batch = Batch(count, True, run_seconds, client="oracle")

            run_one = functools.partial(
                _oracle, emulator.base_url, emulator.token, run_seconds, Path(scratch)
            )
            job = functools.partial(_batch, run_one, batch, 90_000)
            batches.append(_measure(emulator, batch, job))
    return batches


def run_concurrency(
    emulator: EmulatorProcess,
    counts: list[int],
    run_seconds: float,
    streams: list[bool],
    variant: str = "current",
) -> list[Batch]:
    """Every count with every stream setting, one fresh library each; warm-up run first."""
    batches: list[Batch] = []
    seed = 50_000
    for stream in streams:
        emulator.configure(
            stream=stream,
            queue_seconds=QUEUE_SECONDS,
            run_seconds=run_seconds,
            stream_poll_seconds=STREAM_POLL_SECONDS,
        )
        for count in counts:
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
                    service = make_service(settings, library, variant)
                    run_one = functools.partial(_ours, service, emulator.token)
                    emulator.configure(run_seconds=0.1)
                    asyncio.run(_batch(run_one, Batch(1, stream, 0.1), seed))  # warm-up
                    emulator.configure(run_seconds=run_seconds)
                    batch = Batch(count, stream, run_seconds)
                    job = functools.partial(_batch, run_one, batch, seed + 1)
                    batches.append(_measure(emulator, batch, job))
                    seed += count + 1
    return batches
