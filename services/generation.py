"""One run end to end: validate -> prepare audio -> create -> follow -> download -> file.

Also picks up runs left in flight by an earlier process and imports an account's history.
Cancelling the task that consumes `generate()` cancels the run on Replicate: Gradio's `cancels=`
does that for one visitor's session only, so one visitor can never stop another's run.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from services.audio import check_output, prepare_input_audio, probe
from services.backend import Backend
from services.errors import (
    AudioError,
    FieldError,
    OutputExpired,
    RequestInvalid,
    StudioError,
)
from services.events import (
    TERMINAL_STATUSES,
    RunUpdate,
    output_url,
    parse_seed,
    split_log_lines,
)
from services.importer import ImportReport, import_account
from services.library import Library, RunNotFound, RunRecord
from services.replicate_client import PRESENT, ReplicateClient
from services.request import GenerationRequest
from services.settings import Settings
from services.validation import check_request, parse_request, warnings

WEB_URL = "https://replicate.com/p/{id}"
LOGS_TAIL_CHARS = 4000
PROGRESS_WRITE_S = 2.0
CANCEL_TIMEOUT_S = 30.0
NO_TOKEN_MESSAGE = (
    "No Replicate API token: paste yours in the token field (replicate.com/account/api-tokens). "
    "It stays in your browser."
)


class GenerationService:
    """Runs generations for any number of visitors at once; holds no per-visitor state."""

    def __init__(
        self,
        settings: Settings,
        library: Library,
        *,
        backend_factory: Callable[[str], Backend] | None = None,
    ):
        self._settings = settings
        self._library = library
        self._backend_factory = backend_factory or self._replicate_backend
        self._ssl_context = httpx.create_ssl_context()  # one for every run's client

    def _replicate_backend(self, token: str) -> Backend:
        return ReplicateClient(
            token,
            base_url=self._settings.base_url,
            version=self._settings.version,
            ssl_context=self._ssl_context,
        )

    @property
    def server_token_set(self) -> bool:
        return self._settings.api_token is not None

    def _resolve_token(self, token: str | None) -> str:
        resolved = self._settings.api_token or (token or "").strip()
        if not resolved:
            raise StudioError(NO_TOKEN_MESSAGE)
        return resolved

    # -- validation -----------------------------------------------------------------------

    def prepare(self, raw: Mapping[str, Any]) -> tuple[GenerationRequest, list[str]]:
        """Parse and check a form's values, including the clip's real length.

        Raises RequestInvalid, listing every problem, before anything is sent.
        """
        request = parse_request(raw)
        self.check(request)
        return request, warnings(request)

    def check(self, request: GenerationRequest) -> None:
        """Apply the model's own rules; raises RequestInvalid with every refusal."""
        seconds = None
        if request.input_audio:
            try:
                seconds = probe(Path(request.input_audio)).seconds
            except AudioError as err:
                raise RequestInvalid([FieldError("input_audio", str(err))]) from err
        errors = check_request(request, seconds)
        if errors:
            raise RequestInvalid(errors)

    # -- one run --------------------------------------------------------------------------

    async def generate(
        self,
        request: GenerationRequest,
        *,
        token: str | None,
        owner: str | None,
        parent_run_id: str | None = None,
    ) -> AsyncIterator[RunUpdate]:
        """Run `request` and yield an update for every change; the last one is terminal.

        Refusals (RequestInvalid, missing token) are raised before anything is stored or sent.
        """
        resolved = self._resolve_token(token)
        await asyncio.to_thread(self.check, request)
        started = time.monotonic()
        record = self._library.create_pending(owner, request.to_dict(), parent_id=parent_run_id)
        backend = self._backend_factory(resolved)
        prediction_id: str | None = None

        def stage(status: str, **kw: Any) -> RunUpdate:
            return RunUpdate(status, run_id=record.id, elapsed=time.monotonic() - started, **kw)

        finished = False
        try:
            audio_uri = None
            if request.input_audio:
                yield stage("preparing")
                audio_uri = await self._upload_input(backend, Path(request.input_audio))
            yield stage("creating")
            prediction = await backend.create(request.to_api_input(audio_uri))
            prediction_id = prediction["id"]
            # A terminal status is recorded by _finish, once the outcome is filed.
            status = prediction.get("status", "starting")
            live = {} if status in TERMINAL_STATUSES else {"status": status}
            self._library.update(record.id, prediction_id=prediction_id, **live)
            async for update in self._follow_and_file(backend, record.id, prediction, started):
                finished = update.finished
                yield update
        except (asyncio.CancelledError, GeneratorExit):
            # A cancelled task, or a consumer that closed the generator mid-run (Gradio may
            # do either): the run must not go on unseen, costing money.
            if not finished:
                await self._cancel_remote(backend, record.id, prediction_id)
            raise
        except StudioError as err:
            with contextlib.suppress(RunNotFound):  # deleted from the history meanwhile
                self._library.update(record.id, status="failed", error=str(err))
            yield stage("failed", prediction_id=prediction_id, error=str(err))
        finally:
            with contextlib.suppress(Exception):
                await backend.aclose()

    async def _upload_input(self, backend: Backend, path: Path) -> str:
        """Convert the clip where the model needs it, then make it reachable by the model."""
        with tempfile.TemporaryDirectory(dir=self._scratch_dir()) as workdir:
            prepared = await asyncio.to_thread(prepare_input_audio, path, Path(workdir))
            return await backend.upload(prepared.path, prepared.content_type)

    def _scratch_dir(self) -> Path:
        scratch = self._settings.data_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch

    async def _cancel_remote(
        self, backend: Backend, run_id: str, prediction_id: str | None
    ) -> None:
        """Cancel the prediction (if it exists yet) and record the run as canceled.

        A run that had already succeeded is left in flight instead, so that resume files
        its audio: a cancel that came too late must not throw the music away.
        """
        error = "Canceled by you."
        if prediction_id:
            try:
                answer = await asyncio.wait_for(
                    asyncio.shield(backend.cancel(prediction_id)), CANCEL_TIMEOUT_S
                )
                if answer.get("status") == "succeeded":
                    return
            except (StudioError, TimeoutError) as err:
                error = f"Canceled here, but Replicate did not confirm the cancel: {err}"
        with contextlib.suppress(RunNotFound):
            self._library.update(run_id, status="canceled", error=error)

    async def _follow_and_file(
        self, backend: Backend, run_id: str, prediction: dict[str, Any], started: float
    ) -> AsyncIterator[RunUpdate]:
        """Follow the run, mirror its changes into the library, then file its audio."""
        logs: list[str] = []
        final: RunUpdate | None = None
        written: tuple[Any, ...] | None = None
        written_at = 0.0
        async for update in backend.follow(prediction, started=started):
            logs.extend(update.new_logs)
            facts = (update.status, update.seed, update.prediction.get("started_at"))
            # A write per log line would be a transaction per progress step: new facts are
            # written at once, the growing logs at most every PROGRESS_WRITE_S.
            now = time.monotonic()
            if update.finished or facts != written or now - written_at >= PROGRESS_WRITE_S:
                self._record_progress(run_id, update, logs)
                written, written_at = facts, now
            if update.finished:
                final = update
                break
            yield replace(update, run_id=run_id)
        if final is None:  # the follower ended without a verdict
            final = RunUpdate(
                "failed", prediction_id=prediction.get("id"), error="Lost track of the run."
            )
        yield await self._finish(backend, run_id, replace(final, run_id=run_id))

    def _record_progress(self, run_id: str, update: RunUpdate, logs: list[str]) -> None:
        changes: dict[str, Any] = {"logs_tail": "\n".join(logs)[-LOGS_TAIL_CHARS:]}
        if not update.finished:
            changes["status"] = update.status
        if update.seed is not None:
            changes["seed"] = update.seed
        started_at = update.prediction.get("started_at")
        if started_at:
            changes["started_at"] = started_at
        self._library.update(run_id, **changes)

    async def _finish(self, backend: Backend, run_id: str, final: RunUpdate) -> RunUpdate:
        """File a finished run: download and check its audio, or record why it ended."""
        prediction = final.prediction
        predict_time = (prediction.get("metrics") or {}).get("predict_time")
        if final.status != "succeeded":
            self._library.update(
                run_id, status=final.status, error=final.error, predict_time=predict_time
            )
            return final
        record = self._library.get(run_id)
        assert record is not None
        try:
            audio = await self._download_output(backend, record, prediction)
        except OutputExpired as err:
            self._library.update(run_id, status="lost", error=str(err), data_removed=True)
            return replace(final, status="lost", error=str(err))
        except StudioError as err:
            message = f"The run succeeded but its audio could not be used: {err}"
            self._library.update(run_id, status="failed", error=message)
            return replace(final, status="failed", error=message)
        self._library.update(run_id, predict_time=predict_time)
        notes = self._enforce_cap()
        return replace(final, audio_path=str(audio), new_logs=final.new_logs + tuple(notes))

    async def _download_output(
        self, backend: Backend, record: RunRecord, prediction: Mapping[str, Any]
    ) -> Path:
        url = output_url(prediction)
        if url is None:
            raise OutputExpired(
                "Replicate no longer has this run's audio (it keeps outputs ~1 hour)."
            )
        request = GenerationRequest.from_dict(record.request)
        fmt = "mp3" if url.split("?")[0].endswith(".mp3") else request.output_format
        with tempfile.TemporaryDirectory(dir=self._scratch_dir()) as workdir:
            dest = await backend.download(url, Path(workdir) / f"out.{fmt}")
            info = await asyncio.to_thread(check_output, dest, float(request.duration))
            # Copy and fsync off the event loop: other visitors' runs go on meanwhile.
            stored = await asyncio.to_thread(
                self._library.attach_audio, record.id, dest, fmt=fmt, seconds=info.seconds
            )
        path = self._library.audio_file(stored)
        assert path is not None
        return path

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

        With a server-wide token every owner's runs are resumed; with a visitor's token, only
        that visitor's (their token is never stored, so only they can resume theirs).
        """
        try:
            resolved = self._resolve_token(token)
        except StudioError:
            return []
        records = [r for r in self._library.in_flight() if self._may_resume(r, owner)]
        if not records:
            return []
        backend = self._backend_factory(resolved)
        settled: list[str] = []
        try:
            for record in records:
                with contextlib.suppress(StudioError):
                    await self._resume_one(backend, record)
                    settled.append(record.id)
        finally:
            await backend.aclose()
        return settled

    def _may_resume(self, record: RunRecord, owner: str | None) -> bool:
        """A server token resumes everyone's runs; a visitor's token only that visitor's."""
        if self._settings.api_token or not self._settings.shared:
            return True
        return owner is not None and record.owner == owner

    async def _resume_one(self, backend: Backend, record: RunRecord) -> None:
        prediction_id = record.prediction_id
        if prediction_id is None:
            found = await self._find_orphan(backend, record)
            if found is None:
                self._library.update(
                    record.id,
                    status="failed",
                    error="The app stopped before this run reached Replicate; nothing was made.",
                )
                return
            prediction_id = found["id"]
            self._library.update(record.id, prediction_id=prediction_id)
        prediction = await backend.get(prediction_id)
        if prediction.get("status") in TERMINAL_STATUSES:
            update = RunUpdate(
                prediction["status"],
                prediction_id=prediction_id,
                seed=_seed_from_logs(prediction),
                error=prediction.get("error"),
                prediction=prediction,
            )
            if update.seed is not None:
                self._library.update(record.id, seed=update.seed)
            await self._finish(backend, record.id, replace(update, run_id=record.id))
            return
        async for _ in self._follow_and_file(backend, record.id, prediction, time.monotonic()):
            pass

    async def _find_orphan(self, backend: Backend, record: RunRecord) -> dict[str, Any] | None:
        """The prediction made for `record` whose id never reached the library (crash in create)."""
        request = GenerationRequest.from_dict(record.request)
        # The uploaded clip's URL was never recorded: any clip will do for the match.
        wanted = request.to_api_input(None)
        if request.input_audio:
            wanted["input_audio"] = PRESENT
        since = datetime.fromtimestamp(record.created_at).astimezone()
        return await backend.find_created(wanted, since)

    async def import_account(self, *, token: str | None, owner: str | None) -> ImportReport:
        """Add the account's earlier meta/musicgen runs that the library does not have yet."""
        backend = self._backend_factory(self._resolve_token(token))
        try:
            return await import_account(
                backend, self._library, owner, version=self._settings.version
            )
        finally:
            await backend.aclose()

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
            "web_url": WEB_URL.format(id=record.prediction_id) if record.prediction_id else None,
        }


def _seed_from_logs(prediction: Mapping[str, Any]) -> int | None:
    return parse_seed(split_log_lines(prediction.get("logs") or ""))
