"""The Replicate client: one account's predictions, files and run follower, like the official
client's `replicate.predictions` / `replicate.files`.

Errors are the typed ones of services.errors, carrying the API's own words. The API token lives
only inside an httpx.Auth object and is never part of a message, a repr or a log record.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx

from services.events import RunUpdate
from services.replicate.files import Files
from services.replicate.follow import (
    FollowPolicy,
    Nudges,
    ProgressReader,
    SeedReader,
    follow_run,
)
from services.replicate.http import DEFAULT_BASE_URL, Api, HttpPool, Timeouts
from services.replicate.predictions import DEFAULT_WAIT_SECONDS, Prediction, Predictions
from services.replicate.retry import CreateCheck, RetryPolicy
from services.replicate.webhooks import Webhooks


class ReplicateClient:
    """Talks to Replicate's HTTP API (or the project's emulator) for one token.

    Pass the process's `pool` to share its connections; without one the client keeps a pool of
    its own and closes it in `aclose`. With `deployment` ("owner/name") runs are created on that
    deployment, which fixes the version itself, instead of on `version`.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        version: str | None = None,
        deployment: str | None = None,
        pool: HttpPool | None = None,
        wait_seconds: int = DEFAULT_WAIT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        follow_policy: FollowPolicy | None = None,
        clock_slack: float = 3.0,
        unknown_clock_slack: float = 60.0,
        find_pages: int = 3,
        create_check: CreateCheck | None = None,
        download_retry: RetryPolicy | None = None,
        download_patience: RetryPolicy | None = None,
        output_lifetime: float | None = None,
    ):
        self._own_pool = pool is None
        self.pool = pool or HttpPool(timeouts=timeouts, transport=transport)
        self.api = Api(
            token,
            pool=self.pool,
            base_url=base_url,
            retry=retry,
            clock_slack=clock_slack,
            unknown_clock_slack=unknown_clock_slack,
        )
        self.predictions = Predictions(
            self.api,
            version=version,
            deployment=deployment,
            wait_seconds=wait_seconds,
            create_check=create_check,
            find_pages=find_pages,
        )
        self.files = Files(
            self.api,
            download_retry=download_retry,
            download_patience=download_patience,
            **({} if output_lifetime is None else {"output_lifetime": output_lifetime}),
        )
        self.webhooks = Webhooks(self.api)
        self.follow_policy = follow_policy or FollowPolicy()

    @property
    def base_url(self) -> str:
        return self.api.base_url

    @property
    def version(self) -> str | None:
        return self.predictions.version

    @property
    def deployment(self) -> str | None:
        return self.predictions.deployment

    def __repr__(self) -> str:
        return f"ReplicateClient(base_url={self.base_url!r}, version={self.version!r})"

    async def __aenter__(self) -> ReplicateClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections, unless they are the process's shared pool."""
        if self._own_pool:
            await self.pool.aclose()

    def follow(
        self,
        prediction: Prediction,
        *,
        started: float | None = None,
        nudges: Nudges | None = None,
        policy: FollowPolicy | None = None,
        progress: ProgressReader | None = None,
        seed: SeedReader | None = None,
    ) -> AsyncIterator[RunUpdate]:
        """Updates for every change of the run until it ends; the last one is terminal.

        `nudges` hands the follower news between its polls (a webhook); `policy`
        replaces the client's follow policy for this run (e.g. sparser polls when a webhook
        will tell the end). `progress` and `seed` read the model's log lines (see follow_run).
        """
        return follow_run(
            self.predictions,
            prediction,
            started=time.monotonic() if started is None else started,
            policy=policy or self.follow_policy,
            nudges=nudges,
            progress=progress,
            seed=seed,
        )
