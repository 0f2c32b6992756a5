"""Variations: N takes of one request at once, against the emulator over real HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.compose.variations import Variations
from services.errors import RequestInvalid, StudioError
from services.library import Library
from services.musicgen import GenerationRequest
from tests.support.audio_files import make_tone
from tests.support.interrupt import cancel_when
from tests.support.services import make_service


def make(emulator, data_dir: Path) -> tuple[Variations, Library]:
    library = Library(data_dir)
    service = make_service(emulator, data_dir, library=library, MUSICGEN_ENGINE="replicate")
    return Variations(service, library), library


async def test_three_variations_run_at_once_with_three_seeds_as_one_entry(emulator, tmp_path):
    emulator.configure(run_seconds=1.0, max_wait_seconds=0.2)
    variations, library = make(emulator, tmp_path)
    request = GenerationRequest(prompt="bossa nova guitar", duration=3)

    updates = [u async for u in variations.run(request, 3, token=emulator.token, owner=None)]

    final = updates[-1]
    assert final.finished and final.status == "succeeded", final.error
    takes = variations.takes(final.group_id, None)
    assert len(takes) == 3 and all(t is not None and t.status == "succeeded" for t in takes)
    seeds = [t.seed for t in takes]
    assert len(set(seeds)) == 3 and None not in seeds
    # Each take reports its own seed as it runs.
    assert {u.slot: u.seed for u in updates if u.slot is not None} == dict(enumerate(seeds))
    # The three runs were on the emulator at the same time.
    runs = [emulator.prediction(t.prediction_id) for t in takes]
    starts = [p.started for p in runs]
    ends = [p.ending()[0] for p in runs]
    assert max(starts) < min(ends), (starts, ends)
    # One entry in the history; the takes are inside it.
    listed = [r.id for r in library.list(None).items]
    assert listed == [final.group_id]
    assert {r.id for r in library.children(final.group_id)} == {t.id for t in takes}
    group = library.get(final.group_id)
    assert group.kind == "variations" and group.has_audio and group.compose["seeds"] == seeds


async def test_a_group_with_a_melody_measures_its_clip_once_for_every_take(
    emulator, tmp_path, measured_clips
):
    clip = make_tone(tmp_path / "melody.wav", 2.0)
    variations, _ = make(emulator, tmp_path / "data")
    request = GenerationRequest(prompt="hum along", duration=3, input_audio=str(clip))

    updates = [u async for u in variations.run(request, 3, token=emulator.token, owner=None)]

    assert updates[-1].status == "succeeded", updates[-1].error
    assert emulator.count("POST", "/v1/predictions") == 3
    assert measured_clips == [clip]


async def test_one_cancel_stops_every_take(emulator, tmp_path):
    emulator.configure(run_seconds=30.0, max_wait_seconds=0.2)
    variations, library = make(emulator, tmp_path)
    request = GenerationRequest(prompt="ambient pads", duration=8)
    seen = await cancel_when(  # once all four are processing on the emulator
        variations.run(request, 4, token=emulator.token, owner=None),
        lambda seen: len({u.slot for u in seen if u.run and u.run.status == "processing"}) == 4,
    )

    ids = {u.run.prediction_id for u in seen if u.run and u.run.prediction_id}
    assert len(ids) == 4
    assert {emulator.status(pid) for pid in ids} == {"canceled"}
    group = library.get(seen[0].group_id)
    assert variations.settle(group.id, None).status == "canceled"
    assert all(t.status == "canceled" for t in variations.takes(group.id, None))


async def test_a_slot_can_be_made_again_with_a_new_seed(emulator, tmp_path):
    emulator.configure(max_wait_seconds=0.2)
    variations, _ = make(emulator, tmp_path)
    request = GenerationRequest(prompt="drum and bass", duration=2, seed=42)
    updates = [u async for u in variations.run(request, 2, token=emulator.token, owner=None)]
    group_id = updates[-1].group_id
    before = variations.takes(group_id, None)
    assert before[0].seed == 42  # the chosen seed is the first take's

    again = [u async for u in variations.regenerate(group_id, 1, token=emulator.token, owner=None)]

    assert again[-1].run.status == "succeeded"
    after = variations.takes(group_id, None)
    assert after[0].id == before[0].id
    assert after[1].id != before[1].id and after[1].seed not in (before[1].seed, 42)


async def test_a_bad_number_of_variations_is_refused_before_anything_is_sent(emulator, tmp_path):
    variations, _ = make(emulator, tmp_path)
    request = GenerationRequest(prompt="x", duration=2)
    for n in (1, 9, 2.5, "many"):
        with pytest.raises(RequestInvalid) as refused:
            [u async for u in variations.run(request, n, token=emulator.token, owner=None)]
        assert refused.value.errors[0].field == "n"
    assert emulator.creates == 0


async def test_each_take_of_a_group_counts_against_the_visitors_runs_in_flight(emulator, tmp_path):
    library = Library(tmp_path)
    service = make_service(
        emulator,
        tmp_path,
        library=library,
        MUSICGEN_ENGINE="replicate",
        MUSICGEN_SHARED="1",
        MUSICGEN_MAX_RUNS_IN_FLIGHT="4",
    )
    variations = Variations(service, library)
    for _ in range(2):
        busy = library.create_pending("ana", {"prompt": "still running"}, payer="addr:ana")
        library.update(busy.id, status="processing")
    request = GenerationRequest(prompt="x", duration=2)

    # 2 runs in flight + 3 takes is past 4 at once.
    with pytest.raises(StudioError, match=r"2 runs in progress.*this needs 3"):
        [u async for u in variations.run(request, 3, token="t", owner="ana", payer="addr:ana")]

    assert emulator.creates == 0
    assert library.counts("ana")["total"] == 2  # no group was filed
    # Another visitor's group of 3 takes fits their own allowance: it runs.
    group = variations.run(request, 3, token=emulator.token, owner="bo", payer="addr:bo")
    updates = [u async for u in group]
    assert updates[-1].status == "succeeded" and emulator.creates == 3


async def test_a_group_left_by_a_stopped_app_is_settled_once_its_takes_are_resumed(
    emulator, tmp_path
):
    emulator.configure(max_wait_seconds=0.2)
    library = Library(tmp_path)
    request = GenerationRequest(prompt="left running", duration=2)
    # What a killed process leaves: the group and its two takes in flight on Replicate.
    group = library.create_pending(
        None,
        request.to_dict(),
        engine="replicate",
        kind="variations",
        compose={"n": 2, "seeds": [5, 6], "takes": {}},
    )
    takes = {}
    for slot, seed in enumerate([5, 6]):
        take = request.replace(seed=seed)
        pid = emulator.add_existing_prediction(
            status="processing", input=take.to_api_input(), seed=seed
        )
        record = library.create_pending(
            None, take.to_dict(), parent_id=group.id, engine="replicate", kind="variation"
        )
        library.update(record.id, prediction_id=pid, status="processing")
        takes[str(slot)] = record.id
    library.update(group.id, status="processing", compose={**group.compose, "takes": takes})

    # The next start, as app.py does it: runs resumed, then groups settled.
    service = make_service(
        emulator, tmp_path, REPLICATE_API_TOKEN=emulator.token, MUSICGEN_ENGINE="replicate"
    )
    await service.resume_in_flight()
    variations = Variations(service, Library(tmp_path))

    assert variations.settle_all() == [group.id]
    assert Library(tmp_path).get(group.id).status == "succeeded"
    assert [t.status for t in variations.takes(group.id, None)] == ["succeeded", "succeeded"]
    assert [t.seed for t in variations.takes(group.id, None)] == [5, 6]
