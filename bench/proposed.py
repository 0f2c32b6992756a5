"""Prototypes of fixes the benchmarks still propose, applied from outside for measurement only.

`python -m bench --variant proposed` runs our service with these; the default variant runs the
code as it is. Nothing here changes services/: each fix is meant to be made there by its owner,
and this module only shows what it would gain.

Landed already (commits f02eff8, defbf41, first measured here as prototypes): one TLS context per
service, WAV outputs checked from their header instead of two ffmpeg runs, audio filed off the
event loop, `Prefer: wait=1`, the poll schedule seeded with the create's progress reading, and
progress mirrored to the library at most every 2 s.

Superseded: a plain 1.8 s poll interval (proposed here before) is replaced by polls aimed at the
run's end (services/replicate/schedule.py), which keep the 1.9 s cadence and the request budget.
No fix is proposed at present: `--variant proposed` runs the current service.
"""

from __future__ import annotations

from services.engines.registry import Engines
from services.generation import GenerationService
from services.library import Library
from services.replicate import ReplicateClient
from services.replicate.follow import FollowPolicy
from services.settings import Settings

FIXES: tuple[str, ...] = ()


class ProposedService(GenerationService):
    """GenerationService with the chosen fixes applied (prototype, measurement only)."""

    def __init__(self, settings: Settings, library: Library, fixes: tuple[str, ...] = FIXES):
        policy = FollowPolicy()

        def client(token: str) -> ReplicateClient:
            return ReplicateClient(
                token,
                base_url=settings.base_url,
                version=settings.version,
                follow_policy=policy,
            )

        super().__init__(settings, library, engines=Engines(settings, None, client_factory=client))


def make_service(settings: Settings, library: Library, variant: str) -> GenerationService:
    """The service as it is ("current"), or with every proposed fix ("proposed")."""
    if variant == "current":
        return GenerationService(settings, library)
    if variant == "proposed":
        return ProposedService(settings, library)
    if variant.startswith("proposed:"):  # e.g. proposed:poll_interval
        fixes = tuple(f for f in variant.split(":", 1)[1].split(",") if f)
        unknown = set(fixes) - set(FIXES)
        if unknown:
            raise ValueError(f"unknown fixes {sorted(unknown)}; choose from {FIXES}")
        return ProposedService(settings, library, fixes)
    raise ValueError(f"unknown variant {variant!r}")
