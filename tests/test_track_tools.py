"""From take to track: stems (demucs_unittest), MIDI (the real basic-pitch model), DAW bundles."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pretty_midi
import pytest

from services.analysis.daw import daw_bundle, stem_download, stems_zip
from services.analysis.jobs import JobControl, follow_job
from services.analysis.midi import Transcriber
from services.analysis.stems import StemSplitter, stem_file, stem_names
from services.compose import audio_ops
from services.library import Library
from tests.support.synth_music import A_MINOR, clicks, notes, write_wav

pytest.importorskip("demucs")
pytest.importorskip("basic_pitch")

MELODY = [60, 62, 64, 65, 67, 69, 71, 72]  # C major scale, C4 to C5
NOTE_S, GAP_S = 0.4, 0.1


def filed_take(folder: Path, samples, *, rate: int, channels: int, bpm: float | None = None):
    wav = write_wav(samples, folder / "take.wav", rate=rate, channels=channels)
    library = Library(folder / "data")
    record = library.add_run(
        None,
        {"prompt": "dark techno", "model_version": "stereo-large"},
        status="succeeded",
        audio_src=wav,
        audio_seconds=audio_ops.seconds(audio_ops.load(wav)),
        seed=7,
    )
    if bpm is not None:
        record = library.update(record.id, bpm=bpm, key="A minor")
    return library, record


def test_stems_are_as_many_as_the_model_has_sources_as_long_as_the_mix_and_kept(
    tmp_path: Path,
) -> None:
    library, record = filed_take(tmp_path, clicks(120.0, 2.0, 32000), rate=32000, channels=2)
    control = JobControl()

    split = StemSplitter(library, "demucs_unittest").split(record.id, None, control)

    assert stem_names(split) == ["drums", "bass", "other", "vocals"]  # demucs_unittest's sources
    assert control.done > 0.9  # progress was reported along the way
    mix = audio_ops.load(library.audio_file(record))
    for name in stem_names(split):
        stem = audio_ops.load(stem_file(library, split, name))
        assert stem.frame_count() == mix.frame_count(), name  # to the sample
        assert (stem.frame_rate, stem.channels) == (mix.frame_rate, mix.channels)

    reopened = Library(tmp_path / "data")  # a restart
    kept = reopened.get(record.id)
    assert stem_names(kept) == stem_names(split)
    files = [stem_file(reopened, kept, n) for n in stem_names(kept)]
    assert all(f is not None and f.is_file() for f in files)

    assert reopened.delete(record.id)
    assert not any(f.exists() for f in files)
    assert not reopened.track_dir(record.id).exists()


class LongJob:
    """A job's control as a long separation on a slow machine feels it: once under way, the
    worker is still busy when the visitor presses Stop (so the test never races the split)."""

    def __init__(self, control: JobControl) -> None:
        self.control = control
        self.cancel = control.cancel

    @property
    def done(self) -> float:
        return self.control.done

    def report(self, done: float, note: str = "") -> None:
        self.control.report(done, note)
        if done > 0:
            self.cancel.wait(60)


async def test_stopping_a_split_half_way_keeps_nothing(tmp_path: Path) -> None:
    library, record = filed_take(tmp_path, clicks(120.0, 2.0, 32000), rate=32000, channels=2)
    splitter = StemSplitter(library, "demucs_unittest")
    jobs = follow_job(lambda control: splitter.split(record.id, None, LongJob(control)))
    async for job in jobs:
        assert job.result is None, "the split ended before it could be stopped"
        if job.done > 0:  # under way: the visitor presses Stop
            break
    await jobs.aclose()  # what Gradio's cancel does to the handler; waits for the worker

    assert library.get(record.id).stems is None
    assert not list(library.track_dir(record.id).glob("stems/*.wav"))


async def test_a_job_reports_progress_then_its_result() -> None:
    def work(control: JobControl) -> str:
        control.report(0.5, "half way")
        return "made"

    jobs = [job async for job in follow_job(work)]
    assert (jobs[0].done, jobs[0].result) == (0.0, None)  # the click is answered at once
    assert jobs[-1].result == "made" and jobs[-1].done == 1.0


def test_the_real_basic_pitch_model_hears_the_right_notes_at_the_right_times(
    tmp_path: Path,
) -> None:
    melody = notes([[m] for m in MELODY], seconds=NOTE_S, gap=GAP_S)
    library, record = filed_take(tmp_path, melody, rate=22050, channels=1, bpm=97.0)

    made = Transcriber(library).transcribe(record.id, None)

    midi = pretty_midi.PrettyMIDI(str(made.midi_path))
    heard = sorted(midi.instruments[0].notes, key=lambda n: n.start)
    assert [n.pitch for n in heard] == MELODY
    for i, note in enumerate(heard):
        assert note.start == pytest.approx(i * (NOTE_S + GAP_S), abs=0.05)
    assert midi.get_tempo_changes()[1][0] == pytest.approx(97.0, abs=0.01)  # measured
    assert made.notes == len(MELODY)
    assert made.roll_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Library(tmp_path / "data").get(record.id).midi["mix"]["notes"] == len(MELODY)


def test_a_daw_bundle_holds_mix_stems_midi_and_notes_all_named_with_tempo_and_key(
    tmp_path: Path,
) -> None:
    take = clicks(120.0, 2.0, 22050) + notes(A_MINOR, seconds=0.5)
    library, record = filed_take(tmp_path, take, rate=22050, channels=2, bpm=120.0)
    split = StemSplitter(library, "demucs_unittest").split(record.id, None)
    Transcriber(library).transcribe(record.id, None, stem="bass")
    record = library.get(record.id)
    out = tmp_path / "out"
    out.mkdir()

    bundle = daw_bundle(library, record, out)

    names = zipfile.ZipFile(bundle).namelist()
    assert len(names) == 1 + len(stem_names(split)) + 1 + 1  # mix, stems, MIDI, text
    assert all("-120bpm-a-minor-" in name for name in names), names
    text = next(n for n in names if n.endswith(".txt"))
    about = zipfile.ZipFile(bundle).read(text).decode()
    assert "Prompt: dark techno" in about and "Seed: 7" in about and "Key: A minor" in about
    assert "Tempo: 120.0 BPM" in about and "Model: stereo-large" in about
    assert any(n.endswith("-bass.mid") for n in names)

    flac = stem_download(library, record, "drums", "flac", out)
    assert flac.name.endswith("-120bpm-a-minor-seed7-" + flac.name.split("seed7-")[1])
    assert (
        audio_ops.load(flac).frame_count()
        == audio_ops.load(library.audio_file(record)).frame_count()
    )
    assert len(zipfile.ZipFile(stems_zip(library, record, out)).namelist()) == 4
