"""Prototypes of the fixes the benchmarks propose, applied from outside for measurement only.

`python -m bench --variant proposed` runs our client with these; the default variant runs the
code as it is. Nothing here changes services/: each fix is meant to be made there by its owner,
and this module only shows what it would gain. The fixes (see the report in issue #5):

1. tls: one SSL context for every ReplicateClient. httpx builds a new one per client
   (`ssl.create_default_context()` + loading the CA bundle: ~20 ms of CPU on this machine), and
   GenerationService makes a client per run, on the event loop, before the create is sent.
2. wav_check: check a WAV output from its RIFF header in-process instead of two ffmpeg processes
   (ffprobe + a full decode: ~150-200 ms, nearly all of it ffmpeg's own start-up). PCM needs no
   decoding: a well-formed header whose data chunk is all present is playable audio of a known
   length. Anything else (mp3, odd WAV) still goes through ffmpeg.
3. file_off_loop: file the audio (copy + two fsyncs) and clean the scratch folder in a worker
   thread instead of on the event loop.
4. short_wait: `Prefer: wait=1` instead of 5, so that a longer run's status and progress reach
   the page after 1 s instead of 5 s (a musicgen run never ends within 5 s anyway).
5. seed_schedule: give the poll schedule the progress reading that the create's answer already
   carried, so that the first poll yields a token rate and the next poll lands at the run's end
   (without it, a run the create's wait did not finish is polled 1.6 s apart until the end).
   In services/follow.py `_poll`, right after `schedule = PollSchedule(policy)`:
   `if tracker.progress: schedule.next_poll(time.monotonic(), tracker.status, tracker.progress,
   tracker.progress_step)`. Here it is patched into services.follow for the whole process.
6. fewer_writes: mirror a run's progress into the library only when its status, seed or start
   time changes, or at most every PROGRESS_WRITE_SECONDS for the logs, instead of one SQLite
   write transaction (a fresh connection each) on the event loop for every log line.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ssl
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from services import audio as audio_module
from services import follow
from services.backend import Backend
from services.events import RunUpdate
from services.generation import GenerationService, output_url
from services.library import Library, RunRecord
from services.replicate_client import ReplicateClient
from services.request import GenerationRequest
from services.settings import Settings

FIXES = ("tls", "wav_check", "file_off_loop", "short_wait", "seed_schedule", "fewer_writes")
_TRACKER: contextvars.ContextVar[Any] = contextvars.ContextVar("bench_tracker", default=None)
PROGRESS_WRITE_SECONDS = 2.0


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def wav_header(path: Path) -> tuple[float, int, int] | None:
    """(seconds, channels, sample rate) of a complete PCM WAV from its header; None if it is
    not one or its data is cut off."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        byte_rate = channels = rate = 0
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk, length = struct.unpack("<4sI", fh.read(8))
            if chunk == b"fmt ":
                fmt = fh.read(16)
                if len(fmt) < 16:
                    return None
                tag, channels, rate, byte_rate = struct.unpack("<HHII", fmt[:12])
                if tag not in (1, 3, 0xFFFE) or not (channels and rate and byte_rate):
                    return None
            elif chunk == b"data":
                if not byte_rate or pos + 8 + length > size:
                    return None  # no format before the data, or the data is cut off
                return length / byte_rate, channels, rate
            pos += 8 + length + (length & 1)
    return None


class _SeededSchedule(follow.PollSchedule):
    """A PollSchedule that starts from the tracker's reading (set by _seeded_poll)."""

    def __init__(self, policy: follow.FollowPolicy):
        super().__init__(policy)
        tracker = _TRACKER.get()
        if tracker is not None and tracker.progress is not None:
            step = getattr(tracker, "progress_step", 1)
            self.next_poll(time.monotonic(), tracker.status, tracker.progress, step)


_ORIGINAL_POLL = follow._poll


async def _seeded_poll(source: Any, tracker: Any, *args: Any) -> AsyncIterator[RunUpdate]:
    _TRACKER.set(tracker)  # each run is its own task, so its own context
    async for update in _ORIGINAL_POLL(source, tracker, *args):
        yield update


def _patch_follow() -> None:
    follow.PollSchedule = _SeededSchedule  # type: ignore[misc]
    follow._poll = _seeded_poll  # type: ignore[assignment]


def check_output_fast(path: Any, expected_seconds: float, *, tolerance: float = 1.0) -> Any:
    """check_output, answering complete PCM WAVs from the header; everything else via ffmpeg."""
    header = wav_header(Path(path))
    if header is None or header[0] < expected_seconds - tolerance:
        return audio_module.check_output(path, expected_seconds, tolerance=tolerance)
    seconds, channels, rate = header
    return audio_module.AudioInfo(
        seconds=seconds,
        channels=channels,
        sample_rate=rate,
        codec="pcm",
        format="wav",
        size_bytes=Path(path).stat().st_size,
    )


class ProposedService(GenerationService):
    """GenerationService with the chosen fixes applied (prototype, measurement only)."""

    def __init__(self, settings: Settings, library: Library, fixes: tuple[str, ...] = FIXES):
        self._fixes = set(fixes)
        self._written: dict[str, tuple[Any, float]] = {}
        if "seed_schedule" in self._fixes:
            _patch_follow()
        super().__init__(settings, library, backend_factory=self._backend)

    def _record_progress(self, run_id: str, update: RunUpdate, logs: list[str]) -> None:
        if "fewer_writes" not in self._fixes:
            super()._record_progress(run_id, update, logs)
            return
        # The state lives here only because this is a prototype: in generation.py it belongs
        # in _follow_and_file's locals.
        key = (update.status, update.seed, bool(update.prediction.get("started_at")))
        last_key, last_at = self._written.get(run_id, (None, 0.0))
        now = time.monotonic()
        if key != last_key or update.finished or now - last_at >= PROGRESS_WRITE_SECONDS:
            self._written[run_id] = (key, now)
            super()._record_progress(run_id, update, logs)
        if update.finished:
            self._written.pop(run_id, None)

    def _backend(self, token: str) -> Backend:
        transport = None
        if "tls" in self._fixes:
            transport = httpx.AsyncHTTPTransport(verify=shared_ssl_context())
        return ReplicateClient(
            token,
            base_url=self._settings.base_url,
            version=self._settings.version,
            wait_seconds=1 if "short_wait" in self._fixes else 5,
            transport=transport,
        )

    async def _download_output(
        self, backend: Backend, record: RunRecord, prediction: Mapping[str, Any]
    ) -> Path:
        if not self._fixes & {"wav_check", "file_off_loop"}:
            return await super()._download_output(backend, record, prediction)
        url = output_url(prediction)
        if url is None:
            return await super()._download_output(backend, record, prediction)
        request = GenerationRequest.from_dict(record.request)
        fmt = "mp3" if url.split("?")[0].endswith(".mp3") else request.output_format
        check: Callable[..., Any] = (
            check_output_fast if "wav_check" in self._fixes else audio_module.check_output
        )
        off_loop = "file_off_loop" in self._fixes
        workdir = Path(tempfile.mkdtemp(dir=self._scratch_dir()))
        try:
            dest = await backend.download(url, workdir / f"out.{fmt}")
            info = await asyncio.to_thread(check, dest, float(request.duration))
            attach = functools.partial(
                self._library.attach_audio, record.id, dest, fmt=fmt, seconds=info.seconds
            )
            stored = await asyncio.to_thread(attach) if off_loop else attach()
        finally:
            import shutil

            if off_loop:
                await asyncio.to_thread(shutil.rmtree, workdir, True)
            else:
                shutil.rmtree(workdir, True)
        path = self._library.audio_file(stored)
        assert path is not None
        return path


def make_service(settings: Settings, library: Library, variant: str) -> GenerationService:
    """The service as it is ("current"), or with every proposed fix ("proposed")."""
    if variant == "current":
        return GenerationService(settings, library)
    if variant == "proposed":
        return ProposedService(settings, library)
    if variant.startswith("proposed:"):  # e.g. proposed:tls,wav_check
        fixes = tuple(f for f in variant.split(":", 1)[1].split(",") if f)
        unknown = set(fixes) - set(FIXES)
        if unknown:
            raise ValueError(f"unknown fixes {sorted(unknown)}; choose from {FIXES}")
        return ProposedService(settings, library, fixes)
    raise ValueError(f"unknown variant {variant!r}")
