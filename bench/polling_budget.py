"""Polling at Space scale (issue #20, item 6): 100 runs in flight under one token.

    python -m bench.polling_budget               # 100 runs of 60 s, polling, then webhooks
    python -m bench.polling_budget --runs 20 --seconds 20   # a quicker look

The generation service (as the app builds it: one pool, one read budget per token) starts
`runs` runs at once on the emulator (in a process of its own, with Replicate's real limits:
3,000 reads and 600 creates a minute), follows them to their end and files their audio. With
`--webhooks` the service gets a public address served on this loopback (the app's own webhook
route), so runs are created with webhooks and polls are only the fallback.

Reported per mode: the most reads the token made in any 60 s (Replicate counts everything
but creates; the target is 2,400 without webhooks and 1,000 with), the mean over the time all
runs were in flight, 429s drawn, runs filed with their audio, and how late each run's end was
noticed (p50, p95, from the emulator's completed_at to the library's filing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from bench.emulator import EmulatorProcess
from bench.stats import markdown_table, p50, p95, secs
from services.generation import GenerationService
from services.library import Library
from services.library.records import to_epoch
from services.musicgen import GenerationRequest
from services.settings import Settings
from ui.webhooks import webhook_routes

QUEUE_SECONDS = 1.0
WINDOW = 60.0
TARGETS = {False: 2400, True: 1000}


@dataclass
class Outcome:
    webhooks: bool
    runs: int
    filed: int = 0
    max_per_minute: int = 0
    mean_per_minute: float = 0.0
    throttled: int = 0
    late: list[float] | None = None
    wall: float = 0.0
    budget: int = 0

    def row(self) -> list[object]:
        target = TARGETS[self.webhooks]
        return [
            "webhooks" if self.webhooks else "polling",
            self.runs,
            f"{self.max_per_minute} (target ≤ {target})",
            f"{self.mean_per_minute:.0f}",
            self.throttled,
            f"{self.filed}/{self.runs}",
            secs(p50(self.late or [])),
            secs(p95(self.late or [])),
            secs(self.wall, 0),
        ]


HEADER = [
    "mode",
    "runs",
    "reads in the busiest minute",
    "reads/min while all in flight",
    "429s",
    "filed",
    "end noticed p50",
    "end noticed p95",
    "wall",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reads(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Replicate counts against the 3,000 reads a minute: every /v1/ request but creates."""
    return [
        r
        for r in requests
        if r["path"].startswith("/v1/")
        and not (r["method"] == "POST" and r["path"] == "/v1/predictions")
    ]


def _busiest_minute(times: list[float]) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] < t - WINDOW:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def _serve_webhooks(service: GenerationService, port: int) -> uvicorn.Server:
    app = Starlette(routes=webhook_routes(service.engines.webhooks))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    return server


async def _run(emulator: EmulatorProcess, data: Path, runs: int, webhooks: bool) -> Outcome:
    port = _free_port()
    env = {
        "MUSICGEN_DATA_DIR": str(data),
        "REPLICATE_BASE_URL": emulator.base_url,
        "REPLICATE_API_TOKEN": emulator.token,
    }
    if webhooks:
        env["MUSICGEN_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    settings = Settings.from_env(env)
    library = Library(data)
    service = GenerationService(settings, library)
    server = await _serve_webhooks(service, port) if webhooks else None
    outcome = Outcome(webhooks, runs, budget=settings.reads_per_minute)

    async def one(seed: int) -> str | None:
        request = GenerationRequest(prompt="bench: a crowd on one token", duration=8, seed=seed)
        final = None
        async for update in service.generate(request, token=None, owner=f"visitor-{seed}"):
            final = update
        return final.run_id if final is not None and final.status == "succeeded" else None

    started = time.monotonic()
    try:
        filed = await asyncio.gather(*(one(seed) for seed in range(runs)))
    finally:
        outcome.wall = time.monotonic() - started
        if server is not None:
            server.should_exit = True
            await asyncio.sleep(0.2)
        await service.engines.aclose()
    outcome.filed = sum(
        1 for run_id in filed if run_id and library.audio_file(library.get(run_id)) is not None
    )
    late = []
    for run_id in filed:
        record = library.get(run_id) if run_id else None
        prediction = _prediction(emulator, record.prediction_id) if record else None
        if record and prediction and prediction.get("completed_at"):
            late.append(to_epoch(record.completed_at) - to_epoch(prediction["completed_at"]))
    outcome.late = late
    library.close()
    return outcome


def _prediction(emulator: EmulatorProcess, pid: str | None) -> dict[str, Any] | None:
    if not pid:
        return None
    return next((p for p in emulator.predictions() if p.get("id") == pid), None)


def measure(runs: int, seconds: float, modes: list[bool]) -> list[Outcome]:
    outcomes = []
    with EmulatorProcess(
        read_limit_per_minute=3000,
        create_limit_per_minute=600,
        queue_seconds=QUEUE_SECONDS,
        run_seconds=seconds,
        stream=False,  # meta/musicgen offers no stream: followed by polls (or webhooks)
    ) as emulator:
        for webhooks in modes:
            emulator.reset()
            with tempfile.TemporaryDirectory(prefix="bench-budget-") as scratch:
                outcome = asyncio.run(_run(emulator, Path(scratch), runs, webhooks))
            requests = emulator.requests()
            reads = _reads(requests)
            times = [r["time"] for r in reads]
            outcome.max_per_minute = _busiest_minute(times)
            outcome.throttled = sum(1 for r in requests if r.get("status") == 429)
            creates = [
                r["time"] for r in requests if r not in reads and r["path"] == "/v1/predictions"
            ]
            if creates:
                # Every run in flight: from the last create to the first run's end.
                lo, hi = max(creates) + QUEUE_SECONDS, max(creates) + QUEUE_SECONDS + seconds * 0.9
                inside = [t for t in times if lo <= t <= hi]
                outcome.mean_per_minute = len(inside) / max(1e-9, hi - lo) * 60
            outcomes.append(outcome)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.polling_budget")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0, help="each run's length")
    parser.add_argument("--only", choices=["polling", "webhooks"], default=None)
    args = parser.parse_args()
    modes = [m == "webhooks" for m in ("polling", "webhooks") if args.only in (None, m)]
    outcomes = measure(args.runs, args.seconds, modes)
    print(markdown_table(HEADER, [o.row() for o in outcomes]))
    with contextlib.suppress(Exception):
        print(f"(budget {outcomes[0].budget} reads a minute per token)")


if __name__ == "__main__":
    main()
