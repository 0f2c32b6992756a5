"""What a run may be, before anything is stored or sent: which engine, its rules, the clip as
measured, the cost estimate and the spending guard.

Every refusal (RequestInvalid, SpendingLimit) is raised here, so it costs nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.audio import CLIP_MAX_SECONDS, MeasuredClip, measure
from services.cost import Estimate, estimate, free_estimate
from services.engines.protocol import LOCAL, REPLICATE, Turn
from services.engines.registry import Engines
from services.errors import AudioError, FieldError, RequestInvalid, SpendingLimit
from services.library import Library
from services.musicgen import GenerationRequest
from services.settings import Settings
from services.validation import check_request, warnings

SPENDING_WINDOW_S = 24 * 3600.0  # the daily GPU-seconds cap counts the last 24 hours
# Runs counted as in flight: younger than Replicate's 30-minute limit with room to spare, so a
# record stranded by a crash (and not yet resumed) never blocks its visitor for good.
IN_FLIGHT_WINDOW_S = 2 * 3600.0


def turn_of(owner: str | None, quota_pool: str | None, group: Turn | None = None) -> Turn:
    """Whose turn a run takes in an engine's queue: its owner, or the API caller's pool."""
    visitor = owner if owner is not None else (quota_pool or "")
    return Turn(visitor) if group is None else replace(group, visitor=visitor)


@dataclass(frozen=True)
class PreparedRun:
    """One click's run, checked once on its way down: the request, the engine it was checked
    for, its clip as measured by decoding (never decoded again to upload it) and the notes
    (warnings) to show. Give it to `GenerationService.generate` as it is."""

    request: GenerationRequest
    engine: str
    clip: MeasuredClip | None = None
    notes: tuple[str, ...] = ()


class Policy:
    """Checks runs against the engine's rules and the deployment's limits; holds no state."""

    def __init__(self, settings: Settings, library: Library, engines: Engines):
        self._settings = settings
        self._library = library
        self._engines = engines

    # -- validation -----------------------------------------------------------------------

    def prepare(self, raw: Mapping[str, Any], engine: str | None = None) -> PreparedRun:
        """Parse and check a form's values for `engine`, including the clip's real length.

        Raises RequestInvalid, listing every problem, before anything is sent.
        """
        rules = self._engines.rules(engine)
        request = GenerationRequest.parse(
            raw, models=rules.model_choices(), default_model=rules.default_model()
        )
        return self.prepare_request(request, rules.name)

    def prepare_request(self, request: GenerationRequest, engine: str | None = None) -> PreparedRun:
        """Check a request (one built in code, or parsed) for `engine`: see `check`."""
        name = self._engines.resolve(engine)
        clip = self.check(request, name)
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
        rules = self._engines.rules(engine)
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

    # -- cost -----------------------------------------------------------------------------

    def estimate(self, model_version: str, duration: float, engine: str | None = None) -> Estimate:
        """The GPU seconds and price a run would cost, from the library's own measured runs
        of that model, else from published figures; nothing on this machine."""
        rules = self._engines.rules(engine)
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
