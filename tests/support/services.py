"""The generation service as the tests build it: real settings, a real library on disk, and the
emulator (or this machine's engine) behind it. One place, so a change of the service's
construction is one edit for every test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.compose.extend import Extender
from services.engines.protocol import Engine
from services.engines.registry import Engines
from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.orphans import OrphanCheck
from services.replicate import ReplicateClient
from services.settings import Settings
from tests.emulator import Emulator


def studio_settings(data_dir: Path, emulator: Emulator | None = None, **env: str) -> Settings:
    """Settings for a data folder, pointed at `emulator` when one is given; `env` adds any
    other variable (MUSICGEN_ENGINE=replicate, a spending cap, ...)."""
    values = {"MUSICGEN_DATA_DIR": str(data_dir), **env}
    if emulator is not None:
        values["REPLICATE_BASE_URL"] = emulator.base_url
    return Settings.from_env(values)


def make_service(
    emulator: Emulator | None,
    data_dir: Path,
    *,
    library: Library | None = None,
    local: Engine | None = None,
    client_factory: Callable[[str], ReplicateClient] | None = None,
    orphans: OrphanCheck | None = None,
    measure_takes: bool = False,
    **env: str,
) -> GenerationService:
    """A generation service on `data_dir`'s library; `client_factory` gives its Replicate runs
    the app's own client with test timings; `measure_takes` measures each take's tempo and key."""
    settings = studio_settings(data_dir, emulator, **env)
    engines = None
    if client_factory is not None:
        engines = Engines(settings, local, client_factory=client_factory)
    return GenerationService(
        settings,
        library if library is not None else Library(data_dir),
        local=local,
        engines=engines,
        orphan_check=orphans,
        measure_takes=measure_takes,
    )


def make_extender(
    emulator: Emulator | None, data_dir: Path, **env: str
) -> tuple[GenerationService, Extender, Library]:
    """A service on Replicate (the emulator), the extender on it, and their library."""
    library = Library(data_dir)
    service = make_service(emulator, data_dir, library=library, MUSICGEN_ENGINE="replicate", **env)
    return service, Extender(service, library, data_dir), library


async def take(service: GenerationService, token: str, seconds: int = 8) -> str:
    """A finished take of `seconds` (a fixed prompt and seed); returns its library id."""
    request = GenerationRequest(prompt="warm rhodes groove", duration=seconds, seed=11)
    updates = [u async for u in service.generate(request, token=token, owner=None)]
    assert updates[-1].status == "succeeded", updates[-1].error
    return updates[-1].run_id
