"""Which engines this deployment offers, and the engine object for one run.

MUSICGEN_ENGINE=auto (the default): with a server-wide Replicate token, Replicate; else the
local engine when its packages are installed; else each visitor's own token. When both are
possible the page offers a choice per run, and a visitor's own token unlocks Replicate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.engines.protocol import LOCAL, REPLICATE, Engine, EngineRules
from services.engines.replicate.engine import ReplicateEngine, ReplicateModel
from services.engines.replicate.webhooks import WebhookRegistry
from services.errors import StudioError
from services.replicate import HttpPool, ReplicateClient
from services.replicate.budget import BudgetPolicy
from services.settings import Settings

NO_TOKEN_MESSAGE = (
    "No Replicate API token: paste yours in the token field (replicate.com/account/api-tokens). "
    "It stays in your browser."
)
NO_LOCAL_MESSAGE = (
    "This machine has no local engine: install requirements-local.txt (transformers and torch) "
    "and restart the app, or use Replicate."
)
REPLICATE_OFF_MESSAGE = "Replicate is switched off on this server (MUSICGEN_ENGINE=local)."
_REPLICATE_MODEL = ReplicateModel()


@dataclass(frozen=True)
class EngineOption:
    """An engine as the page offers it."""

    name: str
    label: str


class Engines:
    """Hands out the engine for a run: the shared local one, or Replicate with a token."""

    def __init__(
        self,
        settings: Settings,
        local: Engine | None,
        *,
        client_factory: Callable[[str], ReplicateClient] | None = None,
        webhooks: WebhookRegistry | None = None,
    ):
        self._settings = settings
        self._local = local if settings.engine != REPLICATE else None
        self._client_factory = client_factory or self._client
        # Every Replicate run of every visitor shares these connections (one pool per process),
        # and the runs of one token share its budget of reads.
        self.pool = HttpPool(budget=BudgetPolicy(per_minute=settings.reads_per_minute))
        # Replicate runs waiting for a webhook (armed by MUSICGEN_PUBLIC_URL); the app's
        # webhook route hands deliveries to it.
        self.webhooks = webhooks or WebhookRegistry(settings.public_url)
        self._warming = False  # the local default checkpoint was sent to load at start

    def _client(self, token: str) -> ReplicateClient:
        return ReplicateClient(
            token,
            base_url=self._settings.base_url,
            version=self._settings.version,
            deployment=self._settings.deployment,
            pool=self.pool,
        )

    @property
    def local(self) -> Engine | None:
        return self._local

    @property
    def replicate_allowed(self) -> bool:
        return self._settings.engine != LOCAL

    @property
    def server_token_set(self) -> bool:
        return self.replicate_allowed and self._settings.api_token is not None

    @property
    def needs_visitor_token(self) -> bool:
        """Replicate is possible here only with a token each visitor brings."""
        return self.replicate_allowed and self._settings.api_token is None

    def options(self) -> list[EngineOption]:
        """The engines a run may choose, the default first."""
        local = EngineOption(LOCAL, self._local.label) if self._local is not None else None
        remote = EngineOption(REPLICATE, "Replicate") if self.replicate_allowed else None
        ordered = [remote, local] if self.server_token_set or local is None else [local, remote]
        return [option for option in ordered if option is not None]

    def default_name(self) -> str:
        options = self.options()
        return options[0].name if options else REPLICATE

    def resolve(self, name: str | None) -> str:
        """An engine's name as a caller wrote it ("Local ", "", None) as its key: empty is the
        default. The one place engine names are read."""
        return (name or "").strip().lower() or self.default_name()

    def rules(self, name: str | None) -> EngineRules:
        """What `name` accepts, known without a token: the local engine's, else meta/musicgen's
        on Replicate (an engine that cannot run here is refused by `open`)."""
        if self.resolve(name) == LOCAL and self._local is not None:
            return self._local
        return _REPLICATE_MODEL

    def token(self, token: str | None) -> str:
        """The Replicate token a run uses: the server's, else the visitor's; refused when none
        or when Replicate is off. The one place a token is chosen."""
        if not self.replicate_allowed:
            raise StudioError(REPLICATE_OFF_MESSAGE)
        resolved = self._settings.api_token or (token or "").strip()
        if not resolved:
            raise StudioError(NO_TOKEN_MESSAGE)
        return resolved

    def open(self, name: str | None, token: str | None) -> Engine:
        """The engine for one run; raises StudioError when it cannot run here."""
        name = self.resolve(name)
        if name == LOCAL:
            if self._local is None:
                raise StudioError(NO_LOCAL_MESSAGE)
            return self._local
        if name != REPLICATE:
            raise StudioError(f"Unknown engine {name!r}: choose local or replicate.")
        return ReplicateEngine(
            self._client_factory(self.token(token)),
            deployment=self._settings.deployment,
            webhooks=self.webhooks,
        )

    def warm_up(self) -> None:
        """At the app's start: load the local default checkpoint in the background, when the
        local engine is this deployment's default (its first click then sounds at once)."""
        start = getattr(self._local, "warm_up", None)
        if callable(start) and self.default_name() == LOCAL:
            self._warming = True
            start()

    def load_line(self) -> tuple[str, bool]:
        """The local model's load as a line for the page, and whether it is still going."""
        status = getattr(self._local, "load_status", None)
        current = status() if callable(status) else None
        if current is None:  # about to start, when warming up
            return "", self._warming
        if current.state == "loading":
            return f"Loading the model {current.checkpoint}: {current.message}", True
        if current.state == "failed":
            return f"The model {current.checkpoint} could not be loaded: {current.message}", False
        return f"Model {current.checkpoint} is loaded: runs start at once.", False

    def shutdown(self) -> None:
        """At the process's end: stop the local engine's worker (a run on it ends canceled)."""
        stop = getattr(self._local, "shutdown", None)
        if callable(stop):
            stop()

    async def aclose(self) -> None:
        """At the process's end: close the shared Replicate connections."""
        await self.pool.aclose()

    def replicate_client(self, token: str | None) -> ReplicateClient:
        """A client of the account (server token, else the visitor's), e.g. for an import."""
        return self._client_factory(self.token(token))


def local_engine(settings: Settings, env: Mapping[str, str] | None = None) -> Engine | None:
    """The one local engine of this process, when MUSICGEN_ENGINE allows it and it is installed.

    Its model loads with the first local run, not here: the page is up in seconds. Before
    torch is imported, its CPU threads are told to sleep rather than spin while they wait
    (`services.threads.sleep_while_waiting`: spinning cost several times a take's CPU on a
    busy machine).
    """
    if settings.engine == REPLICATE:
        return None
    from services.engines.local import LocalConfig, LocalEngine, local_engine_available
    from services.threads import sleep_while_waiting

    if not local_engine_available():
        if settings.engine == LOCAL:
            raise StudioError(
                "MUSICGEN_ENGINE=local, but the local engine is not installed: "
                "pip install -r requirements-local.txt"
            )
        return None
    sleep_while_waiting()
    return LocalEngine(LocalConfig.from_env(os.environ if env is None else env))
