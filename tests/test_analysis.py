"""Tempo and key of every take: measured on synthesized audio, stored, shown, searched, named."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from pathlib import Path

import pytest

from services.analysis.filing import measure_filed
from services.analysis.search import parse_history_query
from services.analysis.tempo_key import MAJOR_NAMES, MINOR_NAMES, measure_key, measure_tempo
from services.compose.formats import download_name
from services.compose.loop import LoopMaker, loop_summary
from services.events import RunUpdate
from services.library import Library
from services.library.export import tempo_key_tag
from services.musicgen import GenerationRequest
from tests.emulator import Emulator
from tests.support.services import make_service
from tests.support.synth_music import A_MINOR, G_MAJOR, RATE, clicks, notes, write_wav


@pytest.mark.parametrize("bpm", [72.0, 97.0, 120.0, 143.5])
def test_clicks_read_their_tempo_to_half_a_bpm(bpm: float) -> None:
    assert measure_tempo(clicks(bpm), RATE) == pytest.approx(bpm, abs=0.5)


def test_97_bpm_reads_97_not_librosas_frame_quantised_96() -> None:
    assert measure_tempo(clicks(97.0), RATE) == 97.0


@pytest.mark.parametrize(("chords", "key"), [(A_MINOR, "A minor"), (G_MAJOR, "G major")])
def test_triads_of_a_key_read_as_that_key(chords: list[list[int]], key: str) -> None:
    assert measure_key(notes(chords * 2), RATE) == key


def cadence(tonic: int, minor: bool, detune: float) -> list[list[float]]:
    """I-IV-V-I (i-iv-V-i in minor) on `tonic` with its root in the bass, `detune` semitones off."""
    third = 3 if minor else 4
    chords = [[0, third, 7], [5, 5 + third, 12], [7, 11, 14], [0, third, 7]]
    return [[36 + tonic + c[0] + detune] + [48 + tonic + n + detune for n in c] for c in chords]


@pytest.mark.parametrize("detune", [0.0, 0.3, -0.2])
def test_every_one_of_the_24_keys_reads_as_itself_even_off_concert_pitch(detune: float) -> None:
    # A band tuned a little off A440 (as a take often is) still names its key, in all 24.
    for tonic in range(12):
        for minor, names in ((False, MAJOR_NAMES), (True, MINOR_NAMES)):
            want = f"{names[tonic]} {'minor' if minor else 'major'}"
            assert measure_key(notes(cadence(tonic, minor, detune), 0.5), RATE) == want


def test_silence_has_no_tempo_and_no_key() -> None:
    quiet = clicks(120.0) * 0
    assert measure_tempo(quiet, RATE) is None and measure_key(quiet, RATE) is None


def test_search_text_names_a_key_and_a_tempo_range() -> None:
    query = parse_history_query("lofi piano, A# minor 90-110 bpm")
    assert (query.text, query.key, query.bpm_min, query.bpm_max) == (
        "lofi piano",
        "Bb minor",
        90.0,
        110.0,
    )
    single = parse_history_query("120 bpm")
    assert (single.text, single.bpm_min, single.bpm_max) == ("", 119.0, 121.0)


def test_a_measured_take_keeps_bpm_and_key_is_found_by_them_and_named_by_them(
    tmp_path: Path,
) -> None:
    wav = write_wav(clicks(97.0) + notes(A_MINOR * 3), tmp_path / "take.wav", channels=2)
    library = Library(tmp_path / "data")
    record = library.add_run(
        None, {"prompt": "dark techno"}, status="succeeded", audio_src=wav, seed=7
    )
    other = library.add_run(
        None, {"prompt": "dark techno"}, status="succeeded", audio_src=wav, seed=8
    )
    library.update(other.id, bpm=140.0, key="C major")

    measured = measure_filed(library, record.id)

    assert measured is not None and measured.bpm == 97.0 and measured.key == "A minor"
    reopened = Library(tmp_path / "data")  # kept in the database, not in memory
    assert reopened.get(record.id).bpm == 97.0
    assert [r.id for r in reopened.list(key="A minor").items] == [record.id]
    assert [r.id for r in reopened.list(bpm_range=(96.0, 98.0)).items] == [record.id]
    assert [r.id for r in reopened.list(bpm_range=(None, 100.0)).items] == [record.id]
    assert "-97bpm-a-minor-seed7-" in download_name(reopened.get(record.id), "mp3")


def test_a_take_whose_audio_cannot_be_measured_stays_filed(tmp_path: Path) -> None:
    library = Library(tmp_path)
    fake = tmp_path / "noise.wav"
    fake.write_bytes(b"RIFF not really audio")
    record = library.add_run(None, {"prompt": "x"}, status="succeeded", audio_src=fake)

    assert measure_filed(library, record.id) is None
    kept = library.get(record.id)
    assert kept.status == "succeeded" and kept.bpm is None and kept.key is None


def emulator_key(seed: int, prompt: str) -> str:
    """The key the emulator plays in: I-IV-V-I on a root it derives from seed and prompt."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return f"{MAJOR_NAMES[(45 + digest[0] % 24) % 12]} major"


async def test_generate_returns_the_measured_tempo_and_key_of_the_filed_take(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(run_seconds=0.5, max_wait_seconds=0.2)
    service = make_service(emulator, tmp_path, measure_takes=True)
    request = GenerationRequest(prompt="bossa nova guitar", duration=8, seed=42)

    updates = [u async for u in service.generate(request, token=emulator.token, owner=None)]

    assert updates[-1].status == "succeeded", updates[-1].error
    summary = service.summary(updates[-1].run_id, None)
    # The emulator's chords change every 2 s on a 0.5 s pulse: 120 BPM.
    assert summary["bpm"] == pytest.approx(120.0, abs=0.5)
    assert summary["key"] == emulator_key(42, "bossa nova guitar")


async def test_a_crowds_results_do_not_wait_behind_each_others_tempo_and_key(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measuring is seconds of CPU per take: one take at a time, in a thread of its own (a crowd
    # once filled every thread runs are prepared and filed in), and a take filed while another
    # is measured goes out at once; its tempo and key follow.
    from services.generation import runner

    emulator.configure(run_seconds=0.2, max_wait_seconds=0.2)
    service = make_service(emulator, tmp_path, measure_takes=True)
    held, lock, at_once, active = threading.Event(), threading.Lock(), [], [0]
    measure = runner.measure_filed

    def measured_when_let(library: Library, run_id: str) -> object:
        with lock:
            active[0] += 1
            at_once.append(active[0])
        held.wait(60)
        try:
            return measure(library, run_id)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(runner, "measure_filed", measured_when_let)

    async def take(seed: int) -> list[RunUpdate]:
        request = GenerationRequest(prompt="bossa nova guitar", duration=8, seed=seed)
        return [u async for u in service.generate(request, token=emulator.token, owner=None)]

    first = asyncio.create_task(take(1))
    while not at_once:  # the first take is filed and measured (held there)
        assert not first.done()
        await asyncio.sleep(0.01)
    later = [await take(seed) for seed in (2, 3)]
    assert [u[-1].status for u in later] == ["succeeded"] * 2
    assert service.summary(later[0][-1].run_id, None)["bpm"] is None  # not measured yet
    held.set()
    ids = [(await first)[-1].run_id, *(u[-1].run_id for u in later)]
    give_up = time.monotonic() + 60
    while any(service.summary(i, None)["bpm"] is None for i in ids):
        assert time.monotonic() < give_up, "tempo never measured"
        await asyncio.sleep(0.05)
    assert max(at_once) == 1


async def test_a_loop_shows_its_measured_tempo_beside_the_one_asked_for(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.configure(run_seconds=0.5, max_wait_seconds=0.2)
    service = make_service(emulator, tmp_path, measure_takes=True)
    maker = LoopMaker(service, Library(tmp_path))
    request, spec = maker.prepare({"prompt": "deep house", "seed": 5}, 120, 4)

    updates = [u async for u in maker.make(request, spec, token=emulator.token, owner=None)]

    assert updates[-1].status == "succeeded", updates[-1].error
    summary = loop_summary(service, Library(tmp_path), updates[-1].run_id, None)
    assert summary["bpm"] == 120  # asked
    assert summary["measured_bpm"] == pytest.approx(120.0, abs=0.5)  # heard
    assert summary["key"] == emulator_key(5, "deep house, 120 bpm")


def test_tempo_and_key_in_file_names_are_spelled_for_any_file_system() -> None:
    assert tempo_key_tag(97.0, "A minor") == "97bpm-a-minor"
    assert tempo_key_tag(143.54, "F# major") == "143.5bpm-fsharp-major"
    assert tempo_key_tag(None, "Bb minor") == "bflat-minor"
    assert tempo_key_tag(90.0, "B major") == "90bpm-b-major"
    assert tempo_key_tag(None, None) == ""
