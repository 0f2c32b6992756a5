"""The generation service's one front: what the page, the API and the compositions call.

It joins three parts that each do one job: the policy (which engine, its rules, the estimate,
the guard), the runner (start, follow, file, cancel) and the recovery (resume, orphans, import).
"""

from __future__ import annotations

from typing import Any

from services.engines.protocol import REPLICATE, Engine
from services.engines.registry import Engines
from services.generation.policy import Policy
from services.generation.recovery import Recovery
from services.generation.runner import Runner
from services.library import Library, RunRecord
from services.orphans import OrphanCheck
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
        measure_takes: bool = False,
    ):
        self._library = library
        self._engines = engines or Engines(settings, local)
        self.policy = Policy(settings, library, self._engines)
        self.runner = Runner(
            settings,
            library,
            self._engines,
            self.policy,
            on_unclear=self._look_for_twin,
            on_left_downloading=self._file_later,
            measure_takes=measure_takes,
        )
        self.recovery = Recovery(
            settings, library, self._engines, self.runner, orphan_check or OrphanCheck()
        )
        # The front: each call is its part's own method (signature, types and docstring there).
        self.prepare = self.policy.prepare
        self.prepare_request = self.policy.prepare_request
        self.prepared_for = self.policy.prepared_for
        self.check = self.policy.check
        self.estimate = self.policy.estimate
        self.estimate_runs = self.policy.estimate_runs
        self.guard = self.policy.guard
        self.reserve = self.policy.reserve
        self.generate = self.runner.generate
        self.cancel = self.runner.cancel
        self.watch_entry = self.runner.watch_entry
        self.link_part = self.runner.link_part
        self.entry_ended = self.runner.entry_ended
        self.entry_dropped = self.runner.entry_dropped
        self.wait_end = self.runner.wait_end
        self.measure_filed = self.runner.measure_filed
        self.close = self.runner.close
        self.resume_in_flight = self.recovery.resume_in_flight
        self.sweep_orphans = self.recovery.sweep_orphans
        self.settle_sweeps = self.recovery.settle_sweeps
        self.import_account = self.recovery.import_account

    def _file_later(self, token: str | None, run_id: str) -> None:
        """A paid run left by its click while its audio is fetched: the recovery files it."""
        self.recovery.file_later(token, run_id)

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
