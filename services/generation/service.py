"""The generation service's one front: what the page, the API and the compositions call.

It joins three parts that each do one job: the policy (which engine, its rules, the estimate,
the guard), the runner (start, follow, file, cancel) and the recovery (resume, orphans, import).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from services.audio import MeasuredClip
from services.cost import Estimate
from services.engines.protocol import REPLICATE, Engine
from services.engines.registry import Engines
from services.events import RunUpdate
from services.generation.policy import Policy, PreparedRun
from services.generation.recovery import Recovery
from services.generation.runner import Runner
from services.library import Library, RunRecord
from services.library.importer import ImportReport
from services.musicgen import GenerationRequest
from services.orphans import OrphanCheck
from services.run_signals import RunEnd
from services.settings import Settings

WEB_URL = "https://replicate.com/p/{id}"


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
    ):
        self._library = library
        self._engines = engines or Engines(settings, local)
        self.policy = Policy(settings, library, self._engines)
        self.runner = Runner(
            settings, library, self._engines, self.policy, on_unclear=self._look_for_twin
        )
        self.recovery = Recovery(
            settings, library, self._engines, self.runner, orphan_check or OrphanCheck()
        )

    def _look_for_twin(self, token: str | None, record: RunRecord) -> None:
        """A create got no clear answer: the recovery looks for its run once it landed."""
        self.recovery.sweep_later(token, record)

    @property
    def engines(self) -> Engines:
        return self._engines

    @property
    def library(self) -> Library:
        return self._library

    @property
    def server_token_set(self) -> bool:
        return self._engines.server_token_set

    # -- the policy -----------------------------------------------------------------------

    def prepare(self, raw: Mapping[str, Any], engine: str | None = None) -> PreparedRun:
        """See `Policy.prepare`: the form's values parsed and checked once."""
        return self.policy.prepare(raw, engine)

    def prepare_request(self, request: GenerationRequest, engine: str | None = None) -> PreparedRun:
        return self.policy.prepare_request(request, engine)

    async def prepared_for(
        self, run_of: GenerationRequest | PreparedRun, engine: str
    ) -> PreparedRun:
        return await self.policy.prepared_for(run_of, engine)

    def check(self, request: GenerationRequest, engine: str | None = None) -> MeasuredClip | None:
        return self.policy.check(request, engine)

    def estimate(self, model_version: str, duration: float, engine: str | None = None) -> Estimate:
        return self.policy.estimate(model_version, duration, engine)

    def guard(
        self,
        request: GenerationRequest,
        owner: str | None,
        engine: str,
        *,
        pool: str | None = None,
        click: bool = True,
    ) -> None:
        self.policy.guard(request, owner, engine, pool=pool, click=click)

    # -- the runner -----------------------------------------------------------------------

    def generate(
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
        """See `Runner.generate`: one run, its updates to the terminal one."""
        return self.runner.generate(
            run_of,
            token=token,
            owner=owner,
            engine=engine,
            parent_run_id=parent_run_id,
            kind=kind,
            quota_pool=quota_pool,
        )

    def cancel(self, run_id: str, owner: str | None) -> bool:
        return self.runner.cancel(run_id, owner)

    def watch_entry(self, entry_id: str, owner: str | None) -> None:
        self.runner.watch_entry(entry_id, owner)

    def link_part(self, entry_id: str, run_id: str) -> None:
        self.runner.link_part(entry_id, run_id)

    def entry_ended(self, entry_id: str, status: str, error: str | None = None) -> None:
        self.runner.entry_ended(entry_id, status, error)

    def entry_dropped(self, entry_id: str) -> None:
        self.runner.entry_dropped(entry_id)

    async def wait_end(self, run_id: str, owner: str | None) -> RunEnd | None:
        return await self.runner.wait_end(run_id, owner)

    # -- the recovery ---------------------------------------------------------------------

    async def resume_in_flight(
        self, *, token: str | None = None, owner: str | None = None
    ) -> list[str]:
        return await self.recovery.resume_in_flight(token=token, owner=owner)

    async def sweep_orphans(
        self, *, token: str | None = None, owner: str | None = None, since: float | None = None
    ) -> list[str]:
        return await self.recovery.sweep_orphans(token=token, owner=owner, since=since)

    async def settle_sweeps(self) -> list[str]:
        return await self.recovery.settle_sweeps()

    async def import_account(self, *, token: str | None, owner: str | None) -> ImportReport:
        return await self.recovery.import_account(token=token, owner=owner)

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
            "web_url": (
                WEB_URL.format(id=record.prediction_id)
                if record.prediction_id and record.engine == REPLICATE
                else None
            ),
        }
