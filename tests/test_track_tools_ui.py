"""The track tools' panel in-process: what it says without its packages, and a split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr
import pytest

from services.generation import GenerationService
from services.library import Library
from services.settings import Settings
from tests.support.synth_music import clicks, write_wav
from ui import track_tools
from ui.context import Studio
from ui.files import FileServer


def test_without_demucs_or_basic_pitch_the_buttons_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(track_tools, "stems_available", lambda: False)
    monkeypatch.setattr(track_tools, "midi_available", lambda: False)
    with gr.Blocks() as demo:
        view = track_tools.build_track_tools()

    assert not view.split.interactive and "needs demucs" in view.split.value
    assert not view.transcribe.interactive and "needs basic-pitch" in view.transcribe.value
    notes = [c.value for c in demo.blocks.values() if isinstance(c, gr.HTML)]
    assert any("pip install demucs" in n and "torch" in n for n in notes)
    assert any("--no-deps" in n and "basic-pitch" in n for n in notes)


def test_with_them_installed_the_buttons_work() -> None:
    pytest.importorskip("demucs")
    pytest.importorskip("basic_pitch")
    with gr.Blocks():
        view = track_tools.build_track_tools()
    assert view.split.interactive is not False and view.split.value == "Split into stems"
    assert view.transcribe.interactive is not False


async def test_the_panel_splits_the_selected_result_and_offers_its_stems(tmp_path: Path) -> None:
    pytest.importorskip("demucs")
    library = Library(tmp_path / "data")
    wav = write_wav(clicks(120.0, 2.0), tmp_path / "take.wav", channels=2)
    record = library.add_run(
        None, {"prompt": "dark techno"}, status="succeeded", audio_src=wav, seed=3
    )
    settings = Settings.from_env(
        {"MUSICGEN_DATA_DIR": str(tmp_path / "data"), "MUSICGEN_STEMS_MODEL": "demucs_unittest"}
    )
    studio = Studio(
        settings, GenerationService(settings, library), library, FileServer(library.served_dirs)
    )
    with gr.Blocks():
        view = track_tools.build_track_tools()
    handlers = track_tools.TrackToolsHandlers(
        studio, track_tools.TrackServices.for_studio(studio), view
    )
    selected = studio.snapshot(record)  # what the result panel holds

    shown = [step async for step in handlers.split(selected, None)]

    assert any("Splitting: " in str(step[0]) for step in shown[:-1])  # progress on the way
    status, mixer, stem_pick, _, _ = shown[-1]
    assert "Split into 4 stems" in status
    assert mixer.count('class="ms-stem"') == 4 and "<audio" in mixer
    assert stem_pick["value"] == "drums"
    snap = handlers.stem_snapshot(selected, "bass", None)
    assert snap["audio_path"].endswith("stems/bass.wav") and snap["run_id"] == record.id
    bundle, note = handlers.daw(selected, None)
    assert note == "" and bundle["value"].endswith("-daw.zip")


def test_the_result_facts_and_a_loop_card_say_the_measured_tempo_and_key(tmp_path: Path) -> None:
    from ui.formatting import card_html
    from ui.track import track_facts_html

    with Library(tmp_path) as library:
        record = library.create_pending(None, {"prompt": "p", "model_version": "melody"})
    measured = dataclasses.replace(record, bpm=97.0, key="A minor")
    facts = track_facts_html(measured, "https://api.replicate.com")
    assert "<th>Tempo</th><td>97 BPM</td>" in facts and "<th>Key</th><td>A minor</td>" in facts
    loop = card_html({"id": "l1", "status": "succeeded", "bpm": 119.6, "asked_bpm": 120.0})
    assert "119.6 BPM (asked 120)" in loop
