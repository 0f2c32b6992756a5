"""`LocalEngine`: MusicGen in this process, one pass at a time, behind the `Engine` interface.

Runs wait in a fair queue (`fair_queue`: visitors take turns, each with a capped number of
waiting runs) served by one worker thread (one device, one model pass at a time: a second pass
would only halve the speed of both). Each pass makes a batch: the run whose turn it is and
every waiting run that fits in the same `generate` call (`batch.batch_key`), up to
`max_batch` rows; a group of variations always goes whole. Each row keeps its own seed,
settings, length, progress, previews and cancel (`synth.synthesize_batch`). The worker loads
each checkpoint once and keeps it for every later run and visitor. It reports through each run's
asyncio queue, filled from the thread with `call_soon_threadsafe`, so the event loop never
waits on the model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from services.audio import MeasuredClip, check_output
from services.engines.local.audio_io import write_audio
from services.engines.local.batch import batch_key, default_max_batch
from services.engines.local.checkpoints import KNOWN_CHECKPOINTS, Device, choose_device, describe
from services.engines.local.config import LocalConfig
from services.engines.local.fair_queue import FairQueue, QueueFull
from services.engines.local.loader import MELODY_TYPE, LoadedModel, load
from services.engines.local.models import LoadStatus, ModelCache
from services.engines.local.synth import Canceled, Hooks, Row, SynthResult, synthesize_batch
from services.engines.local.zerogpu import GpuCalls, synthesize_batch_on_gpu
from services.engines.protocol import LOCAL, Engine, EngineRun, Turn
from services.errors import FieldError, StudioError
from services.events import Progress, RunUpdate
from services.library.records import RunRecord
from services.musicgen import COHERENT_MAX_SECONDS, GenerationRequest

log = logging.getLogger(__name__)

CANCELED_MESSAGE = "Canceled by you."
LOST_MESSAGE = "This run is no longer running on this machine (the app was restarted while it ran)."
# Finished runs remembered so a late cancel can answer "succeeded"; older ones are forgotten.
REMEMBERED_RUNS = 1000
HUB_PREFIX = "facebook/musicgen-"
# A run waits this long after it arrives before a pass starts, so that runs started at the same
# moment (visitors' clicks, a group's takes) go in one pass: little next to a take's seconds. (0.1 s
# was measured too short on a loaded 2-core machine: the 2nd of 4 clicks made at once arrived
# after the 1st had started alone, and the other three waited a whole take.)
GATHER_S = 0.25


@dataclass(eq=False)
class _Job:
    """One run's live state, shared by the event loop and the worker thread."""

    run: EngineRun
    request: GenerationRequest
    seed: int
    workdir: Path
    loop: asyncio.AbstractEventLoop
    notes: tuple[str, ...]
    turn: Turn = field(default_factory=Turn)
    place: int = 0  # its place in the queue as last told (0: not waiting)
    last: Progress | None = None  # its latest progress, to show where a cancel stopped it
    loading: bool = False  # fetching or loading its checkpoint (which a cancel can't stop)
    ending: threading.Lock = field(default_factory=threading.Lock)
    updates: asyncio.Queue[RunUpdate] = field(default_factory=asyncio.Queue)
    canceled: threading.Event = field(default_factory=threading.Event)
    done: concurrent.futures.Future[str] = field(default_factory=concurrent.futures.Future)

    def emit(self, update: RunUpdate) -> None:
        """Hand `update` to the follower; safe from any thread. Nothing follows the end."""
        with self.ending:
            if not self.done.done():
                self._put(update)

    def finish(self, update: RunUpdate) -> bool:
        """End the run with `update`, unless it has already ended; True if this ended it."""
        with self.ending:
            if self.done.done():
                return False
            self._put(update)
            self.done.set_result(update.status)
            return True

    def _put(self, update: RunUpdate) -> None:
        # A closed loop means nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.updates.put_nowait, update)


class LocalEngine:
    """MusicGen through Hugging Face `transformers`, on this machine's GPU or CPU."""

    def __init__(self, config: LocalConfig | None = None) -> None:
        self.config = config or LocalConfig()
        self._lock = threading.Condition()  # guards the queue, the jobs and the worker
        self._queue: FairQueue[_Job] = FairQueue(self.config.max_queued_per_visitor, GATHER_S)
        self._jobs: dict[str, _Job] = {}
        self._finished: OrderedDict[str, str] = OrderedDict()
        self._worker: threading.Thread | None = None
        self._busy = 0  # runs in the pass under way
        self._closed = False
        self._models = ModelCache(self._load, lambda: self.config.models_on(self._device_name()))
        self._device: Device | None = None
        self._gpu = GpuCalls(self.config.zero_gpu)

    # -- what the page and the service know beforehand ---------------------------------------

    @property
    def name(self) -> str:
        return LOCAL

    @property
    def label(self) -> str:
        return "This machine"

    def model_choices(self) -> Mapping[str, str]:
        choices = dict(KNOWN_CHECKPOINTS)
        for configured in (self.config.default_model, self.config.melody_model):
            choices.setdefault(configured, describe(configured))
        return choices

    def default_model(self) -> str:
        return self.config.default_model

    def resolve_model(self, model_version: str) -> str | None:
        """The checkpoint `model_version` names, or None if unknown.

        Empty means the default; Replicate's short names (e.g. "stereo-melody-large") are
        accepted for the facebook/musicgen-* checkpoint of the same name.
        """
        name = model_version.strip()
        if not name:
            return self.config.default_model
        if name in self.model_choices():
            return name
        if f"{HUB_PREFIX}{name}" in KNOWN_CHECKPOINTS:
            return f"{HUB_PREFIX}{name}"
        return None

    def check(self, request: GenerationRequest) -> list[FieldError]:
        errors: list[FieldError] = []
        if self.resolve_model(request.model_version) is None:
            listed = ", ".join(self.model_choices())
            errors.append(
                FieldError(
                    "model_version",
                    f"This machine has no model called “{request.model_version}”. "
                    f"Choose one of: {listed}.",
                )
            )
        if request.multi_band_diffusion:
            errors.append(
                FieldError(
                    "multi_band_diffusion",
                    "Multi-band diffusion is not available on this machine. Turn it off, or "
                    "make this run on Replicate.",
                )
            )
        if request.duration > COHERENT_MAX_SECONDS:
            errors.append(
                FieldError(
                    "duration",
                    f"On this machine one run makes at most {COHERENT_MAX_SECONDS} s (the "
                    "model's own limit). Make a shorter piece and extend it for more.",
                )
            )
        return errors

    # -- runs ----------------------------------------------------------------------------------

    def admit(self, turn: Turn) -> None:
        """Refuse a visitor who already has their cap of runs waiting (nothing is stored yet)."""
        with self._lock:
            if not self._queue.room_for(turn.visitor, turn.group):
                raise StudioError(self._full_message())

    async def start(
        self,
        request: GenerationRequest,
        *,
        workdir: Path,
        clip: MeasuredClip | None = None,
        turn: Turn | None = None,
    ) -> EngineRun:
        """Queue `request` in `turn`'s line; it starts when its turn comes and the device is free.

        The model reads the clip's samples itself (`clip`'s measure is not needed).
        """
        errors = self.check(request)
        if errors:
            raise StudioError("\n".join(str(e) for e in errors))
        device = await asyncio.to_thread(self._resolve_device)
        checkpoint, notes = await asyncio.to_thread(self._choose_checkpoint, request)
        seed = (
            request.seed if request.seed not in (None, 0, -1) else secrets.randbelow(2**31 - 1) + 1
        )
        assert seed is not None
        run = EngineRun(
            id=uuid.uuid4().hex,
            engine=LOCAL,
            checkpoint=checkpoint,
            device=device.name,
            engine_state={"seed": seed},
        )
        turn = turn or Turn()
        job = _Job(run, request, seed, workdir, asyncio.get_running_loop(), notes, turn)
        with self._lock:
            if self._closed:
                raise StudioError("The local engine is shutting down; try again in a moment.")
            try:
                self._queue.push(turn.visitor, job, group=turn.group, size=turn.group_size)
            except QueueFull:
                raise StudioError(self._full_message()) from None
            self._jobs[run.id] = job
            # Turns ahead of this one: the entries before it, plus the pass under way (or, when
            # idle, the worker is about to take the first entry and that one isn't waiting).
            entries = self._queue.entries()
            ahead = next(i for i, e in enumerate(entries) if job in e.items)
            waiting = ahead + (1 if self._busy else 0)
            if waiting > 0:
                job.place = waiting
                job.emit(self._queued(job, waiting))
            self._ensure_worker()
            self._lock.notify_all()
        return run

    async def follow(
        self, run: EngineRun, *, started: float, workdir: Path
    ) -> AsyncIterator[RunUpdate]:
        job = self._jobs.get(run.id)
        if job is None:
            status = self._finished.get(run.id)
            yield RunUpdate(
                status="failed",
                prediction_id=run.id,
                error=LOST_MESSAGE if status is None else f"This run already ended ({status}).",
                elapsed=time.monotonic() - started,
            )
            return
        while True:
            update = await job.updates.get()
            if update.finished:  # its follower has the end: the live state can go
                with self._lock:
                    self._jobs.pop(run.id, None)
            yield dataclasses.replace(update, elapsed=time.monotonic() - started)
            if update.finished:
                return

    async def cancel(self, run: EngineRun) -> str:
        """Take a waiting run out of the queue, or stop a running one (within one step)."""
        with self._lock:
            job = self._jobs.get(run.id)
            if job is None:
                return self._finished.get(run.id, "canceled")
            if job.done.done():
                return job.done.result()
            if self._queue.remove(job):
                self._retire(job)
                job.finish(self._canceled(job))
                self._announce_positions()
                return "canceled"
            job.canceled.set()
            # It ends now. A download or load can't stop midway (it goes on for later runs;
            # the worker sees the flag before generating); in a pass, the worker drops this
            # row at its next step while the other rows go on to their end.
            stopped = self._canceled(job)
            if job.last is not None:  # where it stopped, so the page can show it
                stopped = dataclasses.replace(stopped, progress=job.last)
            job.finish(stopped)
        return await asyncio.wrap_future(job.done)

    async def resume(self, record: RunRecord, *, workdir: Path) -> EngineRun | None:
        """Make a run left in flight again: exactly the same music when its seed is known."""
        if record.seed is None:
            return None
        request = GenerationRequest.from_dict(dict(record.request)).replace(seed=record.seed)
        return await self.start(request, workdir=workdir)

    async def aclose(self) -> None:
        """Nothing per visitor: the model stays loaded for everyone."""

    def shutdown(self, timeout: float = 10.0) -> None:
        """At process end: drop waiting runs, stop the running one, let the worker finish."""
        with self._lock:
            self._closed = True
            for job in self._queue.clear():
                self._retire(job)
                job.finish(self._canceled(job))
            for job in self._jobs.values():
                job.canceled.set()
            self._lock.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def preload(self, checkpoint: str | None = None) -> LoadedModel:
        """Load a checkpoint now (blocking), e.g. at start-up or before a benchmark."""
        return self._model(checkpoint or self.config.default_model, lambda line: None)

    def warm_up(self) -> threading.Thread:
        """Load the default checkpoint in the background (at the app's start); a run that
        needs it meanwhile waits for it, saying so. A failure is only logged: the first run
        tries again and tells its musician why."""

        def load_default() -> None:
            try:
                self.preload()
            except StudioError as err:  # worded for the operator already (offline, no disk)
                log.warning("Loading %s at start failed: %s", self.config.default_model, err)
            except Exception:
                log.warning("Loading %s at start failed", self.config.default_model, exc_info=True)

        thread = threading.Thread(target=load_default, name="musicgen-warm-up", daemon=True)
        thread.start()
        return thread

    def load_status(self) -> LoadStatus | None:
        """How the latest checkpoint load went or goes (None before any)."""
        return self._models.status

    # -- the worker ------------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="musicgen-local", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    limit = self.config.max_batch or default_max_batch(self._resolve_device().name)
                    jobs = self._queue.take(limit, self._fits)
                    if jobs:
                        break
                    # Nothing ready: sleep until a run arrives, or a group stops waiting for
                    # its missing takes.
                    self._lock.wait(self._queue.next_deadline(time.monotonic()))
                self._busy = len(jobs)
                self._announce_positions()
            try:
                self._run_batch(jobs)
            finally:
                with self._lock:
                    self._busy = 0
                    for job in jobs:
                        self._retire(job)

    def _hooks(self, job: _Job) -> Hooks:
        """How one row of a pass reports to its own follower (on the worker thread)."""
        run_id = job.run.id

        def say(line: str) -> None:
            job.emit(RunUpdate(status="processing", prediction_id=run_id, new_logs=(line,)))

        def progress(done: int, total: int) -> None:
            if job.last is None or done != job.last.done:
                job.last = Progress(done, total)
                job.emit(RunUpdate(status="processing", prediction_id=run_id, progress=job.last))

        def preview(path: Path) -> None:
            job.emit(RunUpdate(status="processing", prediction_id=run_id, preview_path=str(path)))

        return Hooks(progress=progress, preview=preview, log=say, canceled=job.canceled)

    def _run_batch(self, jobs: list[_Job]) -> None:
        """One pass: every run of `jobs` to its terminal update; never raises."""
        hooks = {job.run.id: self._hooks(job) for job in jobs}
        together = (
            (f"Made in one pass with {len(jobs) - 1} other take(s) (a batch of {len(jobs)}).",)
            if len(jobs) > 1
            else ()
        )
        for job in jobs:
            job.emit(
                RunUpdate(
                    status="processing",
                    prediction_id=job.run.id,
                    new_logs=(*job.notes, f"Using seed {job.seed}", *together),
                    seed=job.seed,
                )
            )

        def say(line: str) -> None:
            for job in jobs:
                hooks[job.run.id].log(line)

        try:
            for job in jobs:
                job.loading = True
            try:
                loaded = self._model(jobs[0].run.checkpoint, say)
            finally:
                for job in jobs:
                    job.loading = False
            rows = [job for job in jobs if not job.canceled.is_set()]
            for job in jobs:
                if job.canceled.is_set():
                    job.finish(self._canceled(job))
            if self._gpu.enabled:  # ZeroGPU: no callbacks cross into its worker
                takes = [(job.request, job.seed, job.workdir) for job in rows]
                requests = [job.request for job in rows]
                results = self._gpu.run(synthesize_batch_on_gpu, requests, loaded, takes, 0.0)
            else:
                results = synthesize_batch(
                    loaded,
                    [Row(job.request, job.seed, job.workdir, hooks[job.run.id]) for job in rows],
                    preview_seconds=self.config.preview_seconds,
                    preview_lead_seconds=self.config.preview_lead_seconds,
                )
        except StudioError as why:
            for job in jobs:
                job.finish(self._failed(job, str(why)))
            return
        except Exception as why:  # the musician sees a sentence; the server log keeps the rest
            log.exception("local pass of %s failed", [job.run.id for job in jobs])
            for job in jobs:
                job.finish(self._failed(job, f"The local engine failed: {why}"))
            return
        for job, result in zip(rows, results, strict=True):
            self._file(job, result)

    def _file(self, job: _Job, result: SynthResult | Exception) -> None:
        """End one row: its audio written and checked, or why it has none."""
        try:
            if isinstance(result, Exception):
                raise result
            fmt = job.request.output_format
            path = write_audio(
                result.samples,
                job.workdir / f"out.{fmt}",
                sampling_rate=result.sampling_rate,
                fmt=fmt,
            )
            check_output(path, job.request.duration)
        except Canceled:
            stopped = self._canceled(job)
            if job.last is not None:  # where it stopped, so the page can show it
                stopped = dataclasses.replace(stopped, progress=job.last)
            job.finish(stopped)
            return
        except StudioError as why:
            job.finish(self._failed(job, str(why)))
            return
        except Exception as why:  # the musician sees a sentence; the server log keeps the rest
            log.exception("local run %s failed", job.run.id)
            job.finish(self._failed(job, f"The local engine failed: {why}"))
            return
        total = job.last.total if job.last is not None else 0
        job.finish(
            RunUpdate(
                status="succeeded",
                prediction_id=job.run.id,
                seed=job.seed,
                audio_path=str(path),
                progress=Progress(total, total),
                predict_time=result.predict_time,
                realtime_factor=result.predict_time / result.seconds,
            )
        )

    def _model(self, checkpoint: str, say: Callable[[str], None]) -> LoadedModel:
        """The loaded checkpoint, loading it on first use (other callers wait for that load)."""
        return self._models.get(checkpoint, say)

    def _load(self, checkpoint: str, say: Callable[[str], None]) -> LoadedModel:
        melody = checkpoint == self.config.melody_model != self.config.default_model
        setting = "MUSICGEN_LOCAL_MELODY_MODEL" if melody else "MUSICGEN_LOCAL_MODEL"
        return load(checkpoint, self._resolve_device(), say, setting=setting)

    def _device_name(self) -> str:
        return self._resolve_device().name

    # -- helpers ---------------------------------------------------------------------------------

    def _resolve_device(self) -> Device:
        if self._device is None:
            self._device = choose_device(self.config.device, self.config.precision)
        return self._device

    def _choose_checkpoint(self, request: GenerationRequest) -> tuple[str, tuple[str, ...]]:
        """The checkpoint to run, and a log note when a melody clip switched it."""
        checkpoint = self.resolve_model(request.model_version) or self.config.default_model
        if request.uses_melody and not _is_melody(checkpoint):
            melody = self.config.melody_model
            note = (
                f"{checkpoint} can't follow a melody: this run uses {melody} to follow your clip."
            )
            return melody, (note,)
        return checkpoint, ()

    def _announce_positions(self) -> None:
        """Tell every waiting run its new place: its entry's turn (caller holds the lock).

        On an idle device the first entry is about to start (it only gathers the runs started
        with it): it has no place to show.
        """
        first = 1 if self._busy else 0
        for place, entry in enumerate(self._queue.entries(), start=first):
            for waiting in entry.items:
                if place and waiting.place != place:
                    waiting.place = place
                    waiting.emit(self._queued(waiting, place))

    def _full_message(self) -> str:
        cap = self.config.max_queued_per_visitor
        return (
            f"You already have {cap} run{'s' if cap != 1 else ''} waiting for this machine, the "
            f"most one visitor may have waiting (MUSICGEN_LOCAL_MAX_QUEUED_PER_VISITOR={cap}). "
            "Wait for one to start, or cancel one. Nothing was stored."
        )

    def _fits(self, a: _Job, b: _Job) -> bool:
        """Whether two waiting runs can share one pass."""
        return batch_key(a.run.checkpoint, a.request) == batch_key(b.run.checkpoint, b.request)

    def _retire(self, job: _Job) -> None:
        """Remember how a run ended (caller holds the lock).

        Its live state stays until its follower has read the end (a run canceled while
        queued may not have been followed yet); runs nobody follows are dropped oldest first.
        """
        self._finished[job.run.id] = job.done.result() if job.done.done() else "canceled"
        while len(self._finished) > REMEMBERED_RUNS:
            self._finished.popitem(last=False)
        ended = [key for key, other in self._jobs.items() if other.done.done()]
        for key in ended[: max(0, len(ended) - REMEMBERED_RUNS)]:
            del self._jobs[key]

    @staticmethod
    def _queued(job: _Job, place: int) -> RunUpdate:
        return RunUpdate(
            status="starting",
            prediction_id=job.run.id,
            queue_position=place,
            new_logs=(f"Queued (position {place})",),
        )

    @staticmethod
    def _canceled(job: _Job) -> RunUpdate:
        return RunUpdate(
            status="canceled", prediction_id=job.run.id, seed=job.seed, error=CANCELED_MESSAGE
        )

    @staticmethod
    def _failed(job: _Job, message: str) -> RunUpdate:
        return RunUpdate(status="failed", prediction_id=job.run.id, seed=job.seed, error=message)


def _is_melody(checkpoint: str) -> bool:
    """Whether a checkpoint can follow a melody: its config for folders, its name otherwise."""
    config = Path(checkpoint).expanduser() / "config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text()).get("model_type") == MELODY_TYPE)
        except (OSError, ValueError):
            return False
    return "melody" in checkpoint.rsplit("/", 1)[-1]


if TYPE_CHECKING:  # mypy proves LocalEngine is an Engine (the seam the service calls)
    _engine: Engine = LocalEngine()
