"""Seamless loops through the loop maker, against the emulator over real HTTP, real audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.compose import audio_ops
from services.compose.loop import LoopMaker, LoopSpec, find_downbeat, loop_prompt, parse_loop
from services.errors import RequestInvalid, StudioError
from services.library import Library
from tests.emulator import Emulator
from tests.support.interrupt import cancel_when
from tests.support.services import make_service


def maker_for(emulator: Emulator, data_dir: Path) -> LoopMaker:
    service = make_service(emulator, data_dir)
    return LoopMaker(service, Library(data_dir))


def wrap_is_seamless(samples: np.ndarray) -> tuple[float, float]:
    """(the jump from the last sample back to the first, the largest step inside the audio)."""
    inside = float(np.abs(np.diff(samples, axis=0)).max())
    wrap = float(np.abs(samples[-1] - samples[0]).max())
    return wrap, inside


async def test_a_loop_is_exactly_its_bars_long_seamless_and_filed_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(run_seconds=1.5, max_wait_seconds=0.2)
    maker = maker_for(emulator, tmp_path)
    request, spec = maker.prepare(
        {"prompt": "Lo-fi piano with rain", "seed": 1234, "model_version": "stereo-large"}, 120, 2
    )
    updates = [u async for u in maker.make(request, spec, token=emulator.token, owner=None)]

    final = updates[-1]
    assert final.status == "succeeded", final.error
    assert any(u.progress for u in updates), "no progress was shown while the take was made"
    assert {u.run_id for u in updates} == {final.run_id}  # every update is about the loop
    sent = emulator.predictions[final.prediction_id].input
    assert sent["prompt"] == "Lo-fi piano with rain, 120 bpm"
    assert sent["duration"] == 7  # 4 s of loop + a bar + the blend, whole seconds

    loop = audio_ops.load(Path(final.audio_path))
    assert loop.frame_count() == 4 * loop.frame_rate  # 2 bars at 120 BPM, to the sample
    wrap, inside = wrap_is_seamless(audio_ops.samples(loop))
    assert wrap <= inside, f"the loop point clicks: {wrap} > {inside}"

    # Another process (a restart) sees the loop once, with its raw take inside it.
    library = Library(tmp_path)
    listed = library.list(None).items
    assert [r.id for r in listed] == [final.run_id]
    entry = listed[0]
    assert entry.kind == "loop" and entry.status == "succeeded"
    assert entry.compose["bpm"] == 120 and entry.compose["bars"] == 2
    assert entry.audio_seconds == pytest.approx(4.0, abs=1e-9)
    assert entry.seed == 1234
    inside_entry = library.children(entry.id)
    assert [r.kind for r in inside_entry] == ["loop-source"]
    assert entry.compose["source_run"] == inside_entry[0].id
    assert inside_entry[0].status == "succeeded"
    assert audio_ops.seconds(audio_ops.load(library.audio_file(inside_entry[0]))) == (
        pytest.approx(7.0, abs=0.05)
    )
    assert "loop starts on beat" in entry.logs_tail or "loop starts on the" in entry.logs_tail


@pytest.mark.parametrize(
    ("bpm", "bars", "field", "words"),
    [
        (300, 2, "bpm", "40 to 240"),
        (120, 17, "bars", "1 to 16"),
        (40, 16, "bars", "at most 30 s"),
        ("fast", 2, "bpm", "40 to 240"),
    ],
)
async def test_a_refused_loop_names_the_field_and_sends_nothing(
    emulator: Emulator, tmp_path: Path, bpm: object, bars: object, field: str, words: str
) -> None:
    maker = maker_for(emulator, tmp_path)
    before = emulator.creates
    with pytest.raises(RequestInvalid) as refused:
        maker.prepare({"prompt": "drums"}, bpm, bars)
    assert [e.field for e in refused.value.errors] == [field]
    assert words in str(refused.value)
    assert emulator.creates == before
    assert Library(tmp_path).list(None).total == 0


async def test_cancelling_a_loop_cancels_its_take(emulator: Emulator, tmp_path: Path) -> None:
    emulator.configure(run_seconds=20.0)
    maker = maker_for(emulator, tmp_path)
    request, spec = maker.prepare({"prompt": "slow drone"}, 90, 2)
    seen = await cancel_when(
        maker.make(request, spec, token=emulator.token, owner=None),
        lambda seen: any(u.status == "processing" for u in seen),
    )

    prediction_id = next(u.prediction_id for u in seen if u.prediction_id)
    assert emulator.status(prediction_id) == "canceled"
    library = Library(tmp_path)
    loop = library.get(seen[-1].run_id)
    assert loop.kind == "loop" and loop.status == "canceled"
    assert [r.status for r in library.children(loop.id)] == ["canceled"]


async def test_a_loop_left_unfinished_by_a_stop_is_cut_on_the_next_start(
    emulator: Emulator, tmp_path: Path
) -> None:
    # The app stopped after the take was filed but before the loop was cut.
    service = make_service(emulator, tmp_path)
    library = Library(tmp_path)
    spec = LoopSpec(100.0, 1)
    maker = LoopMaker(service, library)
    request, _ = maker.prepare({"prompt": "funk bass", "seed": 7}, spec.bpm, spec.bars)
    loop = library.create_pending(
        None, request.to_dict(), kind="loop", compose={"bpm": 100.0, "bars": 1}
    )
    async for _ in service.generate(
        request, token=emulator.token, owner=None, parent_run_id=loop.id, kind="loop-source"
    ):
        pass

    restarted = LoopMaker(make_service(emulator, tmp_path), Library(tmp_path))
    assert restarted.settle_left_over() == [loop.id]
    entry = Library(tmp_path).get(loop.id)
    assert entry.status == "succeeded"
    audio = audio_ops.load(Library(tmp_path).audio_file(entry))
    assert audio.frame_count() == round(2.4 * audio.frame_rate)  # 1 bar at 100 BPM


def test_without_beats_the_loop_starts_at_zero_and_says_so() -> None:
    rate = 32000
    spec = parse_loop(120, 1)
    found = find_downbeat(np.zeros(rate * 4), rate, spec, spec.frames(rate))
    assert found.frame == 0
    assert "No beats" in found.note


def test_the_tempo_is_written_into_the_prompt_once() -> None:
    assert loop_prompt("Dusty funk, 95 bpm", 120) == "Dusty funk, 120 bpm"
    assert loop_prompt("", 90) == "90 bpm"
    assert loop_prompt("house groove", 124.5) == "house groove, 124.5 bpm"


async def test_a_loop_is_held_to_the_visitors_limits_before_anything_is_stored(
    emulator: Emulator, tmp_path: Path
) -> None:
    library = Library(tmp_path)
    service = make_service(emulator, tmp_path, library=library, MUSICGEN_MAX_RUNS_IN_FLIGHT="1")
    maker = LoopMaker(service, library)
    busy = library.create_pending(None, {"prompt": "a take still running"})
    request, spec = maker.prepare({"prompt": "drums"}, 120, 1)
    before = emulator.creates

    with pytest.raises(StudioError, match="1 run in progress"):
        async for _ in maker.make(request, spec, token=emulator.token, owner=None):
            pass
    with pytest.raises(StudioError, match="token"):
        async for _ in maker.make(request, spec, token=None, owner=None):
            pass

    assert emulator.creates == before
    assert [r.id for r in library.list(None, inner=True).items] == [busy.id]
