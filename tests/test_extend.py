"""Long pieces by chained continuation, against the emulator over real HTTP and real audio."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.compose import audio_ops
from services.compose.extend import parts_summary, plan_parts
from services.errors import RequestInvalid
from tests.support.interrupt import cancel_when, kill_at_second_part, run_module
from tests.support.services import make_extender, take


def continuation_clips(emulator) -> list[bytes]:
    """The audio the emulator received as each continuation's input clip, in order."""
    clips = []
    for request in emulator.requests:
        body = request.json if isinstance(request.json, dict) else {}
        audio = (body.get("input") or {}).get("input_audio")
        if request.method == "POST" and request.path == "/v1/predictions" and audio:
            assert body["input"]["continuation"] is True
            if audio.startswith("data:"):
                clips.append(base64.b64decode(audio.split(",", 1)[1]))
            else:  # uploaded through the files API
                got = httpx.get(audio + "/download", headers=emulator.headers, timeout=10)
                clips.append(got.raise_for_status().content)
    return clips


def test_parts_use_as_few_runs_as_the_window_allows():
    assert plan_parts(20, 5) == [20]
    assert plan_parts(60, 5) == [20, 20, 20]
    assert plan_parts(26, 5) == [13, 13]
    assert sum(plan_parts(292, 4)) == 292 and max(plan_parts(292, 4)) <= 26


async def test_an_8_s_take_extended_by_20_s_is_28_s_and_starts_with_the_original(
    emulator, tmp_path
):
    emulator.configure(max_wait_seconds=0.2)
    service, extender, library = make_extender(emulator, tmp_path)
    source = await take(service, emulator.token)
    original = audio_ops.samples(audio_ops.load(library.audio_file(library.get(source))))

    updates = [
        u
        async for u in extender.extend(
            source, 20, token=emulator.token, owner=None, overlap=5, prompt="now with strings"
        )
    ]

    final = updates[-1]
    assert final.finished and final.status == "succeeded", final.error
    track = audio_ops.load(Path(final.audio_path))
    assert audio_ops.seconds(track) == pytest.approx(28, abs=0.1)
    head = audio_ops.samples(audio_ops.frames(track, 0, 7))
    assert np.allclose(head, original[: len(head)], atol=2e-4)  # the first 7 s are the original
    # Each part was a continuation of the track's tail, with the prompt given.
    clips = continuation_clips(emulator)
    assert len(clips) == 1
    tail = audio_ops.samples(audio_ops.matched(audio_ops.load_bytes(clips[0]), track))
    assert len(tail) == pytest.approx(5 * track.frame_rate, abs=2)
    assert np.allclose(tail, original[-len(tail) :], atol=2e-4)
    part_run = [u.run for u in updates if u.run and u.run.finished][-1]
    assert library.get(part_run.run_id).request["prompt"] == "now with strings"
    # One entry in the history, its parts inside it, with their spans and predictions.
    entry = library.get(final.entry_id)
    assert entry.kind == "extend" and entry.status == "succeeded"
    spans = parts_summary(entry)
    assert [s["part"] for s in spans] == [0, 1]
    assert spans[0]["run_id"] == source and spans[0]["end"] == pytest.approx(8, abs=0.05)
    assert spans[1]["prediction_id"] == part_run.prediction_id
    assert spans[1]["start"] == pytest.approx(8, abs=0.05)
    assert spans[1]["end"] == pytest.approx(28, abs=0.1)
    listed = [r.id for r in library.list(None).items]
    assert final.entry_id in listed and part_run.run_id not in listed
    # Progress says which part of how many.
    assert {(u.part, u.parts) for u in updates if u.run} == {(1, 1)}


async def test_a_long_extension_chains_parts_and_undo_drops_the_last(emulator, tmp_path):
    emulator.configure(max_wait_seconds=0.2)
    service, extender, library = make_extender(emulator, tmp_path)
    source = await take(service, emulator.token, seconds=6)

    updates = [
        u async for u in extender.extend(source, 40, token=emulator.token, owner=None, overlap=4)
    ]

    final = updates[-1]
    assert final.status == "succeeded", final.error
    assert {u.parts for u in updates} == {2}
    assert sorted({u.part for u in updates if u.run}) == [1, 2]
    assert len(continuation_clips(emulator)) == 2
    entry = library.get(final.entry_id)
    assert entry.audio_seconds == pytest.approx(46, abs=0.1)

    undone = extender.undo_last(final.entry_id, None)
    assert undone.audio_seconds == pytest.approx(6 + 20, abs=0.1)
    assert [s["part"] for s in parts_summary(undone)] == [0, 1]
    # ... and it can be extended again from there.
    again = [u async for u in extender.extend(undone.id, 10, token=emulator.token, owner=None)]
    assert again[-1].status == "succeeded", again[-1].error
    assert library.get(undone.id).audio_seconds == pytest.approx(36, abs=0.1)
    # Deleting the piece removes its working files too (its source and the clips it sent).
    folder = library.compose_dir(undone.id)
    assert (folder / "source.wav").is_file()
    assert library.delete(undone.id)
    assert not folder.exists()


async def test_a_cancel_mid_chain_keeps_the_parts_done_and_the_chain_resumes(emulator, tmp_path):
    emulator.configure(max_wait_seconds=0.2)
    service, extender, library = make_extender(emulator, tmp_path)
    source = await take(service, emulator.token, seconds=6)

    def second_part_runs_long(update) -> None:
        if update.part == 1 and update.run and update.run.finished:
            emulator.configure(run_seconds=30.0)

    seen = await cancel_when(  # once the second part is running on the emulator
        extender.extend(source, 40, token=emulator.token, owner=None),
        lambda seen: any(u.part == 2 and u.run and u.run.status == "processing" for u in seen),
        on_update=second_part_runs_long,
    )

    entry_id = seen[0].entry_id
    entry = library.get(entry_id)
    assert entry.compose["state"] == "interrupted" and entry.status == "succeeded"
    assert len(entry.compose["parts"]) == 1  # the first part is kept
    kept = entry.audio_seconds
    assert kept > 6
    # The second part's run was canceled on Replicate, not left running.
    second = [u.run for u in seen if u.part == 2 and u.run and u.run.prediction_id][-1]
    assert emulator.status(second.prediction_id) == "canceled"

    # A new process resumes the chain to its target (no seconds given: what was left).
    emulator.configure(run_seconds=None)
    _, extender2, library2 = make_extender(emulator, tmp_path)
    resumed = [u async for u in extender2.extend(entry_id, None, token=emulator.token, owner=None)]
    assert resumed[-1].status == "succeeded", resumed[-1].error
    assert library2.get(entry_id).audio_seconds == pytest.approx(46, abs=0.1)


async def test_bad_extend_requests_name_their_field_and_send_nothing(emulator, tmp_path):
    service, extender, _ = make_extender(emulator, tmp_path)
    source = await take(service, emulator.token, seconds=6)
    before = emulator.creates
    for seconds, overlap, field in [(0, 5, "seconds"), (400, 5, "seconds"), (10, 20, "overlap")]:
        with pytest.raises(RequestInvalid) as refused:
            [
                u
                async for u in extender.extend(
                    source, seconds, token="x", owner=None, overlap=overlap
                )
            ]
        assert [e.field for e in refused.value.errors] == [field]
    with pytest.raises(RequestInvalid) as refused:
        [u async for u in extender.extend("nope", 10, token="x", owner=None)]
    assert refused.value.errors[0].field == "run_id"
    assert emulator.creates == before


async def test_a_chain_killed_mid_part_resumes_after_a_restart_without_paying_twice(
    emulator, tmp_path
):
    emulator.configure(max_wait_seconds=0.2)
    service, _, library = make_extender(emulator, tmp_path)
    source = await take(service, emulator.token, seconds=6)
    emulator.configure(run_seconds=4.0)  # long enough to kill the process during a part
    process = run_module(
        "tests.support.extend_once", str(tmp_path), emulator.base_url, emulator.token, source, "40"
    )
    # Killed once the first part is filed and the second is on the emulator.
    entry, parts = kill_at_second_part(process, library, "extend")
    assert entry.status == "processing" and len(entry.compose["parts"]) == 1
    creates_before = emulator.creates

    # The next start: the chain becomes resumable, the part in flight is followed and filed.
    emulator.configure(run_seconds=None)
    service2, extender2, library2 = make_extender(emulator, tmp_path)
    assert extender2.mark_interrupted() == [entry.id]
    await service2.resume_in_flight(token=emulator.token)
    assert library2.get(parts[1].id).status == "succeeded"
    # Resuming the chain (no seconds: to its target) uses that paid part, not a new one.
    resumed = [u async for u in extender2.extend(entry.id, None, token=emulator.token, owner=None)]

    assert resumed[-1].status == "succeeded", resumed[-1].error
    assert emulator.creates == creates_before  # 6 + 40 s were reached with the parts already paid
    final = library2.get(entry.id)
    assert final.audio_seconds == pytest.approx(46, abs=0.1)
    assert [p["run_id"] for p in final.compose["parts"]] == [parts[0].id, parts[1].id]
