"""The take-to-track endpoints: `/stems` and `/midi` (also MCP tools), beside `/generate`.

Like `/generate` they have hidden components of their own and no trigger on the page.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from services.analysis.jobs import follow_job
from services.analysis.midi import MIX
from services.analysis.stems import stem_file, stem_names
from services.input_help import docstring
from ui.api import api_errors, api_record
from ui.context import Studio
from ui.track_tools import TrackServices

STEMS_DESCRIPTION = (
    "Split a result into stems (drums, bass, other, vocals, ... as the server's demucs model "
    "has them) on the server. `run_id` is a library id (e.g. /generate's library_id). Returns "
    "the stem files (WAV, each as long as the result) and its record with `stems` (each "
    "stem's name and file) and the measured bpm and key. The stems are kept with the result."
)
MIDI_DESCRIPTION = (
    "Transcribe a result, or one of its stems, to MIDI with Spotify's basic-pitch. `run_id` is "
    "a library id; `stem` (optional) a stem's name from /stems (empty: the whole mix). Returns "
    "the .mid file (at the result's measured tempo) and a record with `notes` (the count), "
    "`source`, `tempo`, and the run's bpm and key."
)
RUN_HELP = {
    "run_id": "The library id of the result (a /generate record's library_id).",
    "access_key": "On a shared server: the access_key of the record that made the run.",
}


def run_id_given(run_id: str | None) -> str:
    """The run id as given, or an error naming the field (before any work)."""
    run = (run_id or "").strip()
    if not run:
        raise gr.Error("run_id is empty: give the library_id of a result (from /generate).")
    return run


class TrackApi:
    """Stems and MIDI for API callers (and MCP clients)."""

    def __init__(self, studio: Studio, services: TrackServices):
        self.studio = studio
        self.services = services

    async def stems(
        self, run_id: str, access_key: str | None = None
    ) -> tuple[list[str], dict[str, Any]]:
        """Split `run_id` into stems; returns (the stem files, the record with `stems`)."""
        owner = self.studio.api_visitor(access_key).owner
        run = run_id_given(run_id)
        splitter = self.services.splitter
        record = None
        with api_errors():
            async for job in follow_job(lambda control: splitter.split(run, owner, control)):
                record = job.result or record
        if record is None:
            raise gr.Error("The split ended without stems.")
        library = self.studio.library
        files, listed = [], []
        for name in stem_names(record):
            path = self.studio.files.servable(stem_file(library, record, name))
            if path is not None:
                files.append(path)
                listed.append({"name": name, "file": path.rsplit("/", 1)[-1]})
        summary = api_record(self.studio.service.summary(record.id, owner), owner)
        summary.update(stems=listed, stems_model=(record.stems or {}).get("model"))
        return files, summary

    async def midi(
        self, run_id: str, stem: str | None = None, access_key: str | None = None
    ) -> tuple[str | None, dict[str, Any]]:
        """Transcribe `run_id` (or its `stem`); returns (the .mid file, its record)."""
        owner = self.studio.api_visitor(access_key).owner
        run = run_id_given(run_id)
        transcriber = self.services.transcriber
        made = None
        with api_errors():
            async for job in follow_job(
                lambda control: transcriber.transcribe(run, owner, stem or None, control)
            ):
                made = job.result or made
        if made is None:
            raise gr.Error("The transcription ended without a MIDI file.")
        summary = api_record(self.studio.service.summary(made.record.id, owner), owner)
        entry = (made.record.midi or {}).get(made.source) or {}
        summary.update(
            source=made.source if made.source != MIX else "mix",
            notes=made.notes,
            tempo=entry.get("tempo"),
            midi_file=made.midi_path.name,
        )
        return self.studio.files.servable(made.midi_path), summary


TrackApi.stems.__doc__ = docstring(
    STEMS_DESCRIPTION,
    ["run_id", "access_key"],
    RUN_HELP,
    "The stem files, and the run's record with `stems` (name and file of each).",
)
TrackApi.midi.__doc__ = docstring(
    MIDI_DESCRIPTION,
    ["run_id", "stem", "access_key"],
    {**RUN_HELP, "stem": "A stem's name (e.g. bass) from /stems; empty: the whole mix."},
    "The .mid file, and a record with `notes` (how many), `source` and `tempo`.",
)


def build_track_api(studio: Studio, services: TrackServices) -> None:
    """Hidden inputs and outputs of `/stems` and `/midi`."""
    api = TrackApi(studio, services)
    with gr.Column(visible=False):
        stems_inputs = [gr.Textbox(label="run_id"), gr.Textbox("", label="access_key")]
        stems_outputs = [gr.File(label="stems", file_count="multiple"), gr.JSON(label="record")]
        midi_inputs = [
            gr.Textbox(label="run_id"),
            gr.Textbox("", label="stem"),
            gr.Textbox("", label="access_key"),
        ]
        midi_outputs = [gr.File(label="midi"), gr.JSON(label="record")]
    for fn, inputs, outputs, name, text in (
        (api.stems, stems_inputs, stems_outputs, "stems", STEMS_DESCRIPTION),
        (api.midi, midi_inputs, midi_outputs, "midi", MIDI_DESCRIPTION),
    ):
        gr.on(
            triggers=[],
            fn=fn,
            inputs=inputs,
            outputs=outputs,
            api_name=name,
            api_description=text,
            show_progress="hidden",
            concurrency_id="track-tools",
            concurrency_limit=2,
        )
