"""Polling that scales (issue #20, item 6): the runs of one token share one budget of reads, so
the studio never draws a 429 on itself; polls aimed at a run's end go first when it is tight;
on a Space, webhooks are on by default (the public address comes from SPACE_HOST).
"""

from __future__ import annotations

import asyncio

from services.engines.registry import Engines
from services.replicate import HttpPool
from services.replicate.budget import STEADY, URGENT, BudgetPolicy, TokenBucket
from services.settings import Settings
from tests.client_support import make_client
from tests.emulator import Emulator

READS_PER_MINUTE = 100


def reads(emulator: Emulator) -> list:
    """The requests Replicate counts against the token's 3,000 reads (all but creates)."""
    return [
        r
        for r in emulator.requests
        if r.path.startswith("/v1/") and not (r.method == "POST" and r.path == "/v1/predictions")
    ]


async def test_runs_under_one_token_share_its_reads_and_never_draw_a_429(emulator: Emulator):
    # Replicate's limit, scaled down: 100 reads a minute for this token. Ten runs of 2 s polled
    # at the test's brisk cadence (every 0.05-0.1 s) would pass it.
    emulator.configure(read_limit_per_minute=READS_PER_MINUTE, run_seconds=2.0, stream=False)
    pool = HttpPool(budget=BudgetPolicy(per_minute=READS_PER_MINUTE, burst=2))
    async with make_client(emulator, pool=pool) as client:

        async def one(seed: int) -> str:
            created = await client.predictions.create({"prompt": "budget", "seed": seed}, wait=0)
            final = None
            async for update in client.follow(created):
                final = update
            assert final is not None
            return final.status

        statuses = await asyncio.gather(*(one(seed) for seed in range(10)))
    await pool.aclose()

    assert statuses == ["succeeded"] * 10
    assert [r.status for r in emulator.requests if r.status == 429] == []
    assert len(reads(emulator)) <= READS_PER_MINUTE


async def test_when_the_budget_is_tight_a_poll_aimed_at_an_end_goes_first():
    bucket = TokenBucket(rate=20.0, capacity=1)
    await bucket.take((STEADY, 0.0))  # the bucket is empty now
    served: list[str] = []

    async def poll(name: str, lane: int, due: float) -> None:
        await bucket.take((lane, due))
        served.append(name)

    progress = asyncio.create_task(poll("progress refresh, due first", STEADY, 1.0))
    await asyncio.sleep(0)  # it waits first
    end = asyncio.create_task(poll("aimed at the end", URGENT, 2.0))
    later = asyncio.create_task(poll("progress refresh, due later", STEADY, 3.0))
    await asyncio.gather(progress, end, later)

    assert served == [
        "aimed at the end",
        "progress refresh, due first",
        "progress refresh, due later",
    ]


async def test_a_waiter_that_gives_up_takes_no_read_from_the_others():
    bucket = TokenBucket(rate=50.0, capacity=1)
    await bucket.take((STEADY, 0.0))
    leaving = asyncio.create_task(bucket.take((URGENT, 0.0)))
    await asyncio.sleep(0)
    leaving.cancel()
    staying = asyncio.create_task(bucket.take((STEADY, 1.0)))
    await asyncio.wait_for(staying, 5)
    assert bucket.waiting == 0


def test_on_a_space_webhooks_are_on_by_default():
    settings = Settings.from_env({"SPACE_ID": "me/studio", "SPACE_HOST": "me-studio.hf.space"})
    webhooks = Engines(settings, None).webhooks
    assert webhooks.armed
    assert webhooks.url == "https://me-studio.hf.space/webhooks/replicate"
    # MUSICGEN_PUBLIC_URL still wins; without either, webhooks stay off.
    own = Settings.from_env({"SPACE_HOST": "x.hf.space", "MUSICGEN_PUBLIC_URL": "https://a.b/"})
    assert own.public_url == "https://a.b"
    assert not Engines(Settings.from_env({}), None).webhooks.armed


def test_the_read_budget_is_settable():
    assert Settings.from_env({}).reads_per_minute == 2400
    env = {"MUSICGEN_REPLICATE_READS_PER_MINUTE": "1200"}
    assert Settings.from_env(env).reads_per_minute == 1200
