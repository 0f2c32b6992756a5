"""A crowd on one Space (issue 20): caps that hold against new identities, groups and runs in
flight; a deployment-wide cap; nobody's work deleted by another; refused requests write nothing.

Runs go through the generation service (or the app) to the emulator over real HTTP, and the
library is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from pathlib import Path
from typing import Any

import pytest
from gradio.context import LocalContext
from starlette.requests import Request

from services.compose.extend import Extender
from services.compose.loop import LoopMaker
from services.compose.variations import Variations
from services.engines.protocol import REPLICATE
from services.errors import RequestInvalid, SpendingLimit
from services.generation import GenerationService
from services.library import Library
from services.musicgen import GenerationRequest
from services.settings import Settings
from services.spending import IN_FLIGHT_WINDOW_S, in_words
from tests.client_support import make_client
from tests.emulator import Emulator
from tests.support import services as support
from tests.support.audio_files import make_tone
from tests.support.interrupt import cancel_when, wait_until
from ui.identity import client_address, page_visitor, signed_in_account

HOME = "addr:81.2.69.142"  # one address (a visitor's line)
OTHER = "addr:81.2.69.160"


def make_service(emulator: Emulator, data_dir: Path, **env: str) -> GenerationService:
    """A shared deployment's service (each visitor their own share of the library)."""
    env = {"MUSICGEN_SHARED": "1", **env}
    max_mb = support.studio_settings(data_dir, emulator, **env).max_library_mb
    return support.make_service(
        emulator,
        data_dir,
        library=Library(data_dir, max_mb=max_mb),
        client_factory=lambda token: make_client(emulator, token=token),
        **env,
    )


async def first_create(run: Any) -> Any:
    """Consume a run's updates until its prediction exists; the run goes on (close it later)."""
    async for update in run:
        if update.prediction_id:
            return update
    raise AssertionError("the run ended before its prediction was created")


def a_request(seconds: int = 8, model: str = "stereo-melody-large") -> GenerationRequest:
    return GenerationRequest(prompt="dusty funk drums", duration=seconds, model_version=model)


# ---- who pays ------------------------------------------------------------------------------


def _request(headers: dict[str, str], peer: str, session: dict[str, Any] | None = None) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (peer, 50000),
    }
    if session is not None:
        scope["session"] = session
    return Request(scope)


def test_the_address_is_the_one_the_spaces_proxy_saw_never_what_the_client_claims() -> None:
    # The client claims 6.6.6.6; the Space's first proxy appended the address it really saw;
    # the Space's own hops are private.
    behind = _request({"X-Forwarded-For": "6.6.6.6, 81.2.69.142, 10.0.4.2"}, "10.16.3.80")
    assert client_address(behind, behind_proxy=True) == HOME
    # Off a proxy, or from a public peer, the header is not read at all.
    assert client_address(behind, behind_proxy=False) == "addr:10.16.3.80"
    direct = _request({"X-Forwarded-For": "6.6.6.6"}, "81.2.69.142")
    assert client_address(direct, behind_proxy=True) == HOME
    # A line's IPv6 addresses rotate freely inside its /64: they are one payer.
    one = _request({"X-Forwarded-For": "2a02:8070:1:2::aa"}, "10.0.0.1")
    two = _request({"X-Forwarded-For": "2a02:8070:1:2:ffff::1"}, "10.0.0.1")
    assert client_address(one, behind_proxy=True) == client_address(two, behind_proxy=True)
    assert client_address(one, behind_proxy=True) == "addr:2a02:8070:1:2::/64"


def test_new_browser_ids_from_one_address_share_one_allowance_a_signed_in_account_has_its_own() -> (
    None
):
    page = _request({}, "81.2.69.142")
    visitors = [page_visitor(True, None, behind_proxy=False, request=page) for _ in range(10)]
    assert len({v.owner for v in visitors}) == 10  # each browser's history stays its own
    assert {v.payer for v in visitors} == {HOME}  # ... but they spend one allowance

    info = {"userinfo": {"preferred_username": "alice"}, "expires_at": time.time() + 60}
    signed = _request({}, "81.2.69.142", session={"oauth_info": info})
    alice = page_visitor(True, "anything", behind_proxy=False, request=signed)
    assert alice.owner == alice.payer == "hf:alice" == signed_in_account(signed)
    expired = _request({}, "81.2.69.142", {"oauth_info": {**info, "expires_at": 1.0}})
    assert signed_in_account(expired) is None
    assert page_visitor(False, "x", behind_proxy=False, request=signed).owner is None

    # In a page event, the request is the one Gradio is handling (its context), as handlers
    # never pass it themselves.
    handling = LocalContext.request.set(signed)
    try:
        assert page_visitor(True, None, behind_proxy=False).payer == "hf:alice"
    finally:
        LocalContext.request.reset(handling)


async def test_ten_clicks_with_fresh_browser_ids_from_one_address_are_held_to_the_caps(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(run_seconds=30.0)
    service = make_service(emulator, tmp_path, MUSICGEN_MAX_RUNS_IN_FLIGHT="2")
    page = _request({}, "81.2.69.142")
    runs, refused = [], []
    for _ in range(10):
        visitor = page_visitor(True, None, behind_proxy=False, request=page)  # a new browser id
        run = service.generate(
            a_request(), token=emulator.token, owner=visitor.owner, payer=visitor.payer
        )
        try:
            await first_create(run)
            runs.append(run)
        except SpendingLimit as err:
            refused.append(str(err))
    assert len(runs) == 2 and emulator.creates == 2 and len(refused) == 8
    assert "2 runs in progress" in refused[0] and "Nothing was sent" in refused[0]
    # Another address is not held by this one's load.
    other = service.generate(a_request(), token=emulator.token, owner="f" * 32, payer=OTHER)
    await first_create(other)
    assert emulator.creates == 3
    for run in [*runs, other]:
        await run.aclose()


# ---- caps that hold ------------------------------------------------------------------------


async def test_variations_reserve_every_take_before_any_starts(
    emulator: Emulator, tmp_path: Path
) -> None:
    service = make_service(
        emulator,
        tmp_path,
        MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR="60",
        MUSICGEN_MAX_RUNS_IN_FLIGHT="0",
    )
    variations = Variations(service, Library(tmp_path))
    # 8 takes of 30 s on large ≈ 8 × 41 GPU s: refused whole, before anything is stored or sent.
    with pytest.raises(SpendingLimit, match="limit of 60 GPU seconds per visitor"):
        group = variations.run(
            a_request(30, "large"), 8, token=emulator.token, owner="a" * 32, payer=HOME
        )
        [u async for u in group]
    assert emulator.creates == 0 and Library(tmp_path).counts()["total"] == 0

    # Two takes of 8 s ≈ 2 × 18 GPU s fit; a second group at the same time does not: the
    # first group's takes are held before they start.
    emulator.configure(run_seconds=30.0)
    first = variations.run(a_request(), 2, token=emulator.token, owner="a" * 32, payer=HOME)
    await anext(first)  # the group is filed; its takes are about to start
    with pytest.raises(SpendingLimit, match="you have used or reserved 36 s"):
        [
            u
            async for u in variations.run(
                a_request(), 2, token=emulator.token, owner="b" * 32, payer=HOME
            )
        ]
    await first.aclose()
    assert emulator.creates <= 2


async def test_each_take_of_a_group_counts_against_the_runs_in_flight(
    emulator: Emulator, tmp_path: Path
) -> None:
    service = make_service(emulator, tmp_path)  # shared: 4 runs at once per visitor
    variations = Variations(service, Library(tmp_path))
    with pytest.raises(SpendingLimit, match="at most 4 at once per visitor"):
        [
            u
            async for u in variations.run(
                a_request(), 8, token=emulator.token, owner="a" * 32, payer=HOME
            )
        ]
    assert emulator.creates == 0 and Library(tmp_path).counts()["total"] == 0


async def test_a_run_in_flight_holds_its_estimate_until_it_settles(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(run_seconds=30.0)
    service = make_service(emulator, tmp_path, MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR="60")
    # 45 s on large ≈ 59 GPU s: one fits under 60, two at once do not.
    first = service.generate(
        a_request(45, "large"), token=emulator.token, owner="a" * 32, payer=HOME
    )
    await first_create(first)
    second = a_request(45, "large")
    with pytest.raises(SpendingLimit, match="used or reserved 59 s"):
        [
            u
            async for u in service.generate(
                second, token=emulator.token, owner="b" * 32, payer=HOME
            )
        ]
    assert emulator.creates == 1
    await first.aclose()  # canceled at once: it settles to the little GPU time it used
    run = service.generate(second, token=emulator.token, owner="b" * 32, payer=HOME)
    await first_create(run)
    assert emulator.creates == 2
    await run.aclose()


def test_a_reservation_stranded_by_a_crash_does_not_hold_forever(tmp_path: Path) -> None:
    library = Library(tmp_path)
    now = time.time()
    window = {"since": now - 24 * 3600, "in_flight_since": now - IN_FLIGHT_WINDOW_S}
    live = library.create_pending("a" * 32, {"prompt": "x"}, payer=HOME, reserved_gpu_s=40.0)
    assert library.spent(HOME, **window).gpu_seconds == 40.0
    # The process died and nothing resumed it: past the in-flight window it no longer counts.
    stranded = {"since": now - 24 * 3600, "in_flight_since": now + 1}
    assert library.spent(HOME, **stranded).gpu_seconds == 0.0
    # A run that ended settles to what it used (nothing when it never ran).
    library.update(live.id, status="failed")
    assert library.spent(HOME, **window) == library.spent(HOME, **stranded)
    assert library.spent(HOME, **window).gpu_seconds == 0.0


async def test_the_deployment_wide_cap_holds_across_visitors_and_says_when_it_frees_up(
    emulator: Emulator, tmp_path: Path
) -> None:
    service = make_service(emulator, tmp_path, MUSICGEN_MAX_GPU_SECONDS_PER_DAY="30")
    library = Library(tmp_path)
    spent = library.create_pending("a" * 32, {"prompt": "x"}, engine=REPLICATE, payer=OTHER)
    library.update(spent.id, status="failed", predict_time=20.0)
    with pytest.raises(SpendingLimit) as refused:
        [
            u
            async for u in service.generate(
                a_request(), token=emulator.token, owner="b" * 32, payer=HOME
            )
        ]
    message = str(refused.value)
    assert "limit of 30 GPU seconds a day for every visitor together" in message
    assert "frees up in about 24 hours" in message and "Nothing was sent" in message
    assert emulator.creates == 0
    assert in_words(30) == "less than a minute" and in_words(3 * 3600 + 300) == (
        "about 3 hours 5 minutes"
    )


# ---- nobody deletes another's work; refusals write nothing ---------------------------------


async def test_the_size_cap_removes_only_the_visitors_own_runs_or_refuses(
    emulator: Emulator, tmp_path: Path
) -> None:
    clip = make_tone(tmp_path / "tone.wav", 2.0)
    size = clip.stat().st_size
    library = Library(tmp_path)
    theirs = library.add_run("t" * 32, {"prompt": "theirs"}, status="succeeded", audio_src=clip)
    mine_old = library.add_run("m" * 32, {"prompt": "old"}, status="succeeded", audio_src=clip)
    # A take from the emulator (2 s of stereo) is twice the tone: one take fits per visitor,
    # a take and the tone do not (and all three visitors' files together are far past it).
    cap_mb = 2.3 * size / 1024 / 1024
    service = make_service(emulator, tmp_path, MUSICGEN_MAX_LIBRARY_MB=f"{cap_mb:.6f}")
    for _ in range(2):
        updates = [
            u
            async for u in service.generate(
                a_request(2), token=emulator.token, owner="m" * 32, payer=HOME
            )
        ]
        assert updates[-1].status == "succeeded"
    assert library.get(theirs.id) is not None  # another visitor's take is never removed
    assert library.get(mine_old.id) is None  # the visitor's own oldest made room

    # Everything the visitor keeps is a favourite and it fills their share: nothing can make
    # room, so nothing runs.
    library.add_run("m" * 32, {"prompt": "kept"}, status="succeeded", audio_src=clip)
    for record in library.list(owner="m" * 32).items:
        library.set_favourite(record.id, "m" * 32, True)
    before = emulator.creates
    with pytest.raises(SpendingLimit, match="Your history is full"):
        [
            u
            async for u in service.generate(
                a_request(2), token=emulator.token, owner="m" * 32, payer=HOME
            )
        ]
    assert emulator.creates == before


async def test_a_refused_extend_stores_and_writes_nothing(emulator: Emulator, tmp_path: Path):
    service = make_service(emulator, tmp_path)
    library = Library(tmp_path)
    source = library.add_run(
        "a" * 32,
        a_request(4).to_dict(),
        status="succeeded",
        audio_src=make_tone(tmp_path / "take.wav", 4.0),
        audio_seconds=4.0,
    )
    files_before = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    extender = Extender(service, library, tmp_path)
    with pytest.raises(RequestInvalid) as refused:
        updates = extender.extend(
            source.id, 10, token=emulator.token, owner="a" * 32, prompt="x" * 1001, payer=HOME
        )
        [u async for u in updates]
    assert [e.field for e in refused.value.errors] == ["prompt"]
    assert library.counts()["total"] == 1 and emulator.creates == 0
    files_after = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files_after == files_before


async def test_a_take_left_during_its_create_is_canceled_on_replicate_and_kept_in_history(
    emulator: Emulator, tmp_path: Path
) -> None:
    # A visitor who gives up while the create has no answer yet: the run it made must not go
    # on running (paid) unknown to its record, waiting for the next start's sweep.
    emulator.configure(run_seconds=60.0)
    emulator.add_fault("late", method="POST", path="/v1/predictions", delay=1.0)
    service = make_service(emulator, tmp_path)
    updates = service.generate(a_request(), token=emulator.token, owner="a" * 32, payer=HOME)
    # Left once the prediction is made, while its answer is held back.
    await cancel_when(updates, lambda _seen: emulator.creates > 0)

    [made] = emulator.predictions
    assert emulator.status(made) == "canceled"
    record = Library(tmp_path).find_by_prediction(made)
    assert record is not None and record.status == "canceled" and record.owner == "a" * 32


# ---- smaller failures ------------------------------------------------------------------------


async def test_a_clip_too_short_to_continue_is_refused_by_field_before_any_create(
    emulator: Emulator, tmp_path: Path
) -> None:
    service = make_service(emulator, tmp_path)
    one_sample = tmp_path / "blip.wav"
    with wave.open(str(one_sample), "wb") as blip:  # one sample at 32 kHz
        blip.setnchannels(1)
        blip.setsampwidth(2)
        blip.setframerate(32000)
        blip.writeframes(b"\x10\x00")
    with pytest.raises(RequestInvalid) as refused:
        service.prepare(
            {"prompt": "go on", "input_audio": str(one_sample), "continuation": True},
            REPLICATE,
        )
    assert [e.field for e in refused.value.errors] == ["input_audio"]
    assert "too short to continue" in str(refused.value.errors[0])
    # A start that leaves only a sliver of the clip names the start.
    clip = make_tone(tmp_path / "short.wav", 3.01)
    with pytest.raises(RequestInvalid) as sliver:
        service.prepare(
            {
                "prompt": "go on",
                "input_audio": str(clip),
                "continuation": True,
                "continuation_start": 3,
                "duration": 8,
            },
            REPLICATE,
        )
    assert [e.field for e in sliver.value.errors] == ["continuation_start"]
    assert emulator.creates == 0


async def test_a_loops_tempo_is_not_counted_against_the_prompt(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(run_seconds=30.0)
    service = make_service(emulator, tmp_path)
    maker = LoopMaker(service, Library(tmp_path))
    words = ("brushed drums " * 71).strip()  # 993 characters; with ", 120 bpm" 1,002
    assert len(words) == 993
    request, spec = maker.prepare({"prompt": words}, 120, 2)
    with pytest.raises(RequestInvalid, match="prompt"):
        maker.prepare({"prompt": words + " x" * 4}, 120, 2)  # 1,001: their own words too many
    run = maker.make(request, spec, token=emulator.token, owner="a" * 32, payer=HOME)
    await first_create(run)
    await run.aclose()
    sent = [r.json["input"]["prompt"] for r in emulator.requests if r.path == "/v1/predictions"]
    assert sent == [f"{words}, 120 bpm"]


async def test_a_full_queue_says_busy_try_again_in_a_minute() -> None:
    import gradio as gr
    import httpx
    from starlette.middleware import Middleware

    from ui.busy import BUSY_MESSAGE, BusyMessage

    started, release = threading.Event(), threading.Event()

    def slow(text: str) -> str:
        started.set()
        release.wait(60)
        return text

    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(slow, box, box, api_name="slow", concurrency_limit=1)
    demo.queue(max_size=1)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, app_kwargs={"middleware": [Middleware(BusyMessage)]}
    )
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            answers = []
            for i in range(3):  # one runs, one waits (the queue's size), the third is refused
                body = {"data": ["x"], "fn_index": 0, "session_hash": f"s{i}"}
                answers.append(await client.post("gradio_api/queue/join", json=body))
                if i == 0:  # the first has left the queue to run
                    assert await asyncio.to_thread(started.wait, 30)
        assert [a.status_code for a in answers] == [200, 200, 503]
        assert answers[2].json() == {"detail": BUSY_MESSAGE}
    finally:
        release.set()
        demo.close()


def test_api_callers_are_held_by_address_not_by_one_pool_for_all(
    emulator: Emulator, tmp_path: Path
) -> None:
    from gradio_client import Client

    from tests.browser_support import studio_app

    emulator.configure(run_seconds=60.0)

    with studio_app(
        emulator,
        tmp_path,
        REPLICATE_API_TOKEN=emulator.token,
        MUSICGEN_SHARED="1",
        MUSICGEN_MAX_RUNS_IN_FLIGHT="1",
    ) as app:
        # The app sees loopback connections' X-Forwarded-For as the client (uvicorn's proxy
        # headers, as behind a local proxy): each client below is a different address.
        def client(address: str) -> Client:
            return Client(app.url, verbose=False, headers={"X-Forwarded-For": address})

        home = client("81.2.69.142")
        busy = home.submit(prompt="long", duration=2, api_name="/generate")
        wait_until(lambda: emulator.creates >= 1, 60)
        # Another call from the same address is a fresh identity, but not a fresh allowance.
        with pytest.raises(Exception, match="1 run in progress"):
            client("81.2.69.142").predict(prompt="more", duration=2, api_name="/generate")
        # A caller from another address is not held by the first one's run.
        other = client("81.2.69.160").submit(prompt="mine", duration=2, api_name="/generate")
        wait_until(lambda: emulator.creates >= 2, 60)
        for job in (busy, other):
            job.cancel()
    assert emulator.creates == 2


def test_many_replicate_runs_through_the_api_are_made_at_once_not_in_turns(
    emulator: Emulator, tmp_path: Path
) -> None:
    from gradio_client import Client

    from tests.browser_support import studio_app

    # A Replicate run mostly waits on HTTP: a crowd's calls are all sent at once, not 8 at a
    # time (Gradio's default per event) with the rest waiting in its queue. No run ends for
    # 120 s, so every create seen is a run in flight at the same moment.
    emulator.configure(run_seconds=120.0)
    calls = 12
    with studio_app(emulator, tmp_path, REPLICATE_API_TOKEN=emulator.token) as app:
        client = Client(app.url, verbose=False)
        jobs = [
            client.submit(prompt=f"take {i}", duration=2, api_name="/generate")
            for i in range(calls)
        ]
        wait_until(lambda: emulator.creates >= calls, 60)
        for job in jobs:
            job.cancel()


def test_sign_in_and_the_proxy_are_read_from_the_environment(tmp_path: Path) -> None:
    base = {"MUSICGEN_DATA_DIR": str(tmp_path)}
    local = Settings.from_env(base)
    assert not local.sign_in and not local.behind_proxy and local.max_gpu_seconds_per_day is None
    # Gradio mocks sign-in off a Space with this machine's own account: never offered there.
    assert not Settings.from_env({**base, "OAUTH_CLIENT_ID": "x"}).sign_in
    space = Settings.from_env({**base, "SPACE_ID": "me/studio", "OAUTH_CLIENT_ID": "x"})
    assert space.sign_in and space.behind_proxy and space.shared
    assert not Settings.from_env({**base, "SPACE_ID": "me/studio"}).sign_in  # no hf_oauth
    tuned = Settings.from_env(
        {**base, "MUSICGEN_MAX_GPU_SECONDS_PER_DAY": "3600", "MUSICGEN_QUEUE_MAX_SIZE": "32"}
    )
    assert tuned.max_gpu_seconds_per_day == 3600 and tuned.queue_max_size == 32
