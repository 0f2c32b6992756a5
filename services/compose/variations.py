"""Variations: N takes of one request at once, each with its own seed, kept as one group.

The takes run side by side through the generation service, so each is an ordinary run:
followed, filed, cancelled and resumed like any other. On Replicate they are parallel
predictions; on this machine they are marked as one group, which the local engine makes in one
batched pass (each take from its own seed), so n takes cost far less than n passes. The group
is one library entry (`kind="variations"`) whose takes (`kind="variation"`) point at it; it
plays its first finished take in the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.engines.protocol import LOCAL, Turn
from services.errors import FieldError, RequestInvalid, StudioError
from services.events import RunUpdate
from services.generation import GenerationService, PreparedRun
from services.generation.policy import turn_of
from services.library import Library, RunNotFound, RunRecord
from services.musicgen import SEED_MAX, GenerationRequest
from services.spending import Ticket

MIN_TAKES = 2
MAX_TAKES = 8


@dataclass(frozen=True)
class VariationUpdate:
    """A change in one take (`slot`, 0-based) of group `group_id`; `finished` on the last one."""

    group_id: str
    slot: int | None = None
    seed: int | None = None
    run: RunUpdate | None = None
    finished: bool = False
    status: str = "processing"
    error: str | None = None


def check_takes(n: Any) -> int:
    """How many takes, refused unless a whole number from 2 to 8."""
    try:
        count = int(n)
        if count != float(n) or not MIN_TAKES <= count <= MAX_TAKES:
            raise ValueError
    except (TypeError, ValueError):
        raise RequestInvalid(
            [
                FieldError(
                    "n",
                    f"Number of variations must be a whole number from {MIN_TAKES} to {MAX_TAKES}.",
                )
            ]
        ) from None
    return count


def seeds_for(request: GenerationRequest, n: int) -> list[int]:
    """A distinct seed per take; a seed the musician chose is the first take's."""
    chosen = [request.seed] if request.seed not in (None, 0, -1) else []
    seeds = [int(s) for s in chosen if s is not None]
    while len(seeds) < n:
        candidate = secrets.randbelow(SEED_MAX) + 1
        if candidate not in seeds:
            seeds.append(candidate)
    return seeds


def _made_together(engine: str, count: int) -> dict[str, Any]:
    """What the group's record keeps so each take can be made again exactly: on this machine
    the takes are rows of one batch, in slot order, one seed each (`batch`: its size)."""
    return {"batch": count} if engine == LOCAL else {}


class Variations:
    """Makes groups of takes; one instance serves every visitor."""

    def __init__(self, service: GenerationService, library: Library):
        self._service = service
        self._library = library

    async def run(
        self,
        run_of: GenerationRequest | PreparedRun,
        n: Any,
        *,
        token: str | None,
        owner: str | None,
        engine: str | None = None,
        payer: str | None = None,
    ) -> AsyncIterator[VariationUpdate]:
        """Start `n` takes of a request at once; yield every change of each, then the end.

        Refusals come before anything is stored or sent: all `n` takes are held to the
        spending caps of `payer` (see `GenerationService.reserve`) before the first starts.
        Cancelling the consumer cancels every take. The request is checked (its clip
        measured) once for all the takes.
        """
        count = check_takes(n)
        chosen = self._service.engines.open(engine, token)
        try:
            prepared = await self._service.prepared_for(run_of, chosen.name)
            request = prepared.request
            # The group waits as one run in a queue's per-visitor cap.
            chosen.admit(turn_of(owner, payer))
        finally:
            await chosen.aclose()
        # No await from here to the takes' rows: every take is held before any starts.
        with self._service.reserve(
            [request] * count, owner, chosen.name, payer=payer, parallel=count
        ) as ticket:
            async for update in self._group(prepared, count, token, owner, engine, ticket):
                yield update

    async def _group(
        self,
        prepared: PreparedRun,
        count: int,
        token: str | None,
        owner: str | None,
        engine: str | None,
        ticket: Ticket,
    ) -> AsyncIterator[VariationUpdate]:
        request = prepared.request
        seeds = seeds_for(request, count)
        group = self._library.create_pending(
            owner,
            request.to_dict(),
            engine=prepared.engine,
            kind="variations",
            compose={
                "n": count,
                "seeds": seeds,
                "takes": {},
                **_made_together(prepared.engine, count),
            },
        )
        self._library.update(group.id, status="processing")
        yield VariationUpdate(group.id)
        together = Turn(group=group.id, group_size=count)
        queue: asyncio.Queue[tuple[int, RunUpdate | None]] = asyncio.Queue()
        tasks = [
            asyncio.create_task(
                self._take(
                    queue,
                    slot,
                    replace(prepared, request=request.replace(seed=seed)),
                    group.id,
                    token,
                    owner,
                    engine,
                    ticket,
                    together,
                )
            )
            for slot, seed in enumerate(seeds)
        ]
        try:
            running = count
            while running:
                slot, update = await queue.get()
                if update is None:  # that take's generator ended
                    running -= 1
                    continue
                if update.run_id and not update.finished:
                    self._note_take(group.id, owner, slot, update.run_id)
                yield VariationUpdate(group.id, slot, seeds[slot], run=update)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        settled = self.settle(group.id, owner)
        yield VariationUpdate(
            group.id,
            finished=True,
            status=settled.status if settled else "failed",
            error=settled.error if settled else None,
        )

    async def _take(
        self,
        queue: asyncio.Queue[tuple[int, RunUpdate | None]],
        slot: int,
        take: PreparedRun,
        group_id: str,
        token: str | None,
        owner: str | None,
        engine: str | None,
        ticket: Ticket,
        together: Turn,
    ) -> None:
        try:
            async for update in self._service.generate(
                take,
                token=token,
                owner=owner,
                engine=engine,
                parent_run_id=group_id,
                kind="variation",
                ticket=ticket,
                group=together,
            ):
                await queue.put((slot, update))
        except StudioError as err:
            await queue.put((slot, RunUpdate("failed", error=str(err))))
        finally:
            queue.put_nowait((slot, None))

    def _note_take(self, group_id: str, owner: str | None, slot: int, run_id: str) -> None:
        record = self._library.get(group_id, owner)
        if record is None:
            return
        compose = dict(record.compose or {})
        takes = dict(compose.get("takes") or {})
        if takes.get(str(slot)) == run_id:
            return
        takes[str(slot)] = run_id
        compose["takes"] = takes
        self._library.update(group_id, compose=compose)

    async def regenerate(
        self,
        group_id: str,
        slot: int,
        *,
        token: str | None,
        owner: str | None,
        engine: str | None = None,
        payer: str | None = None,
    ) -> AsyncIterator[VariationUpdate]:
        """A new take, with a new seed, in place of one slot of the group."""
        group = self._library.get(group_id, owner)
        if group is None or group.kind != "variations":
            raise StudioError("That group of variations is not in your library.")
        # Refused before the group is touched.
        chosen = engine or group.engine
        self._service.guard(GenerationRequest.from_dict(group.request), owner, chosen, payer=payer)
        compose = dict(group.compose or {})
        seeds = list(compose.get("seeds") or [])
        if not 0 <= slot < len(seeds):
            raise RequestInvalid([FieldError("slot", f"Choose a take from 1 to {len(seeds)}.")])
        request = GenerationRequest.from_dict(group.request)
        seed = seeds_for(request.replace(seed=None), len(seeds) + 1)[-1]
        while seed in seeds:
            seed = seeds_for(request.replace(seed=None), 1)[0]
        seeds[slot] = seed
        compose["seeds"] = seeds
        self._library.update(group_id, compose=compose, status="processing")
        try:
            async for update in self._service.generate(
                request.replace(seed=seed),
                token=token,
                owner=owner,
                engine=chosen,
                parent_run_id=group_id,
                kind="variation",
                payer=payer,
            ):
                if update.run_id and not update.finished:
                    self._note_take(group_id, owner, slot, update.run_id)
                yield VariationUpdate(group_id, slot, seed, run=update)
        finally:
            self.settle(group_id, owner)

    def takes(self, group_id: str, owner: str | None) -> list[RunRecord | None]:
        """The group's current take in each slot (None where none was started)."""
        group = self._library.get(group_id, owner)
        if group is None:
            return []
        compose = group.compose or {}
        slots = compose.get("takes") or {}
        return [
            self._library.get(slots.get(str(i), ""), owner) if str(i) in slots else None
            for i in range(len(compose.get("seeds") or []))
        ]

    def settle(self, group_id: str, owner: str | None) -> RunRecord | None:
        """The group's status from its takes: done when all ended, playing its first one."""
        with contextlib.suppress(RunNotFound):
            takes = self.takes(group_id, owner)
            if any(t is not None and t.in_flight for t in takes):
                return self._library.get(group_id, owner)
            made = [t for t in takes if t is not None and t.has_audio]
            if made:
                cover = self._library.audio_file(made[0])
                if cover is not None:
                    self._library.attach_audio(
                        group_id,
                        Path(cover),
                        fmt=made[0].audio_format or "wav",
                        seconds=float(made[0].audio_seconds or 0),
                    )
                    # The group plays its first take: it has that take's tempo and key.
                    return self._library.update(group_id, bpm=made[0].bpm, key=made[0].key)
            ended = [t for t in takes if t is not None]
            status = "canceled" if any(t.status == "canceled" for t in ended) else "failed"
            reasons = {t.error for t in ended if t.error}
            return self._library.update(
                group_id, status=status, error="; ".join(sorted(reasons)) or "No take finished."
            )
        return None

    def settle_all(self) -> list[str]:
        """On start, after runs were resumed: groups whose takes have all ended are settled."""
        settled = []
        for group in self._library.in_flight(kinds=("variations",)):
            record = self.settle(group.id, None)
            if record is not None and record.finished:
                settled.append(group.id)
        return settled
