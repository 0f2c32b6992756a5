"""What a run may be, before anything is stored or sent: which engine, its rules, the clip as
measured, the cost estimate and the spending guard.

Every refusal (RequestInvalid, SpendingLimit) is raised here, so it costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.audio import CLIP_MAX_SECONDS, MeasuredClip, measure
from services.cost import Estimate, estimate, free_estimate
from services.engines.protocol import LOCAL, REPLICATE, Turn
from services.engines.registry import Engines
from services.errors import AudioError, FieldError, RequestInvalid
from services.library import Library
from services.musicgen import GenerationRequest
from services.settings import Settings
from services.spending import Claim, SpendingGuard, Ticket, Tickets
from services.validation import check_request, warnings


def turn_of(owner: str | None, payer: str | None, group: Turn | None = None) -> Turn:
    """Whose turn a run takes in an engine's queue: its payer (an account or an address, so
    that new browser ids add no turns), else its owner."""
    visitor = payer if payer is not None else (owner or "")
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
    """Checks runs against the engine's rules and the deployment's caps; holds only the
    groups' tickets (takes promised before they start)."""

    def __init__(self, settings: Settings, library: Library, engines: Engines):
        self._settings = settings
        self._library = library
        self._engines = engines
        # Groups' takes promised before they start, and the caps they are held to.
        self._tickets = Tickets()
        self._spending = SpendingGuard(settings, library, self._tickets)

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

    def gpu_estimate(self, request: GenerationRequest, engine: str) -> float:
        """The GPU seconds a run reserves when it starts: its estimate on Replicate, else 0."""
        if engine != REPLICATE:
            return 0.0
        return self.estimate(request.model_version, request.duration, engine).gpu_seconds

    def estimate_runs(
        self, model_version: str, durations: Sequence[float], engine: str | None = None
    ) -> Estimate:
        """The estimate for several runs of one model (a song's parts): their sum."""
        each = [self.estimate(model_version, d, engine) for d in durations] or [
            self.estimate(model_version, 0, engine)
        ]
        first = each[0]
        return Estimate(
            sum(e.gpu_seconds for e in each), sum(e.price for e in each), first.basis, first.samples
        )

    def guard(
        self,
        requests: GenerationRequest | Sequence[GenerationRequest],
        owner: str | None,
        engine: str,
        *,
        payer: str | None = None,
        parallel: int = 1,
    ) -> None:
        """Refuse a click past a cap (SpendingLimit naming the cap and when it frees up),
        before anything is stored or sent: the history's size cap for `owner`, the runs in
        flight (`parallel` of the takes at once) and the daily GPU seconds for `payer` and for
        the whole deployment."""
        takes = [requests] if isinstance(requests, GenerationRequest) else list(requests)
        estimates = tuple(self.gpu_estimate(r, engine) for r in takes)
        self._spending.check(Claim(payer, owner, estimates, parallel))

    def reserve(
        self,
        requests: Sequence[GenerationRequest],
        owner: str | None,
        engine: str,
        *,
        payer: str | None = None,
        parallel: int = 1,
    ) -> Ticket:
        """Hold a group's takes to every cap before any starts (see `guard`) and keep them
        held until each starts (`generate(ticket=...)`); `close()` the ticket when the group
        ends, whatever way it ends."""
        self.guard(requests, owner, engine, payer=payer, parallel=parallel)
        estimates = [self.gpu_estimate(r, engine) for r in requests]
        return self._tickets.open(Ticket(payer, sum(estimates), len(estimates), parallel))
