"""Runs this process did not start: picked up after a restart, adopted after a create with no
clear answer, and an account's earlier runs imported.

Every run it finds is followed and filed by the runner, as a click's would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from services.engines.protocol import LOCAL, REPLICATE, Engine
from services.engines.registry import Engines
from services.engines.replicate.engine import ReplicateEngine
from services.errors import StudioError
from services.events import TERMINAL_STATUSES
from services.generation.runner import Runner
from services.library import Library, RunNotFound, RunRecord
from services.library.importer import ImportReport, import_account
from services.orphans import BEFORE_RECORD_S, FILE_APART, WINDOW_S, OrphanCheck, Stray
from services.settings import Settings

log = logging.getLogger(__name__)
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


class Recovery:
    """Resumes, adopts and imports runs; holds only the sweeps it has under way."""

    def __init__(
        self,
        settings: Settings,
        library: Library,
        engines: Engines,
        runner: Runner,
        orphan_check: OrphanCheck,
    ):
        self._settings = settings
        self._library = library
        self._engines = engines
        self._runner = runner
        self._orphan_check = orphan_check
        # Orphan sweeps started after unclear creates (held so they are not collected).
        self._sweeps: set[asyncio.Task[list[str]]] = set()

    # -- runs an earlier process left in flight -------------------------------------------

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
        await self._runner.follow_here(engine, record, run)
        return record.id

    def sweep_later(self, token: str | None, record: RunRecord) -> None:
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

    @property
    def sweeping(self) -> bool:
        """Whether a look for the run of an unclear create is under way."""
        return bool(self._sweeps)

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
        with tempfile.TemporaryDirectory(dir=self._runner.scratch_dir()) as tmp:
            workdir = Path(tmp)
            kept = self._library.input_file(record)
            if kept is not None:  # the engine reads the library's copy of the clip
                record = replace(record, request={**record.request, "input_audio": str(kept)})
            run = await engine.resume(record, workdir=workdir)
            if run is None:
                self._library.update(record.id, status="failed", error=NEVER_STARTED[engine.name])
                return
            self._runner.note_started(record.id, run)
            await self._runner.follow_here(engine, record, run, workdir)

    async def import_account(self, *, token: str | None, owner: str | None) -> ImportReport:
        """Add the account's earlier meta/musicgen runs that the library does not have yet."""
        client = self._engines.replicate_client(token)
        try:
            return await import_account(
                client, self._library, owner, version=self._settings.version
            )
        finally:
            await client.aclose()
