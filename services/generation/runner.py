"""One run end to end, on any engine: start -> follow -> check and file the audio; cancel.

Cancelling the task that consumes `generate()` cancels the run on its engine: Gradio's
`cancels=` does that for one visitor's session only, so one visitor can never stop another's run.
A run no click consumes (resumed, adopted by the recovery) is followed by `follow_here`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.analysis.filing import measure_filed, warm_up_quietly
from services.audio import check_output
from services.cost import run_cost
from services.engines.protocol import REPLICATE, Engine, EngineRun, Turn
from services.engines.registry import Engines
from services.errors import CreateUnclear, StudioError
from services.events import DOWNLOADING, TERMINAL_STATUSES, RunUpdate
from services.generation.policy import Policy, PreparedRun, turn_of
from services.library import Library, RunNotFound, RunRecord
from services.musicgen import GenerationRequest
from services.run_signals import RunEnd, RunSignals, RunWatch
from services.settings import Settings
from services.spending import Ticket

log = logging.getLogger(__name__)
LOGS_TAIL_CHARS = 4000
PROGRESS_WRITE_S = 2.0
CANCEL_TIMEOUT_S = 30.0
# How long a run whose click left during its create waits for the create's answer (to cancel
# the run it made); past it the recovery looks for the run instead.
CREATE_LANDING_S = 30.0
# How long a filed run's result waits for its tempo and key before it is reported without them,
# when no other take's measurement is queued ahead of it (then it does not wait at all). They
# are stored when the measurement ends; the first one in a process loads the analysis.
MEASURE_WAIT_S = 30.0


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


def _end(run_id: str, update: RunUpdate, engine: str) -> RunEnd:
    return RunEnd(
        run_id=run_id,
        status=update.status,
        error=update.error,
        prediction_id=update.prediction_id,
        engine=engine,
    )


class Runner:
    """Runs generations for any number of visitors at once; holds no per-visitor state."""

    def __init__(
        self,
        settings: Settings,
        library: Library,
        engines: Engines,
        policy: Policy,
        on_unclear: Callable[[str | None, RunRecord], None],
        on_left_downloading: Callable[[str | None, str], None],
        measure_takes: bool = False,
    ):
        self._settings = settings
        self._library = library
        self._engines = engines
        self._policy = policy
        # After a create with no clear answer: the recovery looks for its run once it landed.
        self._on_unclear = on_unclear
        # A paid run whose click left while its audio is fetched: the recovery files it.
        self._on_left_downloading = on_left_downloading
        # The runs this process follows: their cancel requests and their ends.
        self._signals = RunSignals()
        # Measure every filed take's tempo and key (the app does; most tests need not).
        self._measure_takes = measure_takes
        # The analysis warmed up once, while the first run is made; the measurements under
        # way (held so they are not collected; a new one queues behind them).
        self._warm_up: asyncio.Future[None] | None = None
        self._measuring: set[asyncio.Future[None]] = set()
        # Tempo and key are measured one take at a time, in a thread of their own: seconds of
        # CPU that a crowd's takes would otherwise pile onto asyncio's few default threads,
        # where every run's preparing, fetching and filing waits behind them.
        self._measurer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="measure")

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
        payer: str | None = None,
        ticket: Ticket | None = None,
        group: Turn | None = None,
    ) -> AsyncGenerator[RunUpdate, None]:
        """Run a request on `engine` (None: the default) and yield an update for every change.

        A PreparedRun (from `prepare`) for this engine is used as it is; a bare request is
        checked here first.

        The last update is terminal. Refusals (RequestInvalid, an engine that cannot run here,
        a missing token) are raised before anything is stored or sent. `kind` and
        `parent_run_id` file the run as part of a composition (a part of a long piece, one
        of a group of variations). The spending caps are counted per `payer` (a signed-in
        account or a client address; None on a local install); a take of a group draws on the
        group's `ticket` (see `Policy.reserve`), which has been held to them already. `group`
        (its `group` and `group_size`) marks runs to be made together where the engine can
        (the takes of a group of variations); an engine's queue takes turns by payer.
        """
        eng = self._engines.open(engine, token)
        try:
            prepared = await self._policy.prepared_for(run_of, eng.name)
            request = prepared.request
            # No await from here to create_pending: two clicks cannot both slip under a cap.
            reserved = self._policy.gpu_estimate(request, eng.name)
            if ticket is None:
                self._policy.guard(request, owner, eng.name, payer=payer)
            turn = turn_of(owner, ticket.payer if ticket is not None else payer, group)
            eng.admit(turn)
        except BaseException:
            await eng.aclose()
            raise
        started = time.monotonic()
        if self._measure_takes and self._warm_up is None:
            loop = asyncio.get_running_loop()
            self._warm_up = loop.run_in_executor(self._measurer, warm_up_quietly)
        # The clip's path is this server's upload folder: the library keeps its own copy.
        stored = {**request.to_dict(), "input_audio": None}
        # The run holds its estimate from now until it is filed with its measured time.
        record = self._library.create_pending(
            owner,
            stored,
            parent_id=parent_run_id,
            engine=eng.name,
            kind=kind,
            payer=ticket.payer if ticket is not None else payer,
            reserved_gpu_s=reserved,
        )
        if ticket is not None:
            ticket.draw(reserved)
        watch = self._signals.watch(record.id, owner)
        run: EngineRun | None = None

        def stage(status: str, **kw: Any) -> RunUpdate:
            return RunUpdate(status, run_id=record.id, elapsed=time.monotonic() - started, **kw)

        finished = downloading = False
        try:
            with tempfile.TemporaryDirectory(dir=self.scratch_dir()) as tmp:
                workdir = Path(tmp)
                if request.input_audio:
                    yield stage("preparing")
                    await asyncio.to_thread(
                        self._library.keep_input, record.id, Path(request.input_audio)
                    )
                yield stage("creating")
                starting = asyncio.ensure_future(
                    eng.start(request, workdir=workdir, clip=prepared.clip, turn=turn)
                )
                try:
                    run = await asyncio.shield(starting)
                except asyncio.CancelledError:
                    # The click left while the create was under way: the run it makes (paid
                    # for from its first second) is waited for, so that it is canceled and
                    # filed below, not left running unseen until the next start's sweep.
                    run = await self._landed(starting, token, record)
                    raise
                self._started(token, record, run)
                follow = self._follow_and_file(
                    eng, record.id, request, run, started, workdir, watch
                )
                async for update in follow:
                    finished = update.finished or update.status == "lost"
                    downloading = update.status == DOWNLOADING
                    yield update
        except (asyncio.CancelledError, GeneratorExit):
            # A cancelled task, or a consumer that closed the generator mid-run (Gradio may
            # do either): the run must not go on unseen, costing money or a device. One that
            # is paid for and only waits for its audio is fetched on in the background.
            if downloading:
                self._on_left_downloading(token, record.id)
            elif not finished and await self._stop(eng, record.id, run, watch) is None:
                # It had succeeded before the cancel reached it: paid for, so filed all the
                # same, in the background (not only at the next start).
                self._on_left_downloading(token, record.id)
            raise
        except StudioError as err:
            if isinstance(err, CreateUnclear):
                self._on_unclear(token, record)
            with contextlib.suppress(RunNotFound):  # deleted from the history meanwhile
                self._library.update(record.id, status="failed", error=str(err))
            failed = stage("failed", prediction_id=run.id if run else None, error=str(err))
            self._signals.ended(_end(record.id, failed, eng.name))
            yield failed
        finally:
            self._signals.drop(record.id)  # no-op once its end is filed
            if ticket is not None:
                ticket.ended()
            with contextlib.suppress(Exception):
                await eng.aclose()

    async def _landed(
        self, starting: asyncio.Future[EngineRun], token: str | None, record: RunRecord
    ) -> EngineRun | None:
        """The run a create under way makes (None if it made none), its prediction recorded;
        waited for at most CREATE_LANDING_S. A create with no clear answer by then is looked
        for in the background (the recovery adopts and cancels its run)."""
        try:
            run = await asyncio.wait_for(asyncio.shield(starting), CREATE_LANDING_S)
        except (CreateUnclear, TimeoutError):
            # Its answer may still come: retrieve it then (unheard, it would be logged).
            starting.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._on_unclear(token, record)
            return None
        except StudioError:
            return None  # refused: nothing was made
        self._started(token, record, run)
        return run

    def _started(self, token: str | None, record: RunRecord, run: EngineRun) -> None:
        """A run the engine made: one whose create was unclear is looked for in the background;
        its follower's signals are set up."""
        if run.unclear_create:
            self._on_unclear(token, record)
        self.note_started(record.id, run)

    # -- cancel ---------------------------------------------------------------------------

    def follows(self, run_id: str) -> bool:
        """Whether this process follows run `run_id` now (a click, a download carried on)."""
        return self._signals.get(run_id) is not None

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

    def note_started(self, run_id: str, run: EngineRun) -> None:
        """Record the engine's id of the run, what makes it and where, as soon as it exists."""
        # A terminal status is recorded by _finish, once the outcome is filed.
        live = {} if run.status in TERMINAL_STATUSES else {"status": run.status}
        self._library.update(
            run_id, prediction_id=run.id, checkpoint=run.checkpoint, device=run.device, **live
        )

    def scratch_dir(self) -> Path:
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
            facts = (update.status, update.seed, update.prediction.get("started_at"), update.error)
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
        if update.status == DOWNLOADING:  # "downloading (try n)", for the page and the API
            changes["error"] = update.error
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
        self._library.update(run_id, error=None, **timing)  # no "downloading (try n)" left
        # Renamed into the library (the scratch folder is beside it) and synced off the event
        # loop: other visitors' runs go on meanwhile.
        stored = await asyncio.to_thread(
            self._library.attach_audio, run_id, source, fmt=fmt, seconds=seconds, move=True
        )
        path = self._library.audio_file(stored)
        assert path is not None
        await self._measure_soon(run_id)
        notes = self._enforce_cap(run_id)
        return replace(final, audio_path=str(path), new_logs=final.new_logs + tuple(notes))

    async def _measure_soon(self, run_id: str) -> None:
        """Measure the filed run in the measuring thread; wait for it at most MEASURE_WAIT_S,
        and not at all behind other takes' measurements (a crowd's results go out at once)."""
        if not self._measure_takes:
            return
        behind = bool(self._measuring)
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(self._measurer, self.measure_filed, run_id)
        self._measuring.add(task)
        task.add_done_callback(self._measuring.discard)
        if not behind:  # otherwise the record gains bpm and key when its turn has come
            await asyncio.wait({task}, timeout=MEASURE_WAIT_S)

    def close(self) -> None:
        """Drop the measurements still waiting (at shutdown: their takes are filed already)."""
        self._measurer.shutdown(wait=False, cancel_futures=True)

    def measure_filed(self, run_id: str) -> None:
        """Measure and keep a filed entry's tempo and key (when this service measures takes);
        never raises. CPU work: call it off the event loop."""
        if self._measure_takes:
            measure_filed(self._library, run_id)

    def _enforce_cap(self, run_id: str) -> list[str]:
        """Make room under the size cap in the run's owner's share only (never another's)."""
        record = self._library.get(run_id)
        owner = record.owner if record is not None and self._settings.shared else None
        removed = self._library.enforce_cap(owner, keep=[run_id])
        if not removed:
            return []
        share = " per visitor" if owner is not None else ""
        return [
            f"Library: removed your {len(removed)} oldest run(s) (not favourites) to stay under "
            f"the {self._settings.max_library_mb:g} MB limit{share}."
        ]

    async def follow_here(
        self, engine: Engine, record: RunRecord, run: EngineRun, workdir: Path | None = None
    ) -> None:
        """Follow a run that no visitor's click is consuming (resumed, adopted) and file it;
        its owner may still cancel it (see `cancel`)."""
        watch = self._signals.watch(record.id, record.owner)
        try:
            with tempfile.TemporaryDirectory(dir=self.scratch_dir()) as tmp:
                folder = workdir or Path(tmp)
                request = GenerationRequest.from_dict(record.request)
                follow = self._follow_and_file(
                    engine, record.id, request, run, time.monotonic(), folder, watch
                )
                async for _ in follow:
                    pass
        finally:
            self._signals.drop(record.id)
