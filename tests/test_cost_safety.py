"""Cost safety (issue #10): no money wasted, no music lost.

Every run goes through the generation service to the emulator over real HTTP, with faults the
emulator injects. After each, the user's view (the run's end, their history) and the account's
(how many predictions exist, whether any is left running or unfiled) are checked.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.audio import probe
from services.cost import (
    DEFAULT_GPU_PRICE_PER_SECOND,
    DOCUMENTED,
    DOCUMENTED_RATES,
    HISTORY,
    cancel_after_seconds,
)
from services.engines.protocol import REPLICATE
from services.errors import OutputExpired, SpendingLimit
from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.orphans import OrphanCheck
from services.replicate import Timeouts
from services.replicate.predictions import cancel_after_header
from services.settings import Settings
from tests.client_support import make_client
from tests.emulator import Emulator
from tests.emulator.state import TERMINAL
from tests.support import services as support
from tests.support.audio_files import make_tone

FAST_ORPHANS = OrphanCheck(looks=3, interval=0.15, delay=0.3)
# The client gives up on a create's answer after its Prefer: wait (1 s) plus this margin.
WAIT_MARGIN = 0.5


def make_service(
    emulator: Emulator, data_dir: Path, orphans: OrphanCheck = FAST_ORPHANS, **env: str
) -> GenerationService:
    def client(token: str):  # the app's own client, with test timings
        return make_client(emulator, token=token, timeouts=Timeouts(wait_margin=WAIT_MARGIN))

    return support.make_service(emulator, data_dir, client_factory=client, orphans=orphans, **env)


async def run_all(service: GenerationService, request: GenerationRequest, token: str, **kw):
    updates = [u async for u in service.generate(request, token=token, owner=None, **kw)]
    await service.settle_sweeps()  # this click's own orphan check, when it had one
    return updates


def create_posts(emulator: Emulator) -> list[Any]:
    return [r for r in emulator.requests if r.method == "POST" and r.path == "/v1/predictions"]


def assert_nothing_left_behind(emulator: Emulator, library: Library) -> None:
    """Every prediction is filed, none runs unseen, every paid take's audio is kept."""
    known = library.known_predictions()
    for pid, prediction in emulator.predictions.items():
        assert pid in known, f"prediction {pid} is not in the library"
        status = prediction.status(time.time())
        assert status in TERMINAL, f"prediction {pid} is still {status}"
        record = library.find_by_prediction(pid)
        assert record is not None and record.finished
        if status == "succeeded" and record.status != "lost":
            assert record.status == "succeeded" and library.audio_file(record) is not None
    assert library.in_flight() == []


# ---- the fault matrix --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One row: the faults, what the user sees in the end, and how many creates were sent."""

    faults: tuple[dict[str, Any], ...]
    status: str = "succeeded"
    posts: int = 1
    downloads: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


CREATE = {"method": "POST", "path": "/v1/predictions", "times": 1}
DOWNLOAD = {"method": "GET", "path": "/delivery/", "times": 1}
MATRIX = {
    "create 5xx, nothing created": Case(({"kind": "status", "status": 503, **CREATE},), posts=2),
    "create dropped after creating": Case(({"kind": "drop_after", **CREATE},)),
    "create answered after the client's timeout": Case(
        ({"kind": "late", "delay": 1 + WAIT_MARGIN + 1.0, **CREATE},)
    ),
    "malformed create answer": Case(({"kind": "malformed", **CREATE},), posts=2),
    "create made, then answered 500": Case(
        ({"kind": "status", "status": 500, "after": True, **CREATE},)
    ),
    "create made, then answered malformed": Case(({"kind": "malformed", "after": True, **CREATE},)),
    "listing lagging behind creates": Case(
        ({"kind": "drop_after", **CREATE},), config={"listing_lag_seconds": 0.2}
    ),
    "download garbage once": Case(({"kind": "garbage", **DOWNLOAD},), downloads=2),
    "download truncated": Case(({"kind": "truncate", "fraction": 0.4, **DOWNLOAD},), downloads=2),
    "download broken mid-way": Case(({"kind": "cut", "fraction": 0.5, **DOWNLOAD},), downloads=2),
    "URL expired during re-download": Case(
        ({"kind": "garbage", **DOWNLOAD}, {"kind": "expire", **DOWNLOAD}),
        status="lost",
        downloads=2,
        error="expired before it could be downloaded",
    ),
    "429 with only ratelimit-reset": Case(
        ({"kind": "status", "status": 429, "headers": {"ratelimit-reset": "1"}, **CREATE},),
        posts=2,
    ),
}


@pytest.mark.parametrize("case", list(MATRIX.values()), ids=list(MATRIX))
async def test_fault_matrix(emulator, tmp_path, case: Case):
    emulator.configure(**case.config)
    for fault in case.faults:
        emulator.add_fault(**fault)
    service = make_service(emulator, tmp_path)
    request = GenerationRequest(prompt="fault matrix: brass and drums", duration=4, seed=77)

    updates = await run_all(service, request, emulator.token)

    final = updates[-1]
    assert final.status == case.status, final.error
    library = Library(tmp_path)
    record = library.get(final.run_id)
    assert record is not None and record.status == case.status
    assert len(emulator.predictions) == 1, "exactly one prediction per click"
    assert len(create_posts(emulator)) == case.posts
    assert emulator.count("GET", "/delivery/") == case.downloads
    assert_nothing_left_behind(emulator, library)
    assert record.predict_time is not None and record.cost_usd is not None  # paid: kept
    if case.status == "succeeded":
        audio = library.audio_file(record)
        assert audio is not None and probe(audio).seconds == pytest.approx(4, abs=0.2)
    if case.error:
        assert case.error in (record.error or "") and case.error in (final.error or "")


async def test_a_429_waits_for_ratelimit_reset(emulator, tmp_path):
    emulator.add_fault("status", status=429, headers={"ratelimit-reset": "1"}, **CREATE)
    service = make_service(emulator, tmp_path)
    await run_all(service, GenerationRequest(prompt="patience", duration=1), emulator.token)
    first, second = create_posts(emulator)
    assert second.time - first.time >= 0.95  # waited what the header said, not the backoff


async def test_a_create_the_server_makes_after_the_listings_is_found_and_stopped(
    emulator, tmp_path
):
    # The worst case: the server makes the run only after the client timed out AND three
    # listings showed nothing, so the create is sent again. The sweep after the unclear create
    # finds the late one, files it as an entry of its own and stops it: nothing runs unseen.
    emulator.configure(run_seconds=5.0)
    emulator.add_fault("slow", delay=1 + WAIT_MARGIN + 1.0, **CREATE)
    service = make_service(emulator, tmp_path, OrphanCheck(looks=3, interval=0.15, delay=2.0))
    task = asyncio.create_task(
        run_all(service, GenerationRequest(prompt="late twin", duration=2), emulator.token)
    )
    filed = await asyncio.wait_for(_sweep_result(service, task), 30)
    updates = await task
    assert updates[-1].status == "succeeded", updates[-1].error
    assert len(emulator.predictions) == 2
    library = Library(tmp_path)
    [late] = [library.get(run_id) for run_id in filed]
    assert late is not None and late.source == "recovered" and late.status == "canceled"
    assert emulator.status(late.prediction_id) == "canceled"
    assert_nothing_left_behind(emulator, library)


async def _sweep_result(service: GenerationService, task: asyncio.Task) -> list[str]:
    """The ids the click's orphan sweep filed (waiting until the sweep has started)."""
    while not service.recovery.sweeping and not task.done():
        await asyncio.sleep(0.05)
    return await service.settle_sweeps()


# ---- downloads ---------------------------------------------------------------------------------


async def test_a_partial_download_never_replaces_a_good_file(emulator, tmp_path):
    async with make_client(emulator) as client:
        prediction = await client.predictions.create({"prompt": "keep me", "duration": 2}, wait=5)
        dest = tmp_path / "take.wav"
        await client.files.download(prediction["output"], dest)
        good = dest.read_bytes()
        emulator.add_fault("truncate", fraction=0.3, method="GET", path="/delivery/", times=None)
        with pytest.raises(Exception, match=r"incomplete|lasts"):
            await client.files.download_checked(prediction["output"], dest, _checked(2))
        emulator.clear_faults()
        emulator.add_fault("expire", method="GET", path="/delivery/", times=1)
        with pytest.raises(OutputExpired):
            await client.files.download_checked(prediction["output"], dest, _checked(2))
    assert dest.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.wav"]  # no part files left


def _checked(seconds: float):
    from services.audio import check_output

    return lambda path: check_output(path, seconds)


# ---- Cancel-After ------------------------------------------------------------------------------


def test_cancel_after_is_generous_and_in_the_apis_form():
    assert cancel_after_seconds(8) == 900 + 10 * 8
    assert cancel_after_seconds(300) == 3900
    assert cancel_after_seconds(0) >= 5
    assert cancel_after_header(980) == "16m20s"
    assert cancel_after_header(3900) == "1h5m"
    assert cancel_after_header(2) == "5s"  # the API's minimum


async def test_every_create_carries_a_cancel_after_sized_from_the_duration(emulator, tmp_path):
    emulator.add_fault("status", status=503, **CREATE)  # the retried create carries it too
    service = make_service(emulator, tmp_path)
    for duration in (1, 5):
        await run_all(
            service, GenerationRequest(prompt="deadline", duration=duration), "test-token"
        )
    posts = create_posts(emulator)
    assert len(posts) == 3
    for post in posts:
        duration = post.json["input"]["duration"]
        assert post.headers["cancel-after"] == cancel_after_header(cancel_after_seconds(duration))
    for prediction in emulator.predictions.values():
        seconds = cancel_after_seconds(prediction.input["duration"])
        assert prediction.deadline == pytest.approx(prediction.created + seconds)


# ---- orphans on start --------------------------------------------------------------------------


async def test_resume_adopts_a_run_the_lagging_listing_shows_late(emulator, tmp_path):
    # The app stopped between the create and its answer; the listing lags behind the create.
    emulator.configure(listing_lag_seconds=0.25)
    library = Library(tmp_path)
    request = GenerationRequest(prompt="made while we crashed", duration=2, seed=5)
    record = library.create_pending(None, request.to_dict(), engine=REPLICATE)
    async with make_client(emulator) as client:
        made = await client.predictions.create(request.to_api_input(), wait=0)
    service = make_service(emulator, tmp_path, REPLICATE_API_TOKEN=emulator.token)

    settled = await service.resume_in_flight()

    assert record.id in settled
    filed = library.get(record.id)
    assert filed.prediction_id == made["id"] and filed.status == "succeeded"
    assert library.audio_file(filed) is not None
    assert_nothing_left_behind(emulator, library)


async def test_resume_stops_a_run_whose_visitor_gave_up(emulator, tmp_path):
    # The visitor canceled while the create had no answer yet: the run it made must not go on.
    emulator.configure(run_seconds=20.0)
    library = Library(tmp_path)
    request = GenerationRequest(prompt="nobody wants me", duration=8)
    record = library.create_pending(None, request.to_dict(), engine=REPLICATE)
    library.update(record.id, status="canceled", error="Canceled by you.")
    async with make_client(emulator) as client:
        made = await client.predictions.create(request.to_api_input(), wait=0)
    service = make_service(emulator, tmp_path, REPLICATE_API_TOKEN=emulator.token)

    await service.resume_in_flight()

    assert emulator.status(made["id"]) == "canceled"
    kept = library.get(record.id)
    assert kept.status == "canceled" and kept.prediction_id == made["id"]
    assert_nothing_left_behind(emulator, library)


async def test_resume_leaves_other_peoples_and_older_runs_alone(emulator, tmp_path):
    library = Library(tmp_path)
    request = GenerationRequest(prompt="mine", duration=2)
    record = library.create_pending(None, request.to_dict(), engine=REPLICATE)
    library.update(record.id, status="failed", error="not known whether the run started")
    other = emulator.add_existing_prediction(input={"prompt": "someone else's", "duration": 2})
    service = make_service(emulator, tmp_path, REPLICATE_API_TOKEN=emulator.token)
    assert await service.resume_in_flight() == []
    assert library.known_predictions() == set()
    assert emulator.status(other) == "succeeded"


# ---- cost before you pay -----------------------------------------------------------------------


async def test_the_estimate_starts_from_published_figures(emulator, tmp_path):
    service = make_service(emulator, tmp_path)
    estimate = service.estimate("stereo-melody-large", 8, "replicate")
    fixed, per_second = DOCUMENTED_RATES["stereo-melody-large"]
    assert estimate.basis == DOCUMENTED
    assert estimate.gpu_seconds == pytest.approx(fixed + per_second * 8)
    assert estimate.price == pytest.approx(estimate.gpu_seconds * DEFAULT_GPU_PRICE_PER_SECOND)
    assert "$" in estimate.text and "published figures" in estimate.text


async def test_the_estimate_learns_from_the_librarys_own_runs(emulator, tmp_path):
    service = make_service(emulator, tmp_path, MUSICGEN_GPU_PRICE_PER_SECOND="0.002")
    rates = []
    for duration, seconds in ((2, 0.3), (4, 0.5), (2, 0.5)):
        emulator.configure(run_seconds=seconds)
        updates = await run_all(
            service, GenerationRequest(prompt="measure", duration=duration), "test-token"
        )
        record = Library(tmp_path).get(updates[-1].run_id)
        assert record.predict_time == pytest.approx(seconds, abs=0.05)
        assert record.cost_usd == pytest.approx(record.predict_time * 0.002)
        rates.append(record.predict_time / record.audio_seconds)

    estimate = service.estimate("stereo-melody-large", 10, "replicate")

    assert estimate.basis == HISTORY and estimate.samples == 3
    assert estimate.gpu_seconds == pytest.approx(statistics.median(rates) * 10)
    assert estimate.price == pytest.approx(estimate.gpu_seconds * 0.002)
    other = service.estimate("large", 10, "replicate")  # never run: still the figures
    assert other.basis == DOCUMENTED


# ---- the spending guard ------------------------------------------------------------------------


async def test_a_visitor_past_the_daily_gpu_limit_is_refused_before_anything_is_sent(
    emulator, tmp_path
):
    service = make_service(
        emulator, tmp_path, MUSICGEN_SHARED="1", MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR="30"
    )
    library = Library(tmp_path)
    spent = library.create_pending(
        "a" * 32, {"prompt": "earlier"}, engine=REPLICATE, payer="addr:198.51.100.1"
    )
    library.update(spent.id, status="failed", predict_time=20.0)
    request = GenerationRequest(prompt="one more", duration=8)  # ≈ 18 s by the figures

    # A new browser id from the same address has no allowance of its own.
    with pytest.raises(SpendingLimit, match="limit of 30 GPU seconds"):
        run = service.generate(
            request, token="test-token", owner="c" * 32, payer="addr:198.51.100.1"
        )
        [u async for u in run]
    assert emulator.requests == [] and library.counts()["total"] == 1

    # Another address has its own allowance.
    run = service.generate(request, token="test-token", owner="b" * 32, payer="addr:198.51.100.2")
    updates = [u async for u in run]
    assert updates[-1].status == "succeeded"


async def test_runs_in_flight_are_capped_per_visitor(emulator, tmp_path):
    emulator.configure(run_seconds=20.0)
    service = make_service(emulator, tmp_path, MUSICGEN_SHARED="1")  # default cap: 4
    payer = "addr:198.51.100.3"
    request = GenerationRequest(prompt="many at once", duration=8)
    runs = [
        service.generate(request, token="test-token", owner=f"{i}" * 32, payer=payer)
        for i in range(4)
    ]
    for run in runs:
        async for update in run:
            if update.prediction_id:
                break
    with pytest.raises(SpendingLimit, match="4 runs in progress"):
        [
            u
            async for u in service.generate(
                request, token="test-token", owner="e" * 32, payer=payer
            )
        ]
    assert len(emulator.predictions) == 4
    for run in runs:
        await run.aclose()  # cancels each on Replicate
    assert all(emulator.status(pid) == "canceled" for pid in emulator.predictions)


def test_spending_settings_read_from_the_environment(tmp_path):
    base = {"MUSICGEN_DATA_DIR": str(tmp_path)}
    private = Settings.from_env(base)
    assert private.gpu_price_per_second == DEFAULT_GPU_PRICE_PER_SECOND == 0.00115
    assert private.max_gpu_seconds_per_visitor is None and private.max_runs_in_flight is None
    shared = Settings.from_env({**base, "SPACE_ID": "me/studio"})
    assert shared.max_runs_in_flight == 4
    tuned = Settings.from_env(
        {
            **base,
            "MUSICGEN_GPU_PRICE_PER_SECOND": "0.0014",
            "MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR": "600",
            "MUSICGEN_MAX_RUNS_IN_FLIGHT": "0",
            "MUSICGEN_SHARED": "1",
        }
    )
    assert tuned.gpu_price_per_second == 0.0014
    assert tuned.max_gpu_seconds_per_visitor == 600 and tuned.max_runs_in_flight is None
    with pytest.raises(ValueError, match="MUSICGEN_MAX_RUNS_IN_FLIGHT"):
        Settings.from_env({**base, "MUSICGEN_MAX_RUNS_IN_FLIGHT": "lots"})


# ---- the kept input clip -----------------------------------------------------------------------


async def test_the_library_keeps_its_own_copy_of_the_input_clip(emulator, tmp_path):
    (tmp_path / "upload").mkdir()
    upload = make_tone(tmp_path / "upload" / "melody.wav", 2.0)
    service = make_service(emulator, tmp_path / "data")
    request = GenerationRequest(
        prompt="follow this", duration=3, model_version="melody-large", input_audio=str(upload)
    )
    updates = await run_all(service, request, "test-token")
    assert updates[-1].status == "succeeded", updates[-1].error
    upload.unlink()  # Gradio's upload folder is temporary

    library = Library(tmp_path / "data")
    record = library.get(updates[-1].run_id)
    stored = record.request["input_audio"]
    assert not Path(stored).is_absolute() and str(tmp_path) not in str(record.request)
    kept = library.input_file(record)
    assert kept is not None and probe(kept).seconds == pytest.approx(2.0, abs=0.05)
    # Reuse settings puts it back in the form: the request, with the kept clip.
    again = record.generation_request()
    assert again.input_audio == stored
    library.delete(record.id)
    assert not kept.exists()


# ---- /generate has the page's limits -----------------------------------------------------------


def test_generate_endpoint_is_held_to_the_same_spending_limit(emulator, tmp_path):
    from gradio_client import Client

    from tests.browser_support import studio_app

    with studio_app(
        emulator,
        tmp_path,
        REPLICATE_API_TOKEN=emulator.token,
        MUSICGEN_SHARED="1",
        MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR="10",
    ) as app:
        client = Client(app.url, verbose=False)
        # 8 s of stereo-melody-large is ≈ 18 GPU seconds by the figures: past the limit.
        with pytest.raises(Exception, match="limit of 10 GPU seconds"):
            client.predict(prompt="too long", duration=8, api_name="/generate")
        assert create_posts(emulator) == []
        # 2 s is ≈ 8 GPU seconds: within it. It really takes 6 s (3 s per second of audio).
        emulator.configure(run_seconds=6.0)
        _, run = client.predict(prompt="short", duration=2, api_name="/generate")
        emulator.configure(run_seconds=None)
        # The composing endpoints draw on the same allowance: 6 s used + ≈ 6 more is past it
        # (a fresh identity per call would have had the whole allowance again).
        with pytest.raises(Exception, match="limit of 10 GPU seconds"):
            client.predict(prompt="short", duration=2, n=2, api_name="/variations")
        with pytest.raises(Exception, match="limit of 10 GPU seconds"):
            client.predict(
                run_id=run["library_id"],
                seconds=5,
                access_key=run["access_key"],
                api_name="/extend",
            )
    assert run["status"] == "succeeded" and run["cost_usd"] is not None
    assert len(create_posts(emulator)) == 1


# ---- this machine costs nothing ----------------------------------------------------------------


async def test_a_run_on_this_machine_costs_nothing_and_shows_no_estimate(tmp_path, tiny_musicgen):
    from services.engines.local import LocalConfig, LocalEngine
    from ui.context import Studio
    from ui.cost_line import cost_html
    from ui.files import FileServer

    config = LocalConfig.from_env(
        {"MUSICGEN_LOCAL_MODEL": str(tiny_musicgen.text), "MUSICGEN_DEVICE": "cpu"}
    )
    local = LocalEngine(config)
    settings = Settings.from_env({"MUSICGEN_DATA_DIR": str(tmp_path)})
    library = Library(tmp_path)
    service = GenerationService(settings, library, local=local)
    studio = Studio(settings=settings, service=service, library=library, files=FileServer())
    try:
        assert service.estimate("", 8, "local").gpu_seconds == 0
        assert cost_html(studio, "local", "", 8) == ""
        assert "$" in cost_html(studio, "replicate", "stereo-large", 8)

        request = service.prepare(
            {"prompt": "calm piano", "duration": 1, "seed": 7}, "local"
        ).request
        updates = [u async for u in service.generate(request, token=None, owner=None)]
    finally:
        local.shutdown()
    assert updates[-1].status == "succeeded", updates[-1].error
    record = library.get(updates[-1].run_id)
    assert record.engine == "local" and record.cost_usd in (0.0, None)
    assert service.summary(record.id, None)["cost_usd"] in (0.0, None)
