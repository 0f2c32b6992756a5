"""Generate / Cancel, and the track: the live run and its result in one place, one player.

While a take is made its streamed start plays in the track's place (the preview); once it is
filed the result takes that place. The actions on the result are in `ui.track`.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui.formatting import idle_progress_html, status_html
from ui.inputs import WAVEFORM
from ui.take_audio import TakeAudio
from ui.track import EMPTY_FACTS, TrackActions, TrackParts, build_actions


@dataclass
class Controls:
    """Generate and Cancel, with the refusals box under them."""

    errors: gr.HTML
    generate: gr.Button
    cancel: gr.Button


@dataclass
class RunView:
    """The live run and the selected result (the track)."""

    status: gr.HTML
    progress: gr.HTML
    track: TrackParts
    actions: TrackActions
    logs: gr.Textbox
    current_run: gr.State  # library id of the run in progress (for Cancel)
    last_run: gr.State  # the selected result's snapshot ({"run_id", "audio_path", ...})

    @property
    def preview(self) -> gr.Audio:
        return self.track.preview

    @property
    def result_audio(self) -> gr.Audio:
        return self.track.audio

    @property
    def facts(self) -> gr.HTML:
        return self.track.facts


def build_controls() -> Controls:
    with gr.Row(elem_id="generate-bar", elem_classes=["ms-generate-bar"]):
        generate = gr.Button(
            "Generate", variant="primary", elem_id="generate-btn", scale=3, min_width=120
        )
        cancel = gr.Button(
            "Cancel", variant="stop", interactive=False, elem_id="cancel-btn", scale=1, min_width=80
        )
    errors = gr.HTML("", elem_id="form-errors")
    return Controls(errors=errors, generate=generate, cancel=cancel)


def build_run_view() -> RunView:
    """The track panel: status, progress, one player, its marks, facts and actions."""
    status = gr.HTML(status_html("idle"), elem_id="run-status")
    progress = gr.HTML(idle_progress_html(), elem_id="run-progress")
    marks = gr.HTML("", elem_id="track-marks")
    preview = TakeAudio(
        label="Your take (playing while it is made)",
        streaming=True,
        autoplay=False,
        interactive=False,
        visible=False,
        elem_id="run-preview",
    )
    audio = TakeAudio(
        type="filepath",
        label="Your take",
        interactive=False,
        waveform_options=WAVEFORM,
        buttons=[],
        elem_id="result-audio",
    )
    facts = gr.HTML(EMPTY_FACTS, elem_id="result-facts")
    takes = gr.HTML("", elem_id="track-takes")
    actions = build_actions()
    with gr.Accordion("Logs", open=False, elem_id="logs-accordion"):
        logs = gr.Textbox(
            label="Model logs",
            lines=8,
            max_lines=16,
            interactive=False,
            autoscroll=True,
            elem_id="run-logs",
        )
    return RunView(
        status=status,
        progress=progress,
        track=TrackParts(audio=audio, preview=preview, marks=marks, facts=facts, takes=takes),
        actions=actions,
        logs=logs,
        current_run=gr.State(None),
        last_run=gr.State(None),
    )
