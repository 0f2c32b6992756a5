"""The track tools' panel where its packages are missing: the buttons say what to install."""

from __future__ import annotations

import gradio as gr
import pytest

from ui import track_tools


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
