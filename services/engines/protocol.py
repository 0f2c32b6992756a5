"""The one interface between the generation service and whatever makes the music.

Every engine (Replicate's HTTP API, a Replicate deployment, MusicGen in this process) implements
`Engine`; the generation service calls nothing else. A run is started from a validated request,
followed as `RunUpdate` events until a terminal one, cancelled, and (where the engine can)
resumed after a restart. The page learns nothing of an engine beyond its `label`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from services.audio import MeasuredClip
from services.errors import FieldError
from services.events import RunUpdate
from services.library.records import RunRecord
from services.musicgen import GenerationRequest

REPLICATE = "replicate"
LOCAL = "local"


@dataclass(frozen=True)
class EngineRun:
    """A run that an engine has started.

    `id` is the engine's own id of the run (the prediction id on Replicate); `checkpoint` names
    what made it and `device` where (None on Replicate); `status` is the run's status when the
    engine handed it over, and `unclear_create` says its create met an unclear answer on the
    way (the run may have a twin to look for). `engine_state` is the engine's own bookkeeping, of a
    type only that engine knows: no one else reads it (tests/test_engine_seam.py holds to it).
    """

    id: str
    engine: str
    checkpoint: str
    device: str | None = None
    status: str = "starting"
    unclear_create: bool = False
    engine_state: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Turn:
    """Whose run it is and what it goes with, for an engine that queues runs (the local one).

    `visitor` is who takes turns in the queue (an owner, or an API caller's pool); runs started
    with the same `group` (the takes of one group of variations, `group_size` of them) are made
    together where the engine can, and wait as one.
    """

    visitor: str = ""
    group: str | None = None
    group_size: int = 1


@runtime_checkable
class EngineRules(Protocol):
    """What an engine accepts, known before any run (and without a token)."""

    @property
    def name(self) -> str:
        """The engine's key: "replicate" or "local"; stored with every run."""

    @property
    def label(self) -> str:
        """What the page calls it: "Replicate", "This machine"."""

    def model_choices(self) -> Mapping[str, str]:
        """The values `model_version` may take on this engine, with a short description."""

    def default_model(self) -> str:
        """The `model_version` used when a request leaves it empty."""

    def check(self, request: GenerationRequest) -> list[FieldError]:
        """This engine's own rules (no I/O): which models exist, which inputs it supports."""


@runtime_checkable
class Engine(EngineRules, Protocol):
    """What the generation service needs from an engine; both engines implement exactly this."""

    def admit(self, turn: Turn) -> None:
        """Raise StudioError if this engine would not queue another run for `turn` now (the
        local engine's per-visitor cap); called before anything is stored."""

    async def start(
        self,
        request: GenerationRequest,
        *,
        workdir: Path,
        clip: MeasuredClip | None = None,
        turn: Turn | None = None,
    ) -> EngineRun:
        """Start (or queue) a run of `request`; `workdir` is this run's scratch folder.

        `clip`: the input clip as validation measured it, so that it is not decoded again.
        `turn`: whose run it is and its group (engines that do not queue ignore it).
        """

    def follow(self, run: EngineRun, *, started: float, workdir: Path) -> AsyncIterator[RunUpdate]:
        """Every change of `run` until it ends; the last update is terminal.

        On success the last update's `audio_path` is a checked audio file inside `workdir`,
        for the service to file in the library. `started` is the click's monotonic time.
        """

    async def cancel(self, run: EngineRun) -> str:
        """Stop `run`; returns the status it ended in ("succeeded" when the cancel came late)."""

    async def resume(self, record: RunRecord, *, workdir: Path) -> EngineRun | None:
        """Pick up a run left in flight by an earlier process, or None when nothing can be."""

    async def aclose(self) -> None:
        """Release what this engine object holds for one visitor (connections)."""
