"""One run end to end, on any engine: validate -> start -> follow -> check and file the audio.

Also picks up runs left in flight by an earlier process and imports an account's history.
Cancelling the task that consumes `generate()` cancels the run on its engine: Gradio's
`cancels=` does that for one visitor's session only, so one visitor can never stop another's run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.analysis.filing import measure_filed, warm_up_quietly
from services.audio import CLIP_MAX_SECONDS, MeasuredClip, check_output, measure
from services.cost import Estimate, estimate, free_estimate, run_cost
from services.engines.protocol import LOCAL, REPLICATE, Engine, EngineRules, EngineRun
from services.engines.registry import Engines
from services.engines.replicate.engine import ReplicateEngine, ReplicateModel
from services.errors import (
    AudioError,
    CreateUnclear,
    FieldError,
    RequestInvalid,
    SpendingLimit,
    StudioError,
)
from services.events import TERMINAL_STATUSES, RunUpdate
from services.library import Library, RunNotFound, RunRecord
from services.library.importer import ImportReport, import_account
from services.library.records import INNER_KINDS
from services.musicgen import GenerationRequest
from services.orphans import BEFORE_RECORD_S, FILE_APART, WINDOW_S, OrphanCheck, Stray
from services.run_signals import RunEnd, RunSignals, RunWatch
from services.settings import Settings
from services.validation import check_request, limit_errors, parse_request, warnings

log = logging.getLogger(__name__)
WEB_URL = "https://replicate.com/p/{id}"
LOGS_TAIL_CHARS = 4000
PROGRESS_WRITE_S = 2.0
CANCEL_TIMEOUT_S = 30.0
SPENDING_WINDOW_S = 24 * 3600.0  # the daily GPU-seconds cap counts the last 24 hours
# Runs counted as in flight: younger than Replicate's 30-minute limit with room to spare, so a
# record stranded by a crash (and not yet resumed) never blocks its visitor for good.
IN_FLIGHT_WINDOW_S = 2 * 3600.0
# How long a filed run's result waits for its tempo and key before it is reported without them
# (they are stored when the measurement ends; the first one in a process loads the analysis).
MEASURE_WAIT_S = 30.0
NEVER_STARTED = {
    REPLICATE: "The app stopped before this run reached Replicate; nothing was made.",
    LOCAL: (
        "The app stopped while this machine was making this run, before its seed was known; "
        "nothing was kept. Generate it again."
    ),
}
NO_LOCAL_TO_RESUME = (
    "This run was being made on this machine by an earlier start, and this start has no local "
    "engine to make it again."
)
_REPLICATE_MODEL = ReplicateModel()


class _Canceled:
    """A cancel was requested while the engine's follow was waiting."""


async def _next_unless(
    updates: AsyncIterator[RunUpdate], cancel: asyncio.Event | None
) -> RunUpdate | _Canceled | None:
    """The engine's next update (None at its end), or _Canceled as soon as `cancel` is set.

    The engine's step is interrupted then (a follower asleep until its next poll wakes at
    once); when this call itself is cancelled, so is the step.
    """
    if cancel is None:
        return await anext(updates, None)
    if cancel.is_set():
        return _Canceled()

    async def step() -> RunUpdate | None:
        return await anext(updates, None)

    stepping = asyncio.ensure_future(step())
    waiting = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({stepping, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        if not stepping.done():
            stepping.cancel()
            with contextlib.suppress(asyncio.CancelledError, StudioError):
                await stepping
    if stepping.cancelled() or not stepping.done():
        return _Canceled()
    return stepping.result()


@dataclass(frozen=True)
class PreparedRun:
    """One click's run, checked once on its way down: the request, the engine it was checked
    for, its clip as measured by decoding (never decoded again to upload it) and the notes
    (warnings) to show. Give it to `GenerationService.generate` as it is."""

    request: GenerationRequest
    engine: str
    clip: MeasuredClip | None = None
    notes: tuple[str, ...] = ()


def _end(run_id: str, update: RunUpdate, engine: str) -> RunEnd:
    return RunEnd(
        run_id=run_id,
        status=update.status,
        error=update.error,
        prediction_id=update.prediction_id,
        engine=engine,
    )


class GenerationService:
    """Runs generations for any number of visitors at once; holds no per-visitor state."""

    def __init__(
        self,
        settings: Settings,
        library: Library,
        *,
        local: Engine | None = None,
        engines: Engines | None = None,
        orphan_check: OrphanCheck | None = None,
        measure_takes: bool = False,
    ):
        self._settings = settings
        # Measure every filed take's tempo and key (the app does; most tests need not).
        self._measure_takes = measure_takes
        # The analysis warmed up once, while the first run is made; measurements that
        # outlasted MEASURE_WAIT_S (held so they are not collected).
        self._warm_up: asyncio.Future[None] | None = None
        self._measuring: set[asyncio.Future[None]] = set()
        self._library = library
        self._engines = engines or Engines(settings, local)
        self._orphan_check = orphan_check or OrphanCheck()
        # Orphan sweeps started after unclear creates (held so they are not collected).
        self._sweeps: set[asyncio.Task[list[str]]] = set()
        # The runs this process follows: their cancel requests and their ends.
        self._signals = RunSignals()

    @property
    def engines(self) -> Engines:
        return self._engines

    @property
    def server_token_set(self) -> bool:
        return self._engines.server_token_set

    def _rules(self, engine: str | None) -> EngineRules:
        """What `engine` accepts, known without a token (Replicate's model, or the local one)."""
        name = (engine or "").strip().lower() or self._engines.default_name()
        if name == LOCAL and self._engines.local is not None:
            return self._engines.local
        return _REPLICATE_MODEL

    # -- validation -----------------------------------------------------------------------

    def prepare(self, raw: Mapping[str, Any], engine: str | None = None) -> PreparedRun:
        """Parse and check a form's values for `engine`, including the clip's real length.

        Raises RequestInvalid, listing every problem, before anything is sent.
        """
        rules = self._rules(engine)
        request = parse_request(
            raw, models=rules.model_choices(), default_model=rules.default_model()
        )
        return self.prepare_request(request, engine)

    def prepare_request(self, request: GenerationRequest, engine: str | None = None) -> PreparedRun:
        """Check a request (one built in code, or parsed) for `engine`: see `check`."""
        name = self._rules(engine).name
        clip = self.check(request, engine)
        return PreparedRun(request, name, clip, tuple(warnings(request)))

    async def prepared_for(
        self, run_of: GenerationRequest | PreparedRun, engine: str
    ) -> PreparedRun:
        """`run_of` as it is when it was prepared for `engine`; else checked here (off the loop)."""
        if isinstance(run_of, PreparedRun) and run_of.engine == engine:
            return run_of
        request = run_of.request if isinstance(run_of, PreparedRun) else run_of
        return await asyncio.to_thread(self.prepare_request, request, engine)

    def check(self, request: GenerationRequest, engine: str | None = None) -> MeasuredClip | None:
        """Apply the model's and the engine's rules; raises RequestInvalid with every refusal.

        Returns the clip as measured (decoded once, here), for the run to use as it is.
        """
        rules = self._rules(engine)
        # A request built in code (a composition's part) was never parsed: same limits.
        refused = limit_errors(request, rules.model_choices())
        if refused:
            raise RequestInvalid(refused)
        clip = None
        if request.input_audio:
            try:
                clip = measure(Path(request.input_audio), max_seconds=CLIP_MAX_SECONDS)
            except AudioError as err:
                raise RequestInvalid([FieldError("input_audio", str(err))]) from err
        seconds = clip.info.seconds if clip is not None else None

        def engine_rules(req: GenerationRequest, skip: frozenset[str]) -> list[FieldError]:
            return [e for e in rules.check(req) if e.field not in skip]

        errors = check_request(request, seconds, engine_rules)
        if errors:
            raise RequestInvalid(errors)
        return clip

    # -- one run --------------------------------------------------------------------------

    async def generate(
        self,
        run_of: GenerationRequest | PreparedRun,
        *,
        token: str | None,
        owner: str | None,
        engine: str | None = None,
        parent_run_id: str | None = None,
        kind: str = "take",
        quota_pool: str | None = None,
    ) -> AsyncGenerator[RunUpdate, None]:
        """Run a request on `engine` (None: the default) and yield an update for every change.

        A PreparedRun (from `prepare`) for this engine is used as it is; a bare request is
        checked here first.

        The last update is terminal. Refusals (RequestInvalid, an engine that cannot run here,
        a missing token) are raised before anything is stored or sent. `kind` and
        `parent_run_id` file the run as part of a composition (a part of a long piece, one
        of a group of variations). The spending limits are counted per `owner`, or over every
        owner starting with `quota_pool` (API callers, who have no identity of their own).
        """
        eng = self._engines.open(engine, token)
        try:
            prepared = await self.prepared_for(run_of, eng.name)
            request = prepared.request
            # No await from here to create_pending: two clicks cannot both slip under a limit.
            self.guard(request, owner, eng.name, pool=quota_pool, click=kind not in INNER_KINDS)
        except BaseException:
            await eng.aclose()
            raise
        started = time.monotonic()
        if self._measure_takes and self._warm_up is None:
            self._warm_up = asyncio.ensure_future(asyncio.to_thread(warm_up_quietly))
        # The clip's path is this server's upload folder: the library keeps its own copy.
        stored = {**request.to_dict(), "input_audio": None}
        record = self._library.create_pending(
            owner, stored, parent_id=parent_run_id, engine=eng.name, kind=kind
        )
        watch = self._signals.watch(record.id, owner)
        run: EngineRun | None = None

        def stage(status: str, **kw: Any) -> RunUpdate:
            return RunUpdate(status, run_id=record.id, elapsed=time.monotonic() - started, **kw)

        finished = False
        try:
            with tempfile.TemporaryDirectory(dir=self._scratch_dir()) as tmp:
                workdir = Path(tmp)
                if request.input_audio:
                    yield stage("preparing")
                    await asyncio.to_thread(
                        self._library.keep_input, record.id, Path(request.input_audio)
                    )
                yield stage("creating")
                run = await eng.start(request, workdir=workdir, clip=prepared.clip)
                if run.state.get("unclear_create"):
                    self._sweep_later(token, record)
                self._note_started(record.id, run)
                follow = self._follow_and_file(
                    eng, record.id, request, run, started, workdir, watch
                )
                async for update in follow:
                    finished = update.finished or update.status == "lost"
                    yield update
        except (asyncio.CancelledError, GeneratorExit):
            # A cancelled task, or a consumer that closed the generator mid-run (Gradio may
            # do either): the run must not go on unseen, costing money or a device.
            if not finished:
                await self._stop(eng, record.id, run, watch)
            raise
        except StudioError as err:
            if isinstance(err, CreateUnclear):
                self._sweep_later(token, record)
            with contextlib.suppress(RunNotFound):  # deleted from the history meanwhile
                self._library.update(record.id, status="failed", error=str(err))
            failed = stage("failed", prediction_id=run.id if run else None, error=str(err))
            self._signals.ended(_end(record.id, failed, eng.name))
            yield failed
        finally:
            self._signals.drop(record.id)  # no-op once its end is filed
            with contextlib.suppress(Exception):
                await eng.aclose()

    # -- cancel ---------------------------------------------------------------------------

    def cancel(self, run_id: str, owner: str | None) -> bool:
        """Cancel `owner`'s run `run_id` now: its follower wakes at once, cancels it on its
        engine and files it. False when this process follows no such run (it has ended, or an
        earlier process started it); Gradio's own cancel of the page's event still reaches it.
        """
        return self._signals.request_cancel(run_id, owner)

    def watch_entry(self, entry_id: str, owner: str | None) -> None:
        """A composition's entry (a loop) made of runs of this service: `cancel` and `wait_end`
        reach it too, `link_part` ties its runs to it and `entry_ended` files its end."""
        self._signals.watch(entry_id, owner)

    def link_part(self, entry_id: str, run_id: str) -> None:
        """Run `run_id` is made for entry `entry_id`: a cancel of the entry cancels it too."""
        self._signals.link(entry_id, run_id)

    def entry_ended(self, entry_id: str, status: str, error: str | None = None) -> None:
        """A composition's entry is filed in its final state (see `watch_entry`)."""
        self._signals.ended(RunEnd(run_id=entry_id, status=status, error=error))

    def entry_dropped(self, entry_id: str) -> None:
        """A composition's entry is no longer followed here (no-op once it ended)."""
        self._signals.drop(entry_id)

    async def wait_end(self, run_id: str, owner: str | None) -> RunEnd | None:
        """How `owner`'s run `run_id` ended, as soon as it is filed (no database reads); None
        when this process does not follow it or it is left in flight. Bound it with a timeout.
        """
        return await self._signals.wait_end(run_id, owner)

    # -- cost -----------------------------------------------------------------------------

    def estimate(self, model_version: str, duration: float, engine: str | None = None) -> Estimate:
        """The GPU seconds and price a run would cost, from the library's own measured runs
        of that model, else from published figures; nothing on this machine."""
        rules = self._rules(engine)
        if rules.name == LOCAL:
            return free_estimate()
        model = model_version or rules.default_model()
        rates = self._library.predict_rates(model)
        return estimate(model, duration, self._settings.gpu_price_per_second, rates)

    def guard(
        self,
        request: GenerationRequest,
        owner: str | None,
        engine: str,
        *,
        pool: str | None = None,
        click: bool = True,
    ) -> None:
        """Refuse a run past the visitor's limits (SpendingLimit), before anything is sent.

        Runs in flight count entries of the history (a take, or a whole composition), so only a
        `click` (not a part or take inside a composition already counted) is held to that
        limit; every Replicate run is held to the daily GPU seconds.
        """
        s = self._settings
        now = time.time()
        used, running = self._library.spending(
            owner,
            since=now - SPENDING_WINDOW_S,
            in_flight_since=now - IN_FLIGHT_WINDOW_S,
            pool=pool,
        )
        if click and s.max_runs_in_flight is not None and running >= s.max_runs_in_flight:
            raise SpendingLimit(
                f"You already have {running} runs in progress, the most this server allows at "
                "once. Wait for one to finish, then press Generate again. Nothing was sent."
            )
        cap = s.max_gpu_seconds_per_visitor
        if engine != REPLICATE or cap is None:
            return
        expected = self.estimate(request.model_version, request.duration, engine).gpu_seconds
        if used + expected > cap:
            raise SpendingLimit(
                f"This run (≈ {expected:.0f} s of GPU time) would take you past this server's "
                f"limit of {cap:g} GPU seconds on Replicate per visitor per day (you have used "
                f"{used:.0f} s in the last 24 hours). Try a shorter duration or come back later. "
                "Nothing was sent."
            )

    def _note_started(self, run_id: str, run: EngineRun) -> None:
        """Record the engine's id of the run, what makes it and where, as soon as it exists."""
        prediction = run.state.get("prediction") or {}
        status = prediction.get("status", "starting")
        # A terminal status is recorded by _finish, once the outcome is filed.
        live = {} if status in TERMINAL_STATUSES else {"status": status}
        self._library.update(
            run_id, prediction_id=run.id, checkpoint=run.checkpoint, device=run.device, **live
        )

    def _scratch_dir(self) -> Path:
        scratch = self._settings.data_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch

    async def _stop(
        self, engine: Engine, run_id: str, run: EngineRun | None, watch: RunWatch
    ) -> RunUpdate | None:
        """The one cancel of a run, however it was asked for (the signal, a cancelled or closed
        consumer): a task of the service's, so that it completes even when its caller is
        cancelled meanwhile."""
        if watch.stopping is None:
            cancel = self._cancel_run(engine, run_id, run)
            watch.stopping = asyncio.get_running_loop().create_task(cancel)
        stopped: RunUpdate | None = await asyncio.shield(watch.stopping)
        return stopped

    async def _cancel_run(
        self, engine: Engine, run_id: str, run: EngineRun | None
    ) -> RunUpdate | None:
        """Cancel the run (if it was started), record it as canceled; the terminal update.

        A run that had already succeeded is left in flight instead (None), so that its audio
        is filed: a cancel that came too late must not throw the music away.
        """
        error = "Canceled by you."
        if run is not None:
            try:
                status = await asyncio.wait_for(
                    asyncio.shield(engine.cancel(run)), CANCEL_TIMEOUT_S
                )
                if status == "succeeded":
                    return None
            except (StudioError, TimeoutError) as err:
                error = f"Canceled here, but {engine.label} did not confirm the cancel: {err}"
        with contextlib.suppress(RunNotFound):
            self._library.update(run_id, status="canceled", error=error)
        update = RunUpdate(
            "canceled", run_id=run_id, prediction_id=run.id if run else None, error=error
        )
        self._signals.ended(_end(run_id, update, engine.name))
        return update

    async def _follow_and_file(
        self,
        engine: Engine,
        run_id: str,
        request: GenerationRequest,
        run: EngineRun,
        started: float,
        workdir: Path,
        watch: RunWatch | None = None,
    ) -> AsyncIterator[RunUpdate]:
        """Follow the run of `request`, mirror its changes into the library, then file its audio.

        A cancel requested on `watch` interrupts the engine's follow at once (its wait for the
        next poll or event included), cancels the run and files it.
        """
        logs: list[str] = []
        final: RunUpdate | None = None
        written: tuple[Any, ...] | None = None
        written_at = 0.0
        updates = engine.follow(run, started=started, workdir=workdir)
        while True:
            update = await _next_unless(updates, watch.cancel if watch is not None else None)
            if update is None:
                break
            if isinstance(update, _Canceled):
                assert watch is not None
                stopped = await self._stop(engine, run_id, run, watch)
                if stopped is not None:
                    yield stopped
                    return
                # The cancel came after the run had succeeded: file its audio after all.
                late_updates = self._follow_and_file(engine, run_id, request, run, started, workdir)
                async for late in late_updates:
                    yield late
                return
            logs.extend(update.new_logs)
            ended = update.finished or update.status == "lost"
            facts = (update.status, update.seed, update.prediction.get("started_at"))
            # A write per log line would be a transaction per progress step: new facts are
            # written at once, the growing logs at most every PROGRESS_WRITE_S.
            now = time.monotonic()
            if ended or facts != written or now - written_at >= PROGRESS_WRITE_S:
                self._record_progress(run_id, update, logs)
                written, written_at = facts, now
            if ended:
                final = update
                break
            yield replace(update, run_id=run_id)
        if final is None:  # the engine ended without a verdict
            final = RunUpdate("failed", prediction_id=run.id, error="Lost track of the run.")
        filed = await self._finish(run_id, replace(final, run_id=run_id), engine.name, request)
        self._signals.ended(_end(run_id, filed, engine.name))
        yield filed

    def _record_progress(self, run_id: str, update: RunUpdate, logs: list[str]) -> None:
        changes: dict[str, Any] = {"logs_tail": "\n".join(logs)[-LOGS_TAIL_CHARS:]}
        if not update.finished and update.status != "lost":
            changes["status"] = update.status
        if update.seed is not None:
            changes["seed"] = update.seed
        started_at = update.prediction.get("started_at")
        if started_at:
            changes["started_at"] = started_at
        self._library.update(run_id, **changes)

    def _timing(self, final: RunUpdate, engine: str) -> dict[str, Any]:
        """The run's measured GPU time and what it cost (nothing on this machine)."""
        price = self._settings.gpu_price_per_second if engine == REPLICATE else 0.0
        return {
            "predict_time": final.predict_time,
            "realtime_factor": final.realtime_factor,
            "cost_usd": run_cost(final.predict_time, price),
        }

    async def _finish(
        self, run_id: str, final: RunUpdate, engine: str, request: GenerationRequest
    ) -> RunUpdate:
        """File a finished run of `request`: check and store its audio, or say why it ended."""
        timing = self._timing(final, engine)
        if final.status == "lost":  # paid for, so its GPU time and cost are kept too
            self._library.update(
                run_id, status="lost", error=final.error, data_removed=True, **timing
            )
            return final
        if final.status != "succeeded" or not final.audio_path:
            status = "failed" if final.status == "succeeded" else final.status
            error = final.error or (
                "The run finished without audio." if final.status == "succeeded" else None
            )
            self._library.update(run_id, status=status, error=error, **timing)
            return replace(final, status=status, error=error)
        source = Path(final.audio_path)
        seconds = final.audio_seconds
        if seconds is None:  # the engine did not say it checked the file: check it here
            try:
                info = await asyncio.to_thread(check_output, source, float(request.duration))
            except StudioError as err:
                message = f"The run succeeded but its audio could not be used: {err}"
                self._library.update(run_id, status="failed", error=message, **timing)
                return replace(final, status="failed", error=message, audio_path=None)
            seconds = info.seconds
        fmt = source.suffix.lstrip(".").lower() or request.output_format
        self._library.update(run_id, **timing)
        # Renamed into the library (the scratch folder is beside it) and synced off the event
        # loop: other visitors' runs go on meanwhile.
        stored = await asyncio.to_thread(
            self._library.attach_audio, run_id, source, fmt=fmt, seconds=seconds, move=True
        )
        path = self._library.audio_file(stored)
        assert path is not None
        await self._measure_soon(run_id)
        notes = self._enforce_cap()
        return replace(final, audio_path=str(path), new_logs=final.new_logs + tuple(notes))

    async def _measure_soon(self, run_id: str) -> None:
        """Measure the filed run in a thread; wait for it at most MEASURE_WAIT_S."""
        if not self._measure_takes:
            return
        task = asyncio.ensure_future(asyncio.to_thread(self.measure_filed, run_id))
        done, _ = await asyncio.wait({task}, timeout=MEASURE_WAIT_S)
        if not done:  # the result goes out now; the record gains bpm and key when it ends
            self._measuring.add(task)
            task.add_done_callback(self._measuring.discard)

    def measure_filed(self, run_id: str) -> None:
        """Measure and keep a filed entry's tempo and key (when this service measures takes);
        never raises. CPU work: call it off the event loop."""
        if self._measure_takes:
            measure_filed(self._library, run_id)

    def _enforce_cap(self) -> list[str]:
        removed = self._library.enforce_cap()
        if not removed:
            return []
        return [
            f"Library: removed the {len(removed)} oldest run(s) (not favourites) to stay under "
            f"the {self._settings.max_library_mb:g} MB limit."
        ]

    # -- resume and import ----------------------------------------------------------------

    async def resume_in_flight(
        self, *, token: str | None = None, owner: str | None = None
    ) -> list[str]:
        """Pick up runs an earlier process left in flight; returns the run ids settled.

        Local runs are remade on this machine from their seed. Replicate runs: with a
        server-wide token every owner's are resumed; with a visitor's token, only that
        visitor's (their token is never stored, so only they can resume theirs).
        """
        settled: list[str] = []
        for record in self._library.in_flight():
            if not self._may_resume(record, owner):
                continue
            try:
                engine = self._engines.open(record.engine, token)
            except StudioError:
                if record.engine == LOCAL:
                    with contextlib.suppress(RunNotFound):
                        self._library.update(record.id, status="failed", error=NO_LOCAL_TO_RESUME)
                    settled.append(record.id)
                continue  # Replicate without a token: its owner may bring one later
            try:
                with contextlib.suppress(StudioError):
                    await self._resume_one(engine, record)
                    settled.append(record.id)
            finally:
                await engine.aclose()
        # Runs the account holds that no record learned of (a crash mid-create, a create that
        # got no clear answer, a visitor who gave up meanwhile): filed or canceled now.
        everyone = bool(self._settings.api_token) or not self._settings.shared
        if everyone or owner is not None:  # a visitor's own token sweeps their records only
            with contextlib.suppress(StudioError):
                scope = None if everyone else owner
                settled += await self.sweep_orphans(token=token, owner=scope)
        return settled

    # -- orphans ----------------------------------------------------------------------------

    async def sweep_orphans(
        self, *, token: str | None = None, owner: str | None = None, since: float | None = None
    ) -> list[str]:
        """Find the account's runs made by the studio that no library holds (services.orphans)
        and file them, canceling those whose visitor gave up; returns the library ids filed.

        `owner` limits it to one visitor's records (a visitor's own token); `since` (epoch)
        defaults to orphans.WINDOW_S ago.
        """
        try:
            engine = self._engines.open(REPLICATE, token)
        except StudioError:
            return []
        try:
            if not isinstance(engine, ReplicateEngine):
                return []
            start = time.time() - WINDOW_S if since is None else since
            records = self._library.replicate_runs_since(start - BEFORE_RECORD_S, owner)
            if not records:
                return []
            known = self._library.known_predictions()
            strays = await engine.strays(records, known, start, self._orphan_check)
            return [await self._file_stray(engine, stray) for stray in strays]
        finally:
            await engine.aclose()

    async def _file_stray(self, engine: ReplicateEngine, stray: Stray) -> str:
        """Adopt an orphan into its record (or an entry of its own), stop it if nobody wants
        it, and follow it to its end so that any audio paid for is filed."""
        record = stray.record
        if stray.action == FILE_APART:
            record = self._library.create_pending(
                record.owner, record.request, engine=REPLICATE, source="recovered"
            )
        run = engine.adopt(stray.prediction, record)
        if stray.cancel_first and stray.prediction.get("status") not in TERMINAL_STATUSES:
            with contextlib.suppress(StudioError):
                await engine.cancel(run)
        self._library.update(record.id, prediction_id=run.id, checkpoint=run.checkpoint)
        await self._follow_here(engine, record, run)
        return record.id

    async def _follow_here(
        self, engine: Engine, record: RunRecord, run: EngineRun, workdir: Path | None = None
    ) -> None:
        """Follow a run that no visitor's click is consuming (resumed, adopted) and file it;
        its owner may still cancel it (see `cancel`)."""
        watch = self._signals.watch(record.id, record.owner)
        try:
            with tempfile.TemporaryDirectory(dir=self._scratch_dir()) as tmp:
                folder = workdir or Path(tmp)
                request = GenerationRequest.from_dict(record.request)
                follow = self._follow_and_file(
                    engine, record.id, request, run, time.monotonic(), folder, watch
                )
                async for _ in follow:
                    pass
        finally:
            self._signals.drop(record.id)

    def _sweep_later(self, token: str | None, record: RunRecord) -> None:
        """After an unclear create: look for a stray run of this click once it has landed."""

        async def sweep() -> list[str]:
            await asyncio.sleep(self._orphan_check.delay)
            try:
                return await self.sweep_orphans(
                    token=token, owner=record.owner, since=record.created_at
                )
            except StudioError as err:
                log.warning("Looking for the run of an unclear create failed: %s", err)
                return []

        task = asyncio.get_running_loop().create_task(sweep())
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    async def settle_sweeps(self) -> list[str]:
        """Wait for the orphan sweeps under way; the library ids they filed."""
        filed: list[str] = []
        while self._sweeps:
            for ids in await asyncio.gather(*list(self._sweeps)):
                filed += ids
        return filed

    def _may_resume(self, record: RunRecord, owner: str | None) -> bool:
        """A server token (or this machine) resumes everyone's runs; a visitor's token theirs."""
        if record.engine == LOCAL:
            return owner is None  # the app's own start resumes local runs, once
        if self._settings.api_token or not self._settings.shared:
            return True
        return owner is not None and record.owner == owner

    async def _resume_one(self, engine: Engine, record: RunRecord) -> None:
        with tempfile.TemporaryDirectory(dir=self._scratch_dir()) as tmp:
            workdir = Path(tmp)
            kept = self._library.input_file(record)
            if kept is not None:  # the engine reads the library's copy of the clip
                record = replace(record, request={**record.request, "input_audio": str(kept)})
            run = await engine.resume(record, workdir=workdir)
            if run is None:
                self._library.update(record.id, status="failed", error=NEVER_STARTED[engine.name])
                return
            self._note_started(record.id, run)
            await self._follow_here(engine, record, run, workdir)

    async def import_account(self, *, token: str | None, owner: str | None) -> ImportReport:
        """Add the account's earlier meta/musicgen runs that the library does not have yet."""
        client = self._engines.replicate_client(token)
        try:
            return await import_account(
                client, self._library, owner, version=self._settings.version
            )
        finally:
            await client.aclose()

    # -- reporting ------------------------------------------------------------------------

    def summary(self, run_id: str, owner: str | None) -> dict[str, Any]:
        """The JSON record of a run, as the /generate API and the result panel show it."""
        record = self._library.get(run_id, owner)
        if record is None:
            return {"library_id": run_id, "status": "unknown", "error": "No such run."}
        request = record.request
        return {
            "library_id": record.id,
            "prediction_id": record.prediction_id,
            "status": record.status,
            "seed": record.seed,
            "predict_time": record.predict_time,
            "error": record.error,
            "model_version": request.get("model_version"),
            "duration": request.get("duration"),
            "audio_seconds": record.audio_seconds,
            "output_format": record.audio_format,
            "engine": record.engine,
            "checkpoint": record.checkpoint,
            "device": record.device,
            "realtime_factor": record.realtime_factor,
            "cost_usd": record.cost_usd,
            "bpm": record.bpm,
            "key": record.key,
            "web_url": (
                WEB_URL.format(id=record.prediction_id)
                if record.prediction_id and record.engine == REPLICATE
                else None
            ),
        }
