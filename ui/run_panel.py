"""Generate / Cancel, the live view of a run, and its result with the follow-up actions."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui.formatting import idle_progress_html, status_html
from ui.inputs import WAVEFORM


@dataclass
class Controls:
    """Generate and Cancel, with the refusals box beside them."""

    errors: gr.HTML
    generate: gr.Button
    cancel: gr.Button


@dataclass
class RunView:
    """The live run and its result."""

    status: gr.HTML
    progress: gr.HTML
    preview: gr.Audio  # streams the start of a take while the local engine still makes it
    logs: gr.Textbox
    result_audio: gr.Audio
    download: gr.DownloadButton
    facts: gr.HTML
    use_as_melody: gr.Button
    continue_this: gr.Button
    reuse_settings: gr.Button
    reuse_seed: gr.Button
    current_run: gr.State  # library id of the run in progress (for Cancel)
    last_run: gr.State  # {"run_id", "audio_path", "seed", "audio_seconds", "request"}


def build_controls() -> Controls:
    errors = gr.HTML("", elem_id="form-errors")
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="generate-btn", scale=3)
        cancel = gr.Button(
            "Cancel", variant="stop", interactive=False, elem_id="cancel-btn", scale=1
        )
    return Controls(errors=errors, generate=generate, cancel=cancel)


def build_run_view() -> RunView:
    status = gr.HTML(status_html("idle"), elem_id="run-status")
    progress = gr.HTML(idle_progress_html(), elem_id="run-progress")
    preview = gr.Audio(
        label="Listen while it is made",
        streaming=True,
        autoplay=False,
        interactive=False,
        visible=False,
        elem_id="run-preview",
    )
    with gr.Accordion("Logs", open=False, elem_id="logs-accordion"):
        logs = gr.Textbox(
            label="Model logs",
            lines=8,
            max_lines=16,
            interactive=False,
            autoscroll=True,
            elem_id="run-logs",
        )
    result_audio = gr.Audio(
        type="filepath",
        label="Result",
        interactive=False,
        waveform_options=WAVEFORM,
        buttons=["download"],
        elem_id="result-audio",
    )
    download = gr.DownloadButton("Download", visible=False, elem_id="result-download")
    facts = gr.HTML("", elem_id="result-facts")
    with gr.Row():
        use_as_melody = gr.Button(
            "Use as melody", size="sm", interactive=False, elem_id="use-as-melody", min_width=120
        )
        continue_this = gr.Button(
            "Continue this", size="sm", interactive=False, elem_id="continue-this", min_width=120
        )
        reuse_settings = gr.Button(
            "Reuse settings", size="sm", interactive=False, elem_id="reuse-settings", min_width=120
        )
        reuse_seed = gr.Button(
            "Reuse seed", size="sm", interactive=False, elem_id="reuse-seed", min_width=120
        )
    return RunView(
        status=status,
        progress=progress,
        preview=preview,
        logs=logs,
        result_audio=result_audio,
        download=download,
        facts=facts,
        use_as_melody=use_as_melody,
        continue_this=continue_this,
        reuse_settings=reuse_settings,
        reuse_seed=reuse_seed,
        current_run=gr.State(None),
        last_run=gr.State(None),
    )
