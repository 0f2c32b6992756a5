"""Client-added latency and HTTP requests per run: our service beside the official client.

Each run's processing time on the emulator is known exactly (queue_seconds + run_seconds), so
"added" = end-to-end time (request sent -> audio on disk; for ours also checked and filed in the
library) minus that known time.

The runs of one client and duration overlap (to keep the wall time sane) but start STAGGER apart,
so no two finish at the same moment and the work at a run's end never competes with another's.
Each run carries a unique seed so that every request the emulator records is traced to its run.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.emulator import STREAM_POLL_SECONDS, EmulatorProcess
from bench.proposed import make_service
from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.settings import DEFAULT_VERSION, Settings

QUEUE_SECONDS = 0.2
# Each run's queue time is QUEUE_SECONDS plus a jitter in [0, QUEUE_JITTER), the same sequence for
# every client: a poll grid (the official client polls every 0.5 s) is then not in one fixed phase
# with every run's end, as it is not with real runs of random length.
QUEUE_JITTER = 0.5
AUDIO_SECONDS = 8  # the model's default duration: the output is 8 s of stereo WAV (1 MB)
STAGGER = 0.3  # seconds between starts of runs of the same duration
PROGRESS_STEPS = 20  # the emulator logs progress every 5 % of the run
OURS = "ours"
OFFICIAL_WAIT = "official create+wait"
OFFICIAL_RUN = "official run()"
CLIENTS = (OURS, OFFICIAL_WAIT, OFFICIAL_RUN)


@dataclass
class RunSample:
    client: str
    stream: bool
    run_seconds: float
    seed: int
    queue: float = QUEUE_SECONDS
    e2e: float = 0.0
    added: float = 0.0
    prediction_id: str | None = None
    requests: float = 0.0
    request_kinds: dict[str, float] = field(default_factory=dict)
    # ours only: when progress readings reached the caller, seconds after the request, and
    # the share of the run each one showed
    progress_at: list[float] = field(default_factory=list)
    progress_shown: list[float] = field(default_factory=list)
    progress_gap: float | None = None
    # the longest time between two of this run's polls while it was processing (from the
    # emulator's own record of the requests)
    poll_gap: float | None = None
    error: str | None = None


def make_request(seed: int, duration: int) -> GenerationRequest:
    return GenerationRequest(prompt="bench: lo-fi piano loop", duration=duration, seed=seed)


def progress_gap(sample: RunSample) -> float | None:
    """The longest time the caller's progress was stale: a newer reading had been printed and
    was not yet shown.

    The emulator prints reading j (of PROGRESS_STEPS) exactly `queue + run * j / PROGRESS_STEPS`
    after the create. Just before each refresh the page showed the previous reading; the one
    after it had been printed since some moment, and the page was that much behind. (A poll that
    finds no new reading shows nothing new, but nothing newer existed: the page was current.)
    """
    if sample.client != OURS:
        return None
    period = sample.run_seconds / PROGRESS_STEPS
    end = sample.queue + sample.run_seconds
    shown = 0  # readings shown so far
    worst = 0.0
    refreshes = sorted(zip(sample.progress_at, sample.progress_shown, strict=True))
    for at, share in [*refreshes, (end, 1.0)]:
        due = sample.queue + (shown + 1) * period  # the first reading not yet shown
        if due < min(at, end) and shown + 1 < PROGRESS_STEPS:
            worst = max(worst, min(at, end) - due)
        shown = max(shown, round(share * PROGRESS_STEPS))
    return worst


# ---- one run, per client ---------------------------------------------------------------------


async def _ours_one(
    service: GenerationService,
    token: str,
    sample: RunSample,
    duration: int,
    delay: float,
    set_queue: Callable[[float], object],
) -> None:
    await asyncio.sleep(delay)
    await asyncio.to_thread(set_queue, sample.queue)
    request = make_request(sample.seed, duration)
    start = time.perf_counter()
    final = None
    last_done = None
    async for update in service.generate(request, token=token, owner=None):
        if update.progress is not None and update.progress.done != last_done:
            last_done = update.progress.done
            sample.progress_at.append(time.perf_counter() - start)
            sample.progress_shown.append(update.progress.fraction)
        final = update
    sample.e2e = time.perf_counter() - start
    if final is None or final.status != "succeeded" or not final.audio_path:
        sample.error = f"{getattr(final, 'status', None)}: {getattr(final, 'error', None)}"
    sample.prediction_id = getattr(final, "prediction_id", None)


def _download(output: Any, client: Any, dest: Path) -> None:
    """Fetch an output as the official client does: FileOutput.read(), through its own httpx
    client. (It wraps only https: and data: URLs; the emulator's are http:, so wrap them here.)
    """
    from replicate.helpers import FileOutput

    if not hasattr(output, "read"):
        output = FileOutput(str(output), client)
    dest.write_bytes(output.read())


def _official_one(
    mode: str,
    base_url: str,
    token: str,
    sample: RunSample,
    duration: int,
    delay: float,
    workdir: Path,
    set_queue: Callable[[float], object],
) -> None:
    import replicate

    time.sleep(delay)
    set_queue(sample.queue)
    payload = make_request(sample.seed, duration).to_api_input()
    client = replicate.Client(api_token=token, base_url=base_url)
    dest = workdir / f"{sample.seed}.wav"
    start = time.perf_counter()
    try:
        if mode == OFFICIAL_WAIT:
            prediction = client.predictions.create(version=DEFAULT_VERSION, input=payload)
            prediction.wait()
            sample.prediction_id = prediction.id
            if prediction.status != "succeeded":
                raise RuntimeError(f"{prediction.status}: {prediction.error}")
            _download(prediction.output, client, dest)
        else:
            output = client.run(f"meta/musicgen:{DEFAULT_VERSION}", input=payload)
            _download(output, client, dest)
        sample.e2e = time.perf_counter() - start
    except Exception as exc:  # a failed run is reported, not fatal to the benchmark
        sample.e2e = time.perf_counter() - start
        sample.error = f"{type(exc).__name__}: {exc}"


# ---- batches -----------------------------------------------------------------------------------


def run_batch(
    emulator: EmulatorProcess,
    client: str,
    stream: bool,
    run_seconds: float,
    runs: int,
    audio_seconds: int,
    seed_base: int,
    variant: str = "current",
) -> list[RunSample]:
    """`runs` runs of one client, started STAGGER apart so they overlap; a sample per run."""
    emulator.reset()
    emulator.configure(
        stream=stream,
        queue_seconds=QUEUE_SECONDS,
        run_seconds=run_seconds,
        stream_poll_seconds=STREAM_POLL_SECONDS,
    )
    jitter = random.Random(run_seconds)  # the same queue times for every client
    samples = [
        RunSample(
            client,
            stream,
            run_seconds,
            seed_base + n,
            QUEUE_SECONDS + jitter.random() * QUEUE_JITTER,
        )
        for n in range(runs)
    ]
    delays = [n * STAGGER for n in range(runs)]

    def set_queue(seconds: float) -> object:
        return emulator.configure(queue_seconds=seconds)

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as scratch:
        workdir = Path(scratch)
        if client == OURS:
            asyncio.run(
                _ours_batch(emulator, samples, delays, audio_seconds, workdir, variant, set_queue)
            )
        else:
            with ThreadPoolExecutor(max_workers=runs) as pool:
                futures = [
                    pool.submit(
                        _official_one,
                        client,
                        emulator.base_url,
                        emulator.token,
                        sample,
                        audio_seconds,
                        delay,
                        workdir,
                        set_queue,
                    )
                    for sample, delay in zip(samples, delays, strict=True)
                ]
                for future in futures:
                    future.result()
    _attribute_requests(emulator, samples)
    for sample in samples:
        sample.added = sample.e2e - sample.queue - sample.run_seconds
        sample.progress_gap = progress_gap(sample)
    return samples


async def _ours_batch(
    emulator: EmulatorProcess,
    samples: list[RunSample],
    delays: list[float],
    audio_seconds: int,
    workdir: Path,
    variant: str,
    set_queue: Callable[[float], object],
) -> None:
    settings = Settings(
        api_token=None,
        base_url=emulator.base_url,
        version=DEFAULT_VERSION,
        data_dir=workdir,
        shared=False,
        max_library_mb=None,
    )
    with Library(workdir) as library:
        service = make_service(settings, library, variant)
        await asyncio.gather(
            *(
                _ours_one(service, emulator.token, sample, audio_seconds, delay, set_queue)
                for sample, delay in zip(samples, delays, strict=True)
            )
        )


def request_kind(method: str, path: str) -> str:
    if path == "/v1/predictions" and method == "POST":
        return "create"
    if path.startswith("/v1/streams/"):
        return "stream"
    if path.startswith("/v1/predictions/") and method == "GET":
        return "get"
    if path.startswith("/delivery/"):
        return "download"
    if path.startswith("/v1/models/"):
        return "version"
    return f"{method} {path.split('/')[2] if path.count('/') > 1 else path}"


def _attribute_requests(emulator: EmulatorProcess, samples: list[RunSample]) -> None:
    """Count the emulator's recorded requests per run (by seed, prediction id or output key)."""
    by_seed = {s.seed: s for s in samples}
    by_id: dict[str, RunSample] = {}
    by_key: dict[str, RunSample] = {}
    for p in emulator.predictions():
        sample = by_seed.get((p.get("input") or {}).get("seed"))
        if sample is None:
            continue
        by_id[p["id"]] = sample
        sample.prediction_id = sample.prediction_id or p["id"]
        output = p.get("output")
        if isinstance(output, str) and "/delivery/" in output:
            by_key[output.split("/")[-2]] = sample
    counts: dict[int, Counter[str]] = {id(s): Counter() for s in samples}
    polled: dict[int, list[float]] = {id(s): [] for s in samples}
    for r in emulator.requests():
        path, method = r["path"], r["method"]
        kind = request_kind(method, path)
        owner: RunSample | None = None
        if kind == "create":
            owner = by_seed.get(((r.get("json") or {}).get("input") or {}).get("seed"))
        elif kind in ("get", "stream") or path.startswith("/v1/predictions/"):
            owner = by_id.get(path.split("/")[3])
        elif kind == "download":
            owner = by_key.get(path.split("/")[3])
        if owner is not None:
            counts[id(owner)][kind] += 1
            if kind in ("get", "create"):
                polled[id(owner)].append(float(r["time"]))
        else:  # e.g. the model-version lookup, which names no run: shared by all
            for sample in samples:
                counts[id(sample)][kind] += 1 / len(samples)
    for sample in samples:
        kinds = counts[id(sample)]
        sample.request_kinds = dict(kinds)
        sample.requests = sum(kinds.values())
        # Polls while progress flows: from the first reading's print to the end.
        created, *gets = sorted(polled[id(sample)]) or [0.0]
        flowing = sample.queue + sample.run_seconds / PROGRESS_STEPS
        times = [t for t in gets if t - created >= flowing]
        if len(times) > 1:
            sample.poll_gap = max(b - a for a, b in itertools.pairwise(times))


def summarise(samples: list[RunSample]) -> dict[str, Any]:
    from bench.stats import p50, p95

    ok = [s for s in samples if s.error is None]
    gaps = [s.progress_gap for s in ok if s.progress_gap is not None]
    polls = [s.poll_gap for s in ok if s.poll_gap is not None and s.client == OURS]
    kinds: Counter[str] = Counter()
    for s in ok:
        kinds.update(s.request_kinds)
    return {
        "runs": len(samples),
        "failed": len(samples) - len(ok),
        "errors": sorted({s.error for s in samples if s.error})[:5],
        "added_p50": p50([s.added for s in ok]),
        "added_p95": p95([s.added for s in ok]),
        "requests_mean": sum(s.requests for s in ok) / len(ok) if ok else float("nan"),
        "request_kinds_mean": {k: v / len(ok) for k, v in sorted(kinds.items())} if ok else {},
        "progress_gap_max": max(gaps) if gaps else None,
        "progress_gap_p50": p50(gaps) if gaps else None,
        "poll_gap_max": max(polls) if polls else None,
    }


def as_json(samples: list[RunSample]) -> list[dict[str, Any]]:
    return [asdict(s) for s in samples]
