"""Nothing paid is lost (issue #20, item 3): a download that keeps failing is fetched again
while its URL lives, shown as "downloading (try n)", and filed in the end; a restart or a
visitor who leaves does not give it up; an unclear create whose listings fail is adopted in
the background, without a restart.

Every run goes through the generation service to the emulator over real HTTP, with the faults
the emulator injects.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.audio import probe
from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.orphans import OrphanCheck
from services.replicate import Timeouts
from services.replicate.retry import RetryPolicy
from tests.client_support import make_client
from tests.emulator import Emulator
from tests.support import services as support
from tests.support.interrupt import cancel_when, kill, start_generation_process, wait_until

# One try after each pause of 0.05 s growing to 0.2 s, after the client's 4 quick tries.
PATIENCE = RetryPolicy(attempts=1, base_delay=0.05, max_delay=0.2)
QUICK_TRIES = 4
DOWNLOAD = {"method": "GET", "path": "/delivery/"}


def make_service(
    emulator: Emulator, data_dir: Path, *, lifetime: float = 3600.0, **env: str
) -> GenerationService:
    def client(token: str):
        return make_client(
            emulator,
            token=token,
            timeouts=Timeouts(wait_margin=0.5),
            download_patience=PATIENCE,
            output_lifetime=lifetime,
        )

    orphans = OrphanCheck(looks=2, interval=0.1, delay=0.2)
    return support.make_service(emulator, data_dir, client_factory=client, orphans=orphans, **env)


async def until(condition, timeout: float = 30.0) -> None:
    """Wait (letting the service's background work run) until `condition()` holds."""
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "timed out"
        await asyncio.sleep(0.02)


REQUEST = GenerationRequest(prompt="a take worth keeping: cello and tabla", duration=2, seed=5)


async def test_a_download_failing_longer_than_the_quick_tries_is_filed_in_the_end(
    emulator, tmp_path
):
    emulator.add_fault("status", status=503, times=QUICK_TRIES + 3, **DOWNLOAD)
    service = make_service(emulator, tmp_path)
    library = Library(tmp_path)
    seen: list[tuple[str | None, str | None]] = []  # (the page's note, the API's status)

    updates = []
    async for update in service.generate(REQUEST, token=emulator.token, owner=None):
        updates.append(update)
        if update.status == "downloading":
            summary = service.summary(update.run_id, None)
            seen.append((update.error, summary["status"]))
            assert summary["error"] == update.error  # the API says what the page says

    final = updates[-1]
    assert final.status == "succeeded", final.error
    tries = [note for note, _ in seen]
    assert len(tries) == 4  # tries 5 to 8 announced; the 8th brought the audio
    assert "Downloading (try 5)" in tries[0] and "Downloading (try 8)" in tries[-1]
    assert {status for _, status in seen} == {"downloading"}
    record = library.get(final.run_id)
    assert record.status == "succeeded" and record.error is None
    assert probe(library.audio_file(record)).seconds == pytest.approx(2, abs=0.2)
    assert emulator.count("GET", "/delivery/") == QUICK_TRIES + 4
    assert emulator.creates == 1


async def test_only_an_expired_url_ends_a_paid_run_as_lost(emulator, tmp_path):
    emulator.add_fault("status", status=503, times=QUICK_TRIES + 1, **DOWNLOAD)
    emulator.add_fault("expire", times=1, **DOWNLOAD)  # then Replicate deletes the output
    service = make_service(emulator, tmp_path)

    updates = [u async for u in service.generate(REQUEST, token=emulator.token, owner=None)]

    assert [u.status for u in updates].count("downloading") == 2
    final = updates[-1]
    assert final.status == "lost" and "expired" in final.error
    record = Library(tmp_path).get(final.run_id)
    assert record.status == "lost" and record.predict_time is not None  # paid: kept


async def test_a_download_still_failing_when_its_url_expires_ends_lost(emulator, tmp_path):
    emulator.add_fault("status", status=503, times=None, **DOWNLOAD)
    service = make_service(emulator, tmp_path, lifetime=0.5)

    updates = [u async for u in service.generate(REQUEST, token=emulator.token, owner=None)]

    final = updates[-1]
    assert final.status == "lost" and "could not be downloaded while it lasted" in final.error
    assert Library(tmp_path).get(final.run_id).status == "lost"


async def test_a_visitor_who_leaves_while_the_audio_is_fetched_still_gets_it_filed(
    emulator, tmp_path
):
    fault = emulator.add_fault("status", status=503, times=None, **DOWNLOAD)
    service = make_service(emulator, tmp_path)
    updates = service.generate(REQUEST, token=emulator.token, owner="visitor-a")
    async for update in updates:
        if update.status == "downloading":
            run_id = update.run_id
            break
    await updates.aclose()  # the page went away (Gradio closes the generator)
    assert Library(tmp_path).get(run_id).status == "downloading"
    fired = fault.fired
    await until(lambda: fault.fired > fired)  # fetched on in the background ...
    emulator.clear_faults()  # ... until Replicate's delivery answers again

    assert await service.settle_sweeps() == [run_id]

    record = Library(tmp_path).get(run_id)
    assert record.status == "succeeded" and Library(tmp_path).audio_file(record) is not None
    assert record.owner == "visitor-a"
    assert emulator.creates == 1


async def test_a_restart_while_the_audio_is_fetched_still_files_it(emulator, tmp_path):
    emulator.add_fault("status", status=503, times=None, **DOWNLOAD)
    process = start_generation_process(emulator, tmp_path, 2)
    library = Library(tmp_path)
    wait_until(lambda: [r for r in library.in_flight() if r.status == "downloading"])
    kill(process)
    [record] = library.in_flight()
    assert "Downloading (try" in record.error
    emulator.clear_faults()

    service = make_service(emulator, tmp_path, REPLICATE_API_TOKEN=emulator.token)
    settled = await service.resume_in_flight()

    assert settled == [record.id]
    done = library.get(record.id)
    assert done.status == "succeeded" and done.error is None
    assert probe(library.audio_file(done)).seconds == pytest.approx(2, abs=0.2)
    assert emulator.creates == 1


async def test_an_unclear_create_whose_listings_fail_is_adopted_without_a_restart(
    emulator, tmp_path
):
    # The create makes the run but its answer is lost; every listing fails for a while, so the
    # click cannot tell whether a run started. The service keeps looking in the background.
    emulator.configure(run_seconds=0.3)
    emulator.add_fault("drop_after", method="POST", path="/v1/predictions", times=1)
    listing = emulator.add_fault("status", status=503, method="GET", path="/v1/predictions")
    listing.times = None
    service = make_service(emulator, tmp_path)

    updates = [u async for u in service.generate(REQUEST, token=emulator.token, owner=None)]

    final = updates[-1]
    assert final.status == "failed" and "not known whether the run started" in final.error
    failed_looks = listing.fired
    await until(lambda: listing.fired > failed_looks)  # a background look failed too
    emulator.clear_faults()  # the listing answers again

    filed = await service.settle_sweeps()

    assert filed == [final.run_id]
    record = Library(tmp_path).get(final.run_id)
    [prediction_id] = emulator.predictions
    assert record.prediction_id == prediction_id
    assert record.status == "succeeded" and Library(tmp_path).audio_file(record) is not None
    assert emulator.creates == 1


async def test_a_take_that_succeeded_as_its_visitor_left_is_filed_without_a_restart(
    emulator, tmp_path
):
    # The follower's poll is held back while the run ends; the visitor leaves then: the cancel
    # finds the run succeeded, and its audio (paid for) is filed in the background.
    emulator.configure(queue_seconds=0.05, run_seconds=1.5, stream=False)
    held = emulator.add_fault("slow", method="GET", path="/v1/predictions/", delay=3.0)
    service = make_service(emulator, tmp_path)
    updates = service.generate(REQUEST, token=emulator.token, owner="visitor-a")

    # Left once the follower's poll is held and the run has ended on Replicate.
    await cancel_when(
        updates,
        lambda _seen: (
            held.fired == 1 and all(emulator.status(p) == "succeeded" for p in emulator.predictions)
        ),
    )
    [made] = emulator.predictions

    [run_id] = await service.settle_sweeps()
    record = Library(tmp_path).get(run_id)
    assert record.status == "succeeded" and record.prediction_id == made
    assert Library(tmp_path).audio_file(record) is not None and record.owner == "visitor-a"
    # The held poll is answered (to nobody) before the emulator stops.
    await until(lambda: all(r.status for r in emulator.requests if r.fault == "slow"))
