"""Following runs against the emulator: stream, Prefer: wait and polling, ends, cancel, cost."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace

import httpx
import pytest

from services.events import (
    TERMINAL_STATUSES,
    Progress,
    progress_reading,
    seed_reading,
    split_log_lines,
)
from services.replicate import Timeouts
from services.replicate.follow import FollowPolicy, Nudges
from services.replicate.stream import SseParser, iter_sse
from tests.client_support import FAST_FOLLOW, all_lines, collect, make_client

# MusicGen's log readers, as the engine hands them to the follower (which knows no model).
MUSICGEN = {"progress": progress_reading, "seed": seed_reading}
SIMPLE = {"prompt": "follow test: soft pads", "duration": 4, "seed": 99}
MBD_ON_STEREO = {"prompt": "x", "model_version": "stereo-large", "multi_band_diffusion": True}


def stream_requests(emulator, prediction_id: str) -> list:
    return [r for r in emulator.requests if r.path == f"/v1/streams/{prediction_id}"]


def assert_well_formed(updates) -> None:
    """Only the last update is terminal, time only moves forward, every update says something."""
    assert updates and updates[-1].status in TERMINAL_STATUSES
    assert all(u.status not in TERMINAL_STATUSES for u in updates[:-1])
    assert [u.elapsed for u in updates] == sorted(u.elapsed for u in updates)
    for before, after in itertools.pairwise(updates):
        assert after.new_logs or after.status != before.status


@pytest.mark.parametrize("separator", ["\n", "\r"], ids=["newline", "carriage-return"])
async def test_one_run_followed_by_stream_by_prefer_wait_and_by_polling_gives_the_same_events(
    emulator, separator
):
    emulator.configure(progress_separator=separator, cold_start=True, run_seconds=0.6)
    followed = {}
    async with make_client(emulator) as client:
        for mode in ("stream", "wait", "poll"):
            emulator.configure(stream=mode == "stream")
            prediction = await client.predictions.create(SIMPLE, wait=5 if mode == "wait" else 0)
            followed[mode] = (
                prediction["id"],
                await collect(client.follow(prediction, **MUSICGEN)),
            )

    for mode, (pid, updates) in followed.items():
        assert_well_formed(updates)
        final = updates[-1]
        assert (final.status, final.error, final.seed) == ("succeeded", None, 99), mode
        assert final.progress == Progress(200, 200), mode
        assert final.prediction["output"], mode
        assert final.prediction_id == pid
    lines = {mode: all_lines(updates) for mode, (_, updates) in followed.items()}
    assert lines["stream"] == lines["wait"] == lines["poll"]
    assert lines["poll"][:3] == [
        "Loading model stereo-melody-large...",
        "Model stereo-melody-large loaded successfully.",
        "Using seed 99",
    ]
    assert len(lines["poll"]) == 3 + 20  # and twenty progress readings, none repeated

    # The stream and polling show progress as it happens; Prefer: wait needs nothing more.
    for mode in ("stream", "poll"):
        pid, updates = followed[mode]
        assert sum(1 for u in updates if u.progress and not u.finished) >= 2, mode
    assert len(stream_requests(emulator, followed["stream"][0])) == 1
    wait_id, wait_updates = followed["wait"]
    assert len(wait_updates) == 1
    assert emulator.count("GET", f"/v1/predictions/{wait_id}") == 0
    assert emulator.count("GET", f"/v1/streams/{followed['poll'][0]}") == 0


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 404, "times": None},
        {"kind": "malformed", "times": None},  # 200 but not an event stream
        {"kind": "drop", "times": None},
        {"kind": "drop", "times": 1},
    ],
    ids=["404", "not-sse", "always-dropped", "dropped-once"],
)
async def test_a_stream_that_cannot_be_used_still_gets_the_run_followed(emulator, fault):
    emulator.configure(run_seconds=0.3)
    emulator.add_fault(method="GET", path="/v1/streams/", **fault)
    async with make_client(emulator) as client:
        prediction = await client.predictions.create(SIMPLE, wait=0)
        updates = await collect(client.follow(prediction, **MUSICGEN))
    assert_well_formed(updates)
    lines = all_lines(updates)
    assert updates[-1].status == "succeeded"
    assert lines.count("Using seed 99") == 1
    assert lines[-1].split() == ["200", "/", "200"]
    assert len(lines) == len(set(lines))


async def test_a_silent_stream_is_reopened_where_it_left_off(emulator):
    # Progress every half of the run: the stream goes quiet for longer than its idle limit.
    emulator.configure(run_seconds=1.0, progress_every_tokens=100, cold_start=False)
    timeouts = Timeouts(stream_idle=0.2)
    async with make_client(emulator, timeouts=timeouts) as client:
        prediction = await client.predictions.create(SIMPLE, wait=0)
        updates = await collect(client.follow(prediction, **MUSICGEN))
    lines = all_lines(updates)
    assert updates[-1].status == "succeeded"
    assert lines == ["Using seed 99", "   100 /    200", "   200 /    200"]
    reopened = stream_requests(emulator, prediction["id"])[1:]
    assert reopened, "the stream should have been reopened"
    assert any(r.headers.get("last-event-id") for r in reopened)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "poll"])
async def test_a_failed_run_ends_with_the_models_own_message(emulator, stream):
    emulator.configure(stream=stream)
    async with make_client(emulator) as client:
        prediction = await client.predictions.create(MBD_ON_STEREO, wait=0)
        updates = await collect(client.follow(prediction, **MUSICGEN))
    assert_well_formed(updates)
    final = updates[-1]
    assert final.status == "failed"
    assert final.error == "Multi-Band Diffusion is only available with non-stereo models."
    assert any(line.startswith("Traceback") for line in all_lines(updates))


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("aborted", "did not start before its deadline"),
        ("canceled", "The run was canceled."),
        ("failed", "CUDA out of memory"),
    ],
)
async def test_runs_that_ended_badly_report_why(emulator, status, words):
    pid = emulator.add_existing_prediction(status=status)
    async with make_client(emulator) as client:
        updates = await collect(client.follow(await client.predictions.get(pid), **MUSICGEN))
    assert [u.status for u in updates] == [status]
    assert words in updates[0].error


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "poll"])
@pytest.mark.parametrize("stage", ["starting", "processing"])
async def test_cancel_while_starting_or_processing_ends_the_run_canceled(emulator, stream, stage):
    emulator.configure(
        stream=stream, queue_seconds=3.0 if stage == "starting" else 0.05, run_seconds=3.0
    )
    async with make_client(emulator) as client:
        prediction = await client.predictions.create(SIMPLE, wait=0)
        updates, asked = [], False
        async for update in client.follow(prediction, **MUSICGEN):
            updates.append(update)
            ready = update.status == "starting" if stage == "starting" else bool(update.progress)
            if ready and not asked:
                asked = True
                await client.predictions.cancel(prediction["id"])
    assert_well_formed(updates)
    final = updates[-1]
    assert (final.status, final.error) == ("canceled", "The run was canceled.")
    assert emulator.status(prediction["id"]) == "canceled"
    if stage == "processing":
        assert final.progress is not None and final.progress.done < final.progress.total
    else:
        assert final.progress is None


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "poll"])
async def test_a_run_past_the_time_limit_ends_timed_out_and_is_stopped(emulator, stream):
    emulator.configure(stream=stream, run_seconds=10)
    policy = replace(FAST_FOLLOW, timeout=0.6)
    async with make_client(emulator, follow_policy=policy) as client:
        prediction = await client.predictions.create(SIMPLE, wait=0)
        updates = await collect(client.follow(prediction, **MUSICGEN))
    assert_well_formed(updates)
    assert updates[-1].status == "failed"
    assert "timed out" in updates[-1].error
    assert emulator.status(prediction["id"]) == "canceled"


async def test_a_run_whose_output_expired_says_so(emulator):
    async with make_client(emulator) as client:
        prediction = await client.predictions.create(SIMPLE, wait=5)
        emulator.expire_outputs()
        updates = await collect(
            client.follow(await client.predictions.get(prediction["id"]), **MUSICGEN)
        )
    [final] = updates
    assert final.status == "succeeded"
    assert "expired" in final.error


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "poll"])
async def test_a_follow_can_be_cancelled_at_any_moment_without_leaking_connections(
    emulator, stream
):
    emulator.configure(stream=stream, run_seconds=5)
    # One connection in all: a stream or poll left open by the cancel would block the last GET.
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    async with make_client(emulator, transport=transport, timeouts=Timeouts(connect=1)) as client:
        prediction = await client.predictions.create(SIMPLE, wait=0)
        progressing = asyncio.Event()

        async def watch() -> None:
            async for update in client.follow(prediction, **MUSICGEN):
                if update.progress:
                    progressing.set()

        task = asyncio.create_task(watch())
        await asyncio.wait_for(progressing.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        again = await client.predictions.get(prediction["id"])
    assert again["status"] == "processing"


async def test_a_30_s_run_followed_by_polling_costs_few_requests_and_refreshes_every_2_s(
    emulator,
):
    """The one slow test: a real-time 30 s run with the production polling policy."""
    # The model prints progress every token; half-second readings keep the emulator's log short.
    emulator.configure(
        stream=False,
        queue_seconds=1.0,
        run_seconds=30.0,
        cold_start=False,
        progress_every_tokens=25,
    )
    async with make_client(emulator, follow_policy=FollowPolicy()) as client:
        started = time.monotonic()
        prediction = await client.predictions.create(
            {"prompt": "thirty seconds", "duration": 30, "seed": 3}
        )
        # The emulator synthesises the output on the first GET that finds the run done, which
        # Replicate never does; render it now so the last answer is as quick as the others.
        await asyncio.to_thread(emulator.prediction(prediction["id"]).ensure_output)
        updates = await collect(client.follow(prediction, started=started, **MUSICGEN))
    final = updates[-1]
    assert final.status == "succeeded"
    assert final.progress == Progress(1500, 1500)

    gets = emulator.count("GET", f"/v1/predictions/{prediction['id']}")
    progress_at = [u.elapsed for u in updates if any(map(progress_reading, u.new_logs))]
    gaps = [b - a for a, b in itertools.pairwise(progress_at)]
    print(f"\n30 s run: {gets} GETs, {len(progress_at)} progress updates, gap {max(gaps):.2f} s")
    # The official client polls every 0.5 s: about 61 GETs, 63 requests with the create and the
    # download. A third of that leaves 19 GETs.
    assert gets <= 19
    # Yet progress keeps coming all along: a new reading at least every 15 % of the run. (The
    # cadence itself, never more than 1.9 s between polls, is held on a virtual clock in
    # test_poll_schedule: wall-clock gaps here would measure the machine's load, not the code.)
    assert len(progress_at) >= 1 / 0.15 and max(gaps) < 0.15 * 30


async def test_the_event_stream_format_is_read_as_the_standard_says():
    """One parsing rule, without a server: fields, multi-line data, ids, comments, BOM."""
    raw = (
        "\ufeff: keep-alive\n"
        "event: logs\nid: 1\ndata: Using seed 5\n\n"
        "event: logs\ndata:    10 /   100\ndata:    20 /   100\n\n"
        "retry: 1500\n\n"
        "event: done\nid: 4\ndata: {}\n\n"
        "event: logs\ndata: never finished"
    )

    async def lines():
        for line in raw.split("\n"):
            yield line

    parser = SseParser()
    events = [event async for event in iter_sse(lines(), parser)]
    assert [(e.event, e.data, e.id) for e in events] == [
        ("logs", "Using seed 5", "1"),
        ("logs", "   10 /   100\n   20 /   100", "1"),
        ("done", "{}", "4"),
    ]
    assert parser.retry_ms == 1500
    assert split_log_lines(events[1].data) == ["   10 /   100", "   20 /   100"]


async def test_a_stream_opened_after_a_partial_wait_repeats_no_log_line(emulator):
    # The blocking create comes back mid-run with some logs; the stream then replays the log
    # from its start. The musician must see each line once.
    emulator.configure(run_seconds=1.0, max_wait_seconds=0.4)
    async with make_client(emulator, wait_seconds=1) as client:
        prediction = await client.predictions.create({"prompt": "pads", "duration": 4, "seed": 7})
        assert prediction["status"] == "processing" and prediction.get("logs")
        updates = await collect(client.follow(prediction, started=time.monotonic(), **MUSICGEN))
        final = await client.predictions.get(prediction["id"])

    assert updates[-1].status == "succeeded"
    assert all_lines(updates) == split_log_lines(final["logs"])


async def test_a_pushed_prediction_needs_no_poll(emulator):
    """With polls seconds apart, a prediction pushed (as a webhook brings it) ends the wait."""
    emulator.configure(stream=False, run_seconds=30)
    slow = FollowPolicy(first_poll=5, progress_interval=5, idle_interval=5)
    async with make_client(emulator, follow_policy=slow) as client:
        # Taken as it is: no GET at all.
        prediction = await client.predictions.create(SIMPLE, wait=0)
        ended = await client.predictions.cancel(prediction["id"])
        gets_before = len(emulator.requests)
        nudges = Nudges()
        nudges.push({**ended, "status": "canceled"})
        final = (await collect(client.follow(prediction, nudges=nudges, **MUSICGEN)))[-1]
        assert final.status == "canceled"
        assert len(emulator.requests) == gets_before
