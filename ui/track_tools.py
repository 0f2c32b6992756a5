"""From take to track, for the selected result: split into stems (a small mixer with mute and
solo, each stem downloadable and usable as a melody or to continue), transcribe to MIDI (a
piano roll), export for a DAW.

One entry point: `build_track_tools(...)` (the panel) then `wire_track_tools(...)` with the
component holding the selected result (a run snapshot with "run_id", or a run id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import gradio as gr

from services.analysis import midi as midi_service
from services.analysis import stems as stems_service
from services.analysis.daw import daw_bundle, stem_download, stems_zip
from services.analysis.jobs import follow_job
from services.analysis.midi import MIX, Transcriber, midi_available, midi_entry
from services.analysis.stems import StemSplitter, stem_file, stem_names, stems_available
from services.compose.formats import FORMATS
from services.errors import StudioError
from services.library import RunRecord
from ui.context import Studio
from ui.formatting import message_html
from ui.reuse import Reuse
from ui.schema_once import PictureImage
from ui.selection import Selection
from ui.stem_mixer import mixer_html

PRIVATE: Mapping[str, Any] = MappingProxyType(
    {"api_visibility": "private", "show_progress": "hidden"}
)
SPLIT_LABEL = "Split into stems"
MIDI_LABEL = "Transcribe to MIDI"


@dataclass(frozen=True)
class TrackServices:
    """The separator and the transcriber (each loads its model once, for every visitor)."""

    splitter: StemSplitter
    transcriber: Transcriber

    @classmethod
    def for_studio(cls, studio: Studio, device: str | None = None) -> TrackServices:
        return cls(
            StemSplitter(studio.library, studio.settings.stems_model, device),
            Transcriber(studio.library),
        )


@dataclass
class TrackToolsView:
    panel: gr.Accordion
    status: gr.HTML
    split: gr.Button
    transcribe: gr.Button
    midi_source: gr.Dropdown
    stop: gr.Button
    mixer: gr.HTML
    stem: gr.Dropdown
    stem_format: gr.Radio
    download_stem: gr.Button
    all_stems: gr.Button
    stem_melody: gr.Button
    stem_continue: gr.Button
    daw: gr.Button
    file: gr.File
    roll: gr.Image


def run_id_of(value: Any) -> str | None:
    """The selected result's run id, from a run snapshot or an id."""
    if isinstance(value, dict):
        value = value.get("run_id")
    return value.strip() if isinstance(value, str) and value.strip() else None


def build_track_tools() -> TrackToolsView:
    """The panel (closed until there is a result to work on)."""
    can_split, can_midi = stems_available(), midi_available()
    with gr.Accordion(
        "From take to track: stems, MIDI, DAW", open=False, elem_id="track-tools"
    ) as panel:
        status = gr.HTML("", elem_id="track-status")
        if not can_split:
            gr.HTML(message_html(stems_service.NEEDS, kind="info"), elem_id="stems-needs")
        if not can_midi:
            gr.HTML(message_html(midi_service.NEEDS, kind="info"), elem_id="midi-needs")
        with gr.Row():
            split = gr.Button(
                SPLIT_LABEL if can_split else f"{SPLIT_LABEL} (needs demucs)",
                size="sm",
                elem_id="split-stems",
                interactive=can_split,
            )
            midi_source = gr.Dropdown(
                [MIX], value=MIX, label="Transcribe", elem_id="midi-source", min_width=120
            )
            transcribe = gr.Button(
                MIDI_LABEL if can_midi else f"{MIDI_LABEL} (needs basic-pitch)",
                size="sm",
                elem_id="transcribe-midi",
                interactive=can_midi,
            )
            stop = gr.Button(
                "Stop splitting or transcribing", size="sm", variant="stop", elem_id="track-stop"
            )
            daw = gr.Button("Export for DAW", size="sm", elem_id="export-daw")
        mixer = gr.HTML("", elem_id="stem-mixer")
        with gr.Row():
            stem = gr.Dropdown([], label="Stem", elem_id="stem-pick", min_width=120)
            stem_format = gr.Radio(list(FORMATS), value="wav", label="Format", elem_id="stem-fmt")
        with gr.Row():
            download_stem = gr.Button("Download stem", size="sm", elem_id="stem-download")
            all_stems = gr.Button("All stems (zip)", size="sm", elem_id="stems-zip")
            stem_melody = gr.Button("Use stem as melody", size="sm", elem_id="stem-melody")
            stem_continue = gr.Button("Continue stem", size="sm", elem_id="stem-continue")
        roll = PictureImage(
            label="Piano roll", type="filepath", interactive=False, visible=False, elem_id="roll"
        )
        file = gr.File(label="Download", visible=False, elem_id="track-file")
    return TrackToolsView(
        panel, status, split, transcribe, midi_source, stop, mixer, stem, stem_format,
        download_stem, all_stems, stem_melody, stem_continue, daw, file, roll,
    )  # fmt: skip


class TrackToolsHandlers:
    """Every action is limited to the visitor's own runs."""

    def __init__(self, studio: Studio, services: TrackServices, view: TrackToolsView):
        self.studio = studio
        self.services = services
        self.view = view

    def _record(self, run_value: Any, owner_value: Any) -> RunRecord | None:
        run_id = run_id_of(run_value)
        if run_id is None:
            return None
        return self.studio.library.get(run_id, self.studio.owner(owner_value))

    def show_outputs(self) -> list[Any]:
        v = self.view
        return [v.mixer, v.stem, v.midi_source, v.roll]

    def show(self, run_value: Any, owner_value: Any) -> tuple[Any, ...]:
        """The selected result's stems (mixer, choices) and its latest piano roll."""
        record = self._record(run_value, owner_value)
        names = stem_names(record) if record else []
        roll = None
        if record is not None:
            for source in [MIX, *names]:
                made = midi_entry(self.studio.library, record, source)
                if made is not None:
                    roll = self.studio.files.servable(made[1])
        return (
            mixer_html(self.studio, record) if record else "",
            gr.update(choices=names, value=names[0] if names else None),
            gr.update(choices=[MIX, *names], value=MIX),
            gr.update(value=roll, visible=roll is not None),
        )

    async def _follow(self, work: Any, label: str) -> AsyncIterator[str]:
        """Progress lines of a job, then "" once it is done; a refusal or failure becomes the
        line (a stop cancels this generator: the job stops with it)."""
        try:
            async for job in follow_job(work):
                if job.result is not None:
                    yield ""
                    return
                line = f"{label}: {job.done:.0%} {job.note}".strip()
                yield message_html(line, kind="info")
        except StudioError as err:
            yield message_html(str(err))

    async def split(self, run_value: Any, owner_value: Any) -> AsyncIterator[tuple[Any, ...]]:
        record = self._record(run_value, owner_value)
        if record is None:
            yield (message_html("Make or pick a result first."), *[gr.skip()] * 4)
            return
        owner = self.studio.owner(owner_value)
        splitter = self.services.splitter
        async for line in self._follow(
            lambda control: splitter.split(record.id, owner, control), "Splitting"
        ):
            if line:
                yield (line, *[gr.skip()] * 4)
            else:
                done = self._record(record.id, owner_value)
                count = len(stem_names(done)) if done else 0
                note = message_html(f"Split into {count} stems.", kind="info")
                yield (note, *self.show(record.id, owner_value))

    async def transcribe(
        self, run_value: Any, source: str | None, owner_value: Any
    ) -> AsyncIterator[tuple[Any, ...]]:
        record = self._record(run_value, owner_value)
        if record is None:
            yield message_html("Make or pick a result first."), gr.skip(), gr.skip()
            return
        owner = self.studio.owner(owner_value)
        stem = None if (source or MIX) == MIX else source
        transcriber = self.services.transcriber
        made: list[Any] = []

        def work(control: Any) -> Any:
            made.append(transcriber.transcribe(record.id, owner, stem, control))
            return made[-1]

        async for line in self._follow(work, "Transcribing"):
            if line or not made:
                yield line, gr.skip(), gr.skip()
                continue
            result = made[-1]
            yield (
                message_html(
                    f"Transcribed {result.notes} notes from the {result.source} "
                    f"(tempo {result.record.bpm or midi_service.DEFAULT_TEMPO:g} BPM).",
                    kind="info",
                ),
                gr.update(value=self.studio.files.servable(result.roll_path), visible=True),
                gr.update(value=self.studio.files.servable(result.midi_path), visible=True),
            )

    def stopped(self) -> str:
        return message_html("Stopped: nothing of that job was kept.", kind="warning")

    def _deliver(self, make: Any, run_value: Any, owner_value: Any) -> tuple[Any, str]:
        record = self._record(run_value, owner_value)
        if record is None:
            return gr.update(visible=False), message_html("Make or pick a result first.")
        try:
            path = make(record, self.studio.files.staging_dir())
        except StudioError as err:
            return gr.update(visible=False), message_html(str(err))
        return gr.update(value=str(path), visible=True), ""

    def download_stem(
        self, run_value: Any, stem: str | None, fmt: str, owner_value: Any
    ) -> tuple[Any, str]:
        library = self.studio.library
        return self._deliver(
            lambda r, folder: stem_download(library, r, stem or "", fmt, folder),
            run_value,
            owner_value,
        )

    def all_stems(self, run_value: Any, owner_value: Any) -> tuple[Any, str]:
        library = self.studio.library
        return self._deliver(lambda r, f: stems_zip(library, r, f), run_value, owner_value)

    def daw(self, run_value: Any, owner_value: Any) -> tuple[Any, str]:
        library = self.studio.library
        return self._deliver(lambda r, f: daw_bundle(library, r, f), run_value, owner_value)

    def stem_snapshot(
        self, run_value: Any, stem: str | None, owner_value: Any
    ) -> dict[str, Any] | None:
        """The stem as a run snapshot, for the form's "use as melody" and "continue"."""
        record = self._record(run_value, owner_value)
        path = stem_file(self.studio.library, record, stem or "") if record else None
        if record is None or path is None:
            return None
        snap = self.studio.snapshot(record)
        snap["audio_path"] = self.studio.files.servable(path)
        return snap


def wire_track_tools(
    handlers: TrackToolsHandlers,
    *,
    selection: Selection,
    run: gr.State,
    owner: gr.components.Component,
    reuse: Reuse,
    model_version: gr.components.Component,
) -> list[Any]:
    """Wire the panel to `run` (the selected result); returns the events that change a run."""
    v = handlers.view
    shown = handlers.show_outputs()
    selection.watch(handlers.show, [run, owner], shown)
    splitting = v.split.click(
        handlers.split, [run, owner], [v.status, *shown], concurrency_id="track-tools",
        concurrency_limit=2, **PRIVATE,
    )  # fmt: skip
    transcribing = v.transcribe.click(
        handlers.transcribe, [run, v.midi_source, owner], [v.status, v.roll, v.file],
        concurrency_id="track-tools", concurrency_limit=2, **PRIVATE,
    )  # fmt: skip
    v.stop.click(
        handlers.stopped, None, [v.status], cancels=[splitting, transcribing], queue=False,
        **PRIVATE,
    )  # fmt: skip
    v.download_stem.click(
        handlers.download_stem, [run, v.stem, v.stem_format, owner], [v.file, v.status], **PRIVATE
    )
    v.all_stems.click(handlers.all_stems, [run, owner], [v.file, v.status], **PRIVATE)
    v.daw.click(handlers.daw, [run, owner], [v.file, v.status], **PRIVATE)
    stem_state = gr.State(None)
    v.stem_melody.click(handlers.stem_snapshot, [run, v.stem, owner], [stem_state], **PRIVATE).then(
        reuse.as_melody, [stem_state, model_version], reuse.outputs(), **PRIVATE
    )
    v.stem_continue.click(
        handlers.stem_snapshot, [run, v.stem, owner], [stem_state], **PRIVATE
    ).then(reuse.continue_from, [stem_state], reuse.outputs(), **PRIVATE)
    return [splitting, transcribing]
